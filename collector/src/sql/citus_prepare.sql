-- Before the socket tables are distributed by pair_key (distribution.rs, --citus): the
-- key must be present on every row, and every unique key must contain it, so
-- current_sockets' primary key (identity without the key) gives way to the unique index
-- current_sockets_identity_key (identity and key), which the upsert already targets.
-- Idempotent: run on every start with --citus.
ALTER TABLE current_sockets ALTER COLUMN pair_key SET NOT NULL;
ALTER TABLE socket_lifetimes ALTER COLUMN pair_key SET NOT NULL;
ALTER TABLE current_sockets DROP CONSTRAINT IF EXISTS current_sockets_pkey;

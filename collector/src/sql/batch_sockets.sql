-- The ingest connection's staging table: each message of a batch copies its socket
-- records here (binary COPY, copy_rows.rs) and the batch's end merges them into
-- current_sockets and socket_lifetimes with a few set statements. One per connection,
-- created when the connection opens (temporary tables are per session, so concurrent
-- batches never see each other's rows); every commit empties it, and the rows of a
-- batch rolled back are dead. state 0 marks a socket a delta lists as removed (its
-- tuple and details are then NULL). ord is the order the agent listed the records in:
-- when a chunked full table lists a socket twice, the last listing stands.
CREATE TEMPORARY TABLE IF NOT EXISTS batch_sockets (
    ord         bigint   NOT NULL,
    netns       bigint   NOT NULL,
    sock_key    bigint   NOT NULL,
    cookie      bigint,
    state       smallint NOT NULL,
    local_addr  inet,
    local_port  integer,
    remote_addr inet,
    remote_port integer,
    inode       bigint,
    uid         bigint,
    rx_queue    bigint,
    tx_queue    bigint,
    timer       smallint,
    owners      jsonb
) ON COMMIT DELETE ROWS

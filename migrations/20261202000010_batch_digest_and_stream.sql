-- Issue 11: a resent batch must be the batch that was committed, and one agent
-- instance has at most one live stream.
--
-- ingest_batches.digest: SHA-256 of the batch as received (every chunk of a chunked
-- full table, in order). A resend with the same (host, epoch, seq) and another digest
-- is refused instead of being acknowledged as a duplicate. NULL for batches committed
-- before this migration: those are taken as duplicates, as before.
ALTER TABLE ingest_batches ADD COLUMN digest bytea;

-- hosts.live_stream: which stream of the live instance holds the lease. A new stream
-- of the same instance (a reconnect after a half-open connection) takes it over; the
-- old stream is refused at its next batch and its release does not drop the new
-- stream's lease.
ALTER TABLE hosts ADD COLUMN live_stream bigint;

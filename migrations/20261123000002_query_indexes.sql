-- Indexes for the query API.
--
-- `at=` questions rebuild a host's table as of its last report at or before an
-- instant: the ledger is searched by (host, taken_at). The leak views look up
-- lifetimes by state and time.
CREATE INDEX ingest_batches_taken ON ingest_batches (host_id, taken_at);
CREATE INDEX socket_lifetimes_state ON socket_lifetimes (state, last_seen) WHERE state IN (4, 5, 8, 9);

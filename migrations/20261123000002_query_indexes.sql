-- Indexes for the query API.
--
-- `at=` questions rebuild a host's table as of its last report at or before an
-- instant: the ledger is searched by (host, taken_at). Leak holders are found by state
-- and time in state (the duration is part of the key so that the search for lasting
-- CLOSE_WAIT skips the day's many short ones inside the index). TIME_WAIT pressure is
-- searched per host by count.
CREATE INDEX ingest_batches_taken ON ingest_batches (host_id, taken_at);
CREATE INDEX socket_lifetimes_state ON socket_lifetimes (state, (last_seen - first_seen), last_seen)
    WHERE state IN (4, 5, 8, 9);
CREATE INDEX time_wait_counts_host_count ON time_wait_counts (host_id, count, ts);

-- Per-state hourly peaks per host (each sample summed over the host's namespaces,
-- then the hour's highest): what reports draw daily peaks from, so a weekly report
-- reads 168 rows per host and state instead of every cycle's counts. Written by the
-- maintenance task for hours that ended at least ten minutes ago (`rollups` says up
-- to where); later hours are read from state_counts. Kept as long as the history.
CREATE TABLE state_hours (
    hour    timestamptz NOT NULL,
    host_id bigint NOT NULL,
    state   smallint NOT NULL,
    peak    integer NOT NULL,
    PRIMARY KEY (hour, host_id, state)
);

-- How far each rollup has got: everything before `until` is rolled up.
CREATE TABLE rollups (
    name  text PRIMARY KEY,
    until timestamptz NOT NULL
);

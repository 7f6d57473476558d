-- The fleet at a glance, once a minute: per-state totals over reporting hosts (their
-- last report's counts), hosts reporting and silent, and CLOSE_WAITs open longer than
-- the leak threshold. Written by the collector's maintenance task (an upsert per
-- minute, so several collectors on one database write it once), read by the
-- dashboard's charts, kept as long as the history.
CREATE TABLE fleet_minutes (
    ts              timestamptz PRIMARY KEY,
    states          jsonb NOT NULL,
    hosts_reporting integer NOT NULL,
    hosts_silent    integer NOT NULL,
    open_leaks      integer NOT NULL
);

-- Per-state counts of each host's last report (summed over namespaces), written with
-- the batch: `hosts` and the dashboard read one row per host instead of looking each
-- host's counts up.
ALTER TABLE hosts ADD COLUMN states jsonb;

-- A host is reporting while its last report is younger than three sampling
-- intervals (at least a minute); silent after.
CREATE FUNCTION finwait_reporting(last_report timestamptz, sample_interval_ms integer)
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    RETURN last_report IS NOT NULL
       AND last_report >= now() - GREATEST(sample_interval_ms * interval '3 milliseconds',
                                           interval '60 seconds');

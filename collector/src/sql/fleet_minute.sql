-- Records this minute's fleet totals (see migrations/…_fleet_minutes.sql).
-- $1 leak threshold (seconds): a CLOSE_WAIT open longer is counted as a leak.
WITH h AS (
    SELECT host_id, last_report, finwait_reporting(last_report, sample_interval_ms) AS live
    FROM hosts
    WHERE last_report IS NOT NULL
), counts AS (
    SELECT sc.state, sum(sc.count)::bigint AS n
    FROM h JOIN state_counts sc ON sc.host_id = h.host_id AND sc.ts = h.last_report
    WHERE h.live
    GROUP BY sc.state
)
INSERT INTO fleet_minutes (ts, states, hosts_reporting, hosts_silent, open_leaks)
SELECT date_trunc('minute', now()),
       COALESCE((SELECT jsonb_object_agg(state, n) FROM counts), '{}'::jsonb),
       (SELECT count(*) FROM h WHERE live),
       (SELECT count(*) FROM h WHERE NOT live),
       (SELECT count(*) FROM current_sockets c JOIN h USING (host_id)
        WHERE c.state = 8 AND h.live
          AND h.last_report - c.first_seen >= $1 * interval '1 second')
ON CONFLICT (ts) DO UPDATE
SET states = EXCLUDED.states, hosts_reporting = EXCLUDED.hosts_reporting,
    hosts_silent = EXCLUDED.hosts_silent, open_leaks = EXCLUDED.open_leaks

-- Per-state daily peaks per host in [$1, $2): each sample summed over the host's
-- network namespaces, then the day's highest; days cut at midnight in time zone $3.
-- $4 hostnames (NULL for all).
--
-- Whole hours that are rolled up come from state_hours (one row per host, hour and
-- state); the partial hours at the window's edges and the hours not rolled up yet come
-- from state_counts. An hour is counted in the day it starts in.
WITH bounds AS (
    SELECT CASE WHEN date_trunc('hour', $1::timestamptz) = $1::timestamptz THEN $1::timestamptz
                ELSE date_trunc('hour', $1::timestamptz) + interval '1 hour' END AS h0,
           LEAST(date_trunc('hour', $2::timestamptz),
                 COALESCE((SELECT until FROM rollups WHERE name = 'state_hours'),
                          '-infinity'::timestamptz)) AS h1
), samples AS (
    SELECT r.host_id, r.hour AS ts, r.state, r.peak::bigint AS total
    FROM state_hours r, bounds b
    WHERE r.hour >= b.h0 AND r.hour < b.h1
    UNION ALL
    SELECT c.host_id, c.ts, c.state, sum(c.count)::bigint
    FROM state_counts c, bounds b
    WHERE c.ts >= $1 AND c.ts < $2 AND (c.ts < b.h0 OR c.ts >= GREATEST(b.h1, b.h0))
    GROUP BY c.host_id, c.ts, c.state
)
SELECT h.hostname, (s.ts AT TIME ZONE $3)::date AS day, s.state, max(s.total)::bigint AS peak
FROM samples s JOIN hosts h USING (host_id)
WHERE ($4::text[] IS NULL OR h.hostname = ANY($4))
GROUP BY 1, 2, 3

-- Per-state daily peaks per host in [$1, $2): each sample summed over the host's
-- network namespaces, then the day's highest; days cut at midnight in time zone $3.
-- $4 hostnames (NULL for all).
SELECT h.hostname, (s.ts AT TIME ZONE $3)::date AS day, s.state, max(s.total)::bigint AS peak
FROM (SELECT host_id, ts, state, sum(count) AS total
      FROM state_counts
      WHERE ts >= $1 AND ts < $2
      GROUP BY host_id, ts, state) s
JOIN hosts h USING (host_id)
WHERE ($4::text[] IS NULL OR h.hostname = ANY($4))
GROUP BY 1, 2, 3

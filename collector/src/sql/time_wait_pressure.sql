-- TIME_WAIT towards one destination filling a share ($3) of the host's ephemeral port
-- range since $1 ($2 hostname, NULL for all): peak count and the last time it was that
-- high. $4 at most this many, worst first.
SELECT h.hostname, host(t.local_addr) AS local_addr, host(t.remote_addr) AS remote_addr,
       t.remote_port, max(t.count)::bigint AS count,
       (h.ephemeral_high - h.ephemeral_low + 1)::bigint AS ports, max(t.ts) AS at
FROM time_wait_counts t JOIN hosts h USING (host_id)
WHERE t.ts >= $1 AND ($2::text IS NULL OR h.hostname = $2)
  AND h.ephemeral_high > h.ephemeral_low
  AND t.count >= $3 * (h.ephemeral_high - h.ephemeral_low + 1)
GROUP BY h.hostname, h.ephemeral_low, h.ephemeral_high, t.netns, t.local_addr, t.remote_addr, t.remote_port
ORDER BY max(t.count)::float8 / (h.ephemeral_high - h.ephemeral_low + 1) DESC, h.hostname
LIMIT $4

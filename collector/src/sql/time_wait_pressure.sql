-- TIME_WAIT towards one destination filling a share ($3) of the host's ephemeral port
-- range since $1 ($2 hostname, NULL for all): peak count and the last time it was that
-- high. $4 at most this many, worst first. $5 (NULL: now) only samples before it. Per host, the count bound is an index
-- condition (time_wait_counts_host_count), so quiet hosts cost one index probe.
SELECT h.hostname, host(t.local_addr) AS local_addr, host(t.remote_addr) AS remote_addr,
       t.remote_port, t.count, (h.ephemeral_high - h.ephemeral_low + 1)::bigint AS ports, t.at
FROM hosts h
CROSS JOIN LATERAL (
    SELECT tc.netns, tc.local_addr, tc.remote_addr, tc.remote_port,
           max(tc.count)::bigint AS count, max(tc.ts) AS at
    FROM time_wait_counts tc
    WHERE tc.host_id = h.host_id AND tc.ts >= $1
      AND ($5::timestamptz IS NULL OR tc.ts < $5)
      AND tc.count >= ceil($3 * (h.ephemeral_high - h.ephemeral_low + 1))::integer
    GROUP BY tc.netns, tc.local_addr, tc.remote_addr, tc.remote_port
) t
WHERE ($2::text IS NULL OR h.hostname = $2)
  AND h.ephemeral_high > h.ephemeral_low
ORDER BY t.count::float8 / (h.ephemeral_high - h.ephemeral_low + 1) DESC, h.hostname
LIMIT $4

-- A host's per-state counts over time: per bucket of $4 seconds from $2 to $3, the
-- peak of each state's count summed over network namespaces. $1 host_id.
SELECT date_bin($4 * interval '1 second', s.ts, $2) AS t, s.state, max(s.n)::bigint AS n
FROM (SELECT sc.ts, sc.state, sum(sc.count) AS n
      FROM state_counts sc
      WHERE sc.host_id = $1 AND sc.ts >= $2 AND sc.ts < $3
      GROUP BY sc.ts, sc.state) s
GROUP BY 1, 2
ORDER BY 1, 2

-- Peer of GET /api/v1/timeline?host=H: the host's per-state counts over the last day,
-- summed over namespaces, peak per 12-minute bucket (about 120 points).
SELECT date_bin('12 minutes', ts, now() - interval '24 hours') AS t, state, max(n)
FROM (
    SELECT sc.ts, sc.state, sum(sc.count) AS n
    FROM state_counts sc JOIN hosts h USING (host_id)
    WHERE h.hostname = :'host' AND sc.ts >= now() - interval '24 hours'
    GROUP BY sc.ts, sc.state
) s
GROUP BY 1, 2
ORDER BY 1, 2;

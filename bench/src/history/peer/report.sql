-- Peer of GET /api/v1/reports/run?window=...: a trend report by hand over the window
-- (:'window', e.g. '7 days'): leaked CLOSE_WAITs per service with their hosts and
-- peers, then each host's daily per-state peaks.
WITH cw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           now() AS last_seen
    FROM current_sockets WHERE state = 8
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           last_seen
    FROM socket_lifetimes WHERE state = 8 AND last_seen > now() - :'window'::interval
), fw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM current_sockets
    WHERE state IN (4, 5)
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM socket_lifetimes
    WHERE state IN (4, 5) AND last_seen > now() - :'window'::interval
)
SELECT COALESCE(cw.owners -> 0 ->> 'service', cw.owners -> 0 ->> 'comm') AS service,
       count(*), count(DISTINCT cw.host_id) AS hosts, string_agg(DISTINCT ph.hostname, ',') AS peers
FROM cw
LEFT JOIN fw ON fw.local_addr = cw.remote_addr AND fw.local_port = cw.remote_port
            AND fw.remote_addr = cw.local_addr AND fw.remote_port = cw.local_port
LEFT JOIN hosts ph ON ph.host_id = fw.host_id
WHERE cw.last_seen - cw.first_seen > interval '60 seconds'
GROUP BY 1
ORDER BY count(*) DESC
LIMIT 20;

-- Daily peaks from the hourly rollup the collector keeps (over the raw per-cycle
-- counts the same question exceeds the peer's 60 s statement timeout on a week).
SELECT h.hostname, date_trunc('day', r.hour) AS day, r.state, max(r.peak)
FROM state_hours r JOIN hosts h USING (host_id)
WHERE r.hour > now() - :'window'::interval
GROUP BY 1, 2, 3;

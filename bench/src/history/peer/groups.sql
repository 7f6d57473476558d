-- Peer of GET /api/v1/leaks/groups: the hand-written leak join, grouped by holding
-- process: how many, how many still open, oldest and newest, and the peer hosts.
WITH cw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           now() AS last_seen, true AS open
    FROM current_sockets WHERE state = 8
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           last_seen, false
    FROM socket_lifetimes WHERE state = 8 AND last_seen > now() - interval '24 hours'
), fw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM current_sockets
    WHERE state IN (4, 5)
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM socket_lifetimes
    WHERE state IN (4, 5) AND last_seen > now() - interval '24 hours'
)
SELECT h.hostname, cw.owners -> 0 ->> 'pid' AS pid, cw.owners -> 0 ->> 'comm' AS comm,
       count(*), count(*) FILTER (WHERE cw.open) AS open, min(cw.first_seen) AS oldest,
       max(cw.first_seen) AS newest, string_agg(DISTINCT ph.hostname, ',') AS peers
FROM cw JOIN hosts h USING (host_id)
LEFT JOIN fw ON fw.local_addr = cw.remote_addr AND fw.local_port = cw.remote_port
            AND fw.remote_addr = cw.local_addr AND fw.remote_port = cw.local_port
            AND fw.host_id <> cw.host_id
LEFT JOIN hosts ph ON ph.host_id = fw.host_id
WHERE cw.last_seen - cw.first_seen > interval '60 seconds'
GROUP BY 1, 2, 3
ORDER BY count(*) DESC;

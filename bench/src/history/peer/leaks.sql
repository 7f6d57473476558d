-- Peer of GET /api/v1/leaks: what an operator writes by hand against the same tables
-- without finwait's query layer. CLOSE_WAITs held over a minute and seen in the last
-- day, each with any FIN_WAIT1/2 on another host holding the reversed tuple (no NAT,
-- no time overlap check, no half-closed or LAST_ACK holders).
WITH cw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           now() AS last_seen
    FROM current_sockets WHERE state = 8
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port, owners, first_seen, last_seen
    FROM socket_lifetimes WHERE state = 8 AND last_seen > now() - interval '24 hours'
), fw AS (
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM current_sockets
    WHERE state IN (4, 5)
    UNION ALL
    SELECT host_id, local_addr, local_port, remote_addr, remote_port FROM socket_lifetimes
    WHERE state IN (4, 5) AND last_seen > now() - interval '24 hours'
)
SELECT h.hostname, cw.local_addr, cw.local_port, cw.remote_addr, cw.remote_port,
       cw.owners -> 0 ->> 'comm' AS comm, cw.first_seen, ph.hostname AS peer
FROM cw JOIN hosts h USING (host_id)
LEFT JOIN fw ON fw.local_addr = cw.remote_addr AND fw.local_port = cw.remote_port
            AND fw.remote_addr = cw.local_addr AND fw.remote_port = cw.local_port
            AND fw.host_id <> cw.host_id
LEFT JOIN hosts ph ON ph.host_id = fw.host_id
WHERE cw.last_seen - cw.first_seen > interval '60 seconds'
ORDER BY cw.first_seen;

-- Peer of GET /api/v1/sockets?host=H&at=AGO: the host's sockets alive at that instant,
-- open or ended.
SELECT s.state, s.local_addr, s.local_port, s.remote_addr, s.remote_port, s.owners,
       s.first_seen, s.last_seen
FROM hosts h
JOIN LATERAL (
    SELECT state, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           NULL::timestamptz AS last_seen
    FROM current_sockets c
    WHERE c.host_id = h.host_id AND c.first_seen <= now() - :'ago'::interval
    UNION ALL
    SELECT state, local_addr, local_port, remote_addr, remote_port, owners, first_seen, last_seen
    FROM socket_lifetimes l
    WHERE l.host_id = h.host_id AND l.first_seen <= now() - :'ago'::interval
      AND l.last_seen >= now() - :'ago'::interval
) s ON true
WHERE h.hostname = :'host'
ORDER BY s.state, s.local_addr, s.local_port;

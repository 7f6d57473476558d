-- Peer of GET /api/v1/who?endpoint=IP:PORT&at=AGO: sockets with that endpoint that
-- were alive at that instant, open or ended (no per-host report alignment, no pairing).
SELECT h.hostname, s.state, s.local_addr, s.local_port, s.remote_addr, s.remote_port,
       s.owners, s.first_seen, s.last_seen
FROM (
    SELECT host_id, state, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           NULL::timestamptz AS last_seen
    FROM current_sockets
    WHERE first_seen <= now() - :'ago'::interval
      AND ((local_addr = :'ip' AND local_port = :port)
        OR (remote_addr = :'ip' AND remote_port = :port))
    UNION ALL
    SELECT host_id, state, local_addr, local_port, remote_addr, remote_port, owners, first_seen,
           last_seen
    FROM socket_lifetimes
    WHERE first_seen <= now() - :'ago'::interval AND last_seen >= now() - :'ago'::interval
      AND ((local_addr = :'ip' AND local_port = :port)
        OR (remote_addr = :'ip' AND remote_port = :port))
) s JOIN hosts h USING (host_id)
ORDER BY h.hostname, s.state;

-- Peer of GET /api/v1/who?endpoint=IP:PORT: every open socket with that endpoint on
-- either side (no pairing of the two ends into one row).
SELECT h.hostname, c.state, c.local_addr, c.local_port, c.remote_addr, c.remote_port,
       c.owners, c.first_seen
FROM current_sockets c JOIN hosts h USING (host_id)
WHERE (c.local_addr = :'ip' AND c.local_port = :port)
   OR (c.remote_addr = :'ip' AND c.remote_port = :port)
ORDER BY h.hostname, c.state;

-- Peer of GET /api/v1/hosts?limit=1000: hosts with their current count per state.
SELECT h.hostname, h.last_report, c.state, count(c.state)
FROM hosts h LEFT JOIN current_sockets c USING (host_id)
GROUP BY h.hostname, h.last_report, c.state
ORDER BY h.hostname, c.state;

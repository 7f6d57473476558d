-- Hosts with their last report and current per-state socket counts ($1 limit).
SELECT h.hostname, h.machine_id, h.agent_version, h.last_report AS last_seen, h.labels,
       COALESCE((SELECT jsonb_object_agg(s.state_name, s.n)
                 FROM (SELECT CASE c.state WHEN 1 THEN 'ESTABLISHED' WHEN 2 THEN 'SYN_SENT'
                              WHEN 3 THEN 'SYN_RECV' WHEN 4 THEN 'FIN_WAIT1' WHEN 5 THEN 'FIN_WAIT2'
                              WHEN 6 THEN 'TIME_WAIT' WHEN 7 THEN 'CLOSE' WHEN 8 THEN 'CLOSE_WAIT'
                              WHEN 9 THEN 'LAST_ACK' WHEN 10 THEN 'LISTEN' ELSE 'CLOSING' END AS state_name,
                              count(*) AS n
                       FROM current_sockets c WHERE c.host_id = h.host_id GROUP BY c.state) s),
                '{}'::jsonb) AS states
FROM hosts h
ORDER BY h.hostname
LIMIT $1

-- Open leaks for /metrics, by kind and by the holder's service: the holders leaks.sql
-- counts as open (current_sockets of reporting hosts, in their state for at least the
-- leak threshold; a half-closed FIN_WAIT2 that is the far end of an open CLOSE_WAIT is
-- that leak, not one of its own), without pairing them with peers.
-- $1 leak threshold (seconds)
WITH live AS (
    SELECT host_id, last_report FROM hosts
    WHERE finwait_reporting(last_report, sample_interval_ms)
)
SELECT CASE c.state WHEN 8 THEN 'close_wait' WHEN 5 THEN 'half_closed_wait'
            ELSE 'last_ack_stuck' END AS kind,
       COALESCE(c.owners -> 0 ->> 'service', ns.service) AS service,
       count(*)::bigint AS n
FROM current_sockets c JOIN live h USING (host_id)
LEFT JOIN namespaces ns ON ns.host_id = c.host_id AND ns.netns = c.netns
WHERE c.state IN (5, 8, 9)
  AND h.last_report - c.first_seen >= $1 * interval '1 second'
  AND (c.state IN (8, 9) OR (c.timer = 0 AND c.inode <> 0))
  AND NOT (c.state = 5 AND EXISTS (
      SELECT 1 FROM current_sockets cw
      WHERE cw.remote_addr = c.local_addr AND cw.remote_port = c.local_port AND cw.state = 8
        AND (NOT (finwait_scope_local(c.local_addr) OR finwait_scope_local(c.remote_addr))
             OR (cw.host_id = c.host_id AND cw.netns = c.netns))))
GROUP BY 1, 2

-- Hosts with their last report, per-state counts and worst TIME_WAIT destination.
-- $1 rows to fetch   $2 rows to skip   $3 TIME_WAIT pressure share of the port range
-- $4 hostname (NULL for all)
--
-- Counts are the agent's own per-cycle counts at the last report (summed over network
-- namespaces, TIME_WAIT included), kept on the hosts row by each batch; the open
-- lifetimes when a host sent none.
SELECT h.hostname, h.machine_id, h.agent_version, h.last_report AS last_seen, h.labels,
       h.ephemeral_low, h.ephemeral_high, h.account, h.account_at,
       finwait_reporting(h.last_report, h.sample_interval_ms) AS reporting,
       COALESCE(
           h.states,
           (SELECT jsonb_object_agg(s.state, s.n)
            FROM (SELECT c.state, count(*) AS n FROM current_sockets c
                  WHERE c.host_id = h.host_id GROUP BY c.state) s),
           '{}'::jsonb) AS states,
       h.hostname AS tw_hostname, tw.local_addr AS tw_local_addr, tw.remote_addr AS tw_remote_addr,
       tw.remote_port AS tw_remote_port, tw.count AS tw_count,
       (h.ephemeral_high - h.ephemeral_low + 1)::bigint AS tw_ports, tw.ts AS tw_at
FROM hosts h
LEFT JOIN LATERAL (
    SELECT host(t.local_addr) AS local_addr, host(t.remote_addr) AS remote_addr, t.remote_port,
           t.count::bigint AS count, t.ts
    FROM time_wait_counts t
    WHERE t.host_id = h.host_id AND t.ts = h.last_report
      AND h.ephemeral_high > h.ephemeral_low
      AND t.count >= $3 * (h.ephemeral_high - h.ephemeral_low + 1)
    ORDER BY t.count DESC
    LIMIT 1
) tw ON true
WHERE ($4::text IS NULL OR h.hostname = $4)
ORDER BY h.hostname, h.host_id
LIMIT $1 OFFSET $2

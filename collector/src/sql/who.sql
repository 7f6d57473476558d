-- Every socket on any host whose local or remote endpoint is $1:$2, now ($3 NULL) or as
-- of each host's last report at or before $3, both ends of a connection on one row.
-- $4 rows to fetch   $5 rows to skip
--
-- `l` sockets have the endpoint as local address, `r` sockets as remote; an `l` and an
-- `r` are one connection when the `l`'s remote is the `r`'s local (loopback endpoints
-- pair only within their host and network namespace, as leaks.sql pairs them). Hosts silent for more than 15 minutes before $3 are
-- left out: their table at $3 is unknown.
WITH cand AS (
    SELECT c.host_id, c.netns, c.sock_key, c.state, c.local_addr, c.local_port, c.remote_addr,
           c.remote_port, c.owners, c.rx_queue, c.tx_queue, c.inode, c.uid, c.timer, c.first_seen,
           h.last_report AS last_seen, NULL::timestamptz AS ended
    FROM current_sockets c JOIN hosts h USING (host_id)
    WHERE ((c.local_addr = $1 AND c.local_port = $2) OR (c.remote_addr = $1 AND c.remote_port = $2))
      AND ($3::timestamptz IS NULL OR c.first_seen <= $3)
    UNION ALL
    SELECT l.host_id, l.netns, l.sock_key, l.state, l.local_addr, l.local_port, l.remote_addr,
           l.remote_port, l.owners, l.rx_queue, l.tx_queue, l.inode, l.uid, l.timer, l.first_seen,
           l.last_seen, l.last_seen
    FROM socket_lifetimes l
    WHERE $3::timestamptz IS NOT NULL
      AND ((l.local_addr = $1 AND l.local_port = $2 AND l.last_seen >= $3 - interval '15 minutes')
        OR (l.remote_addr = $1 AND l.remote_port = $2 AND l.last_seen >= $3 - interval '15 minutes'))
      AND l.first_seen <= $3
), seen AS (
    SELECT cand.*, h.hostname,
           CASE WHEN $3::timestamptz IS NULL THEN h.last_report
                ELSE (SELECT max(b.taken_at) FROM ingest_batches b
                      WHERE b.host_id = cand.host_id AND b.taken_at <= $3
                        AND b.taken_at >= $3 - interval '15 minutes') END AS as_of,
           CASE WHEN finwait_scope_local($1::inet) THEN cand.host_id ELSE 0 END AS scope,
           CASE WHEN finwait_scope_local($1::inet) THEN cand.netns ELSE 0 END AS scope_ns,
           ns.service AS ns_service, ns.container AS ns_container
    FROM cand JOIN hosts h USING (host_id)
    LEFT JOIN namespaces ns ON ns.host_id = cand.host_id AND ns.netns = cand.netns
), alive AS (
    SELECT * FROM seen
    WHERE $3::timestamptz IS NULL OR (as_of IS NOT NULL AND first_seen <= as_of AND last_seen >= as_of)
), l AS (
    SELECT * FROM alive WHERE local_addr = $1 AND local_port = $2
), r AS (
    SELECT * FROM alive WHERE remote_addr = $1 AND remote_port = $2
)
SELECT l.hostname AS l_hostname, l.netns AS l_netns, l.state AS l_state,
       host(l.local_addr) AS l_local_addr, l.local_port AS l_local_port,
       host(l.remote_addr) AS l_remote_addr, l.remote_port AS l_remote_port, l.owners AS l_owners,
       l.rx_queue AS l_rx_queue, l.tx_queue AS l_tx_queue, l.inode AS l_inode, l.uid AS l_uid,
       l.timer AS l_timer, l.first_seen AS l_first_seen, l.ended AS l_ended,
       GREATEST(0, EXTRACT(EPOCH FROM l.as_of - l.first_seen))::bigint AS l_age_s,
       l.ns_service AS l_ns_service, l.ns_container AS l_ns_container,
       r.hostname AS r_hostname, r.netns AS r_netns, r.state AS r_state,
       host(r.local_addr) AS r_local_addr, r.local_port AS r_local_port,
       host(r.remote_addr) AS r_remote_addr, r.remote_port AS r_remote_port, r.owners AS r_owners,
       r.rx_queue AS r_rx_queue, r.tx_queue AS r_tx_queue, r.inode AS r_inode, r.uid AS r_uid,
       r.timer AS r_timer, r.first_seen AS r_first_seen, r.ended AS r_ended,
       GREATEST(0, EXTRACT(EPOCH FROM r.as_of - r.first_seen))::bigint AS r_age_s,
       r.ns_service AS r_ns_service, r.ns_container AS r_ns_container
FROM l FULL JOIN r
  ON l.remote_addr = r.local_addr AND l.remote_port = r.local_port AND l.scope = r.scope
     AND l.scope_ns = r.scope_ns
ORDER BY COALESCE(l.hostname, r.hostname), l.state, COALESCE(r.hostname, ''),
         COALESCE(l.remote_addr, r.local_addr), COALESCE(l.remote_port, r.local_port),
         COALESCE(l.netns, r.netns), COALESCE(l.sock_key, r.sock_key), r.sock_key
LIMIT $4 OFFSET $5

-- Leak verdicts with their best peer.
-- $1 since: lifetimes last seen before it are ignored
-- $2 min_age (seconds): how long a holder must have stayed in its state
-- $3 slack (seconds): allowed gap between holder and peer lifetimes (sampling interval, clock skew)
-- $4 host filter (hostname, NULL for all)   $5 process filter (comm, NULL for all)
-- $6 kind filter   $7 confidence filter   $8 rows to fetch   $9 rows to skip
-- $10 service filter: the holder's service as answered (its first owner's, else its namespace's)
-- $11 until (NULL: now): answer as of this instant: lifetimes first seen at or after it
--     are ignored, and one that lasted past it is open then (last seen at it, not ended)
--
-- A lifetime is open (current_sockets, alive until its host's last report) or ended
-- (socket_lifetimes, until last_seen). Holders: CLOSE_WAIT (8), FIN_WAIT2 without a
-- timer held by a process (5, half-closed), LAST_ACK (9). Peers of a CLOSE_WAIT:
-- FIN_WAIT1/FIN_WAIT2 (4, 5) with the reversed tuple (exact) or, when NAT rewrote the
-- server side, with the client endpoint alone (nat): on any host and namespace for
-- routable addresses, in the holder's own (host, netns) when an endpoint is loopback
-- (finwait_scope_local), so that 127.0.0.1:8080 in two namespaces never pairs. A half-closed
-- FIN_WAIT2 that is the peer of a CLOSE_WAIT leak is that leak's other end, not a
-- leak of its own. Peers are looked up by endpoint through the address indexes.
WITH lt AS (
    SELECT c.host_id, c.netns, c.state, c.local_addr, c.local_port, c.remote_addr, c.remote_port,
           c.owners, c.rx_queue, c.timer, c.inode, c.first_seen,
           LEAST(h.last_report, $11::timestamptz) AS last_seen, NULL::timestamptz AS ended
    FROM current_sockets c JOIN hosts h USING (host_id)
    WHERE c.state IN (5, 8, 9) AND h.last_report >= $1
      AND ($11::timestamptz IS NULL OR c.first_seen < $11)
    UNION ALL
    SELECT l.host_id, l.netns, l.state, l.local_addr, l.local_port, l.remote_addr, l.remote_port,
           l.owners, l.rx_queue, l.timer, l.inode, l.first_seen,
           LEAST(l.last_seen, $11::timestamptz) AS last_seen,
           CASE WHEN $11::timestamptz IS NULL OR l.last_seen < $11 THEN l.last_seen END AS ended
    FROM socket_lifetimes l
    WHERE l.state IN (5, 8, 9) AND l.last_seen >= $1
      AND ($11::timestamptz IS NULL OR l.first_seen < $11)
      -- the whole lifetime's length keeps the search on socket_lifetimes_state; the
      -- part before `until` must be as long
      AND l.last_seen - l.first_seen >= $2 * interval '1 second'
      AND LEAST(l.last_seen, $11::timestamptz) - l.first_seen >= $2 * interval '1 second'
), holders AS (
    SELECT lt.*, h.hostname, ns.service AS ns_service, ns.container AS ns_container,
           CASE lt.state WHEN 8 THEN 'close_wait' WHEN 5 THEN 'half_closed_wait'
                ELSE 'last_ack_stuck' END AS kind,
           finwait_scope_local(lt.local_addr) OR finwait_scope_local(lt.remote_addr) AS scoped
    FROM lt JOIN hosts h USING (host_id)
    LEFT JOIN namespaces ns ON ns.host_id = lt.host_id AND ns.netns = lt.netns
    WHERE lt.last_seen - lt.first_seen >= $2 * interval '1 second'
      AND (lt.state IN (8, 9) OR (lt.state = 5 AND lt.timer = 0 AND lt.inode <> 0))
      AND ($4::text IS NULL OR h.hostname = $4)
      AND ($5::text IS NULL OR lt.owners @> jsonb_build_array(jsonb_build_object('comm', $5::text)))
      AND ($10::text IS NULL OR COALESCE(lt.owners -> 0 ->> 'service', ns.service) = $10)
      AND NOT (lt.state = 5 AND EXISTS (
          SELECT 1 FROM (
              SELECT cw.host_id, cw.netns, cw.first_seen, ch.last_report AS last_seen
              FROM current_sockets cw JOIN hosts ch USING (host_id)
              WHERE cw.remote_addr = lt.local_addr AND cw.remote_port = lt.local_port AND cw.state = 8
              UNION ALL
              SELECT cw.host_id, cw.netns, cw.first_seen, cw.last_seen
              FROM socket_lifetimes cw
              WHERE cw.remote_addr = lt.local_addr AND cw.remote_port = lt.local_port AND cw.state = 8
                AND cw.last_seen >= lt.first_seen - $3 * interval '1 second'
          ) cw
          WHERE (NOT (finwait_scope_local(lt.local_addr) OR finwait_scope_local(lt.remote_addr))
                 OR (cw.host_id = lt.host_id AND cw.netns = lt.netns))
            AND cw.last_seen - cw.first_seen >= $2 * interval '1 second'
            AND cw.first_seen <= lt.last_seen + $3 * interval '1 second'
            AND cw.last_seen >= lt.first_seen - $3 * interval '1 second'))
), paired AS (
    SELECT ho.*, COALESCE(p.confidence, 'one_sided') AS confidence,
           p.hostname AS p_hostname, p.netns AS p_netns, p.state AS p_state,
           p.local_addr AS p_local_addr, p.local_port AS p_local_port,
           p.remote_addr AS p_remote_addr, p.remote_port AS p_remote_port, p.owners AS p_owners,
           p.rx_queue AS p_rx_queue, p.first_seen AS p_first_seen, p.last_seen AS p_last_seen,
           p.ended AS p_ended, p.ns_service AS p_ns_service, p.ns_container AS p_ns_container
    FROM holders ho
    LEFT JOIN LATERAL (
        SELECT CASE WHEN q.remote_addr = ho.local_addr AND q.remote_port = ho.local_port
                    THEN 'exact' ELSE 'nat' END AS confidence,
               qh.hostname, q.netns, q.state, q.local_addr, q.local_port, q.remote_addr,
               q.remote_port, q.owners, q.rx_queue, q.first_seen, q.last_seen, q.ended,
               qn.service AS ns_service, qn.container AS ns_container
        FROM (
            SELECT c.host_id, c.netns, c.state, c.local_addr, c.local_port, c.remote_addr,
                   c.remote_port, c.owners, c.rx_queue, c.first_seen, h.last_report AS last_seen,
                   NULL::timestamptz AS ended
            FROM current_sockets c JOIN hosts h USING (host_id)
            WHERE c.local_addr = ho.remote_addr AND c.local_port = ho.remote_port AND c.state IN (4, 5)
            UNION ALL
            SELECT l.host_id, l.netns, l.state, l.local_addr, l.local_port, l.remote_addr,
                   l.remote_port, l.owners, l.rx_queue, l.first_seen, l.last_seen, l.last_seen
            FROM socket_lifetimes l
            WHERE l.local_addr = ho.remote_addr AND l.local_port = ho.remote_port AND l.state IN (4, 5)
              AND l.last_seen >= ho.first_seen - $3 * interval '1 second'
        ) q JOIN hosts qh USING (host_id)
        LEFT JOIN namespaces qn ON qn.host_id = q.host_id AND qn.netns = q.netns
        WHERE ho.state = 8
          AND (NOT ho.scoped OR (q.host_id = ho.host_id AND q.netns = ho.netns))
          AND q.first_seen <= ho.last_seen + $3 * interval '1 second'
          AND q.last_seen >= ho.first_seen - $3 * interval '1 second'
        ORDER BY (q.remote_addr = ho.local_addr AND q.remote_port = ho.local_port) DESC,
                 q.first_seen DESC
        LIMIT 1
    ) p ON true
)
SELECT kind, confidence, hostname, netns, state, host(local_addr) AS local_addr, local_port,
       host(remote_addr) AS remote_addr, remote_port, owners, rx_queue, first_seen, last_seen, ended,
       ns_service, ns_container,
       p_hostname, p_netns, p_state, host(p_local_addr) AS p_local_addr, p_local_port,
       host(p_remote_addr) AS p_remote_addr, p_remote_port, p_owners, p_rx_queue, p_first_seen,
       p_last_seen, p_ended, p_ns_service, p_ns_container
FROM paired
WHERE ($6::text IS NULL OR kind = $6) AND ($7::text IS NULL OR confidence = $7)
ORDER BY first_seen, hostname, netns, local_addr, local_port, remote_addr, remote_port, state
LIMIT $8 OFFSET $9

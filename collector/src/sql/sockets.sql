-- One host's sockets now ($2 NULL) or as of its report $2, rebuilt from lifetimes.
-- $1 host_id   $2 as_of (a report's taken_at) or NULL
-- $3 state (NULL all)   $4 port, local or remote (NULL all)   $5 pid (NULL all)
-- $6 comm (NULL all)   $7 rows to fetch   $8 rows to skip   $9 service as answered (the first owner's, else the namespace's; NULL all)
--
-- A lifetime was in the table at report R when first_seen <= R <= last_seen; an open
-- one (current_sockets) is seen until the host's last report. Age counts up to the
-- report asked about (or the last one).
WITH lt AS (
    SELECT c.netns, c.sock_key, c.state, c.local_addr, c.local_port, c.remote_addr, c.remote_port,
           c.owners, c.rx_queue, c.tx_queue, c.inode, c.uid, c.timer, c.first_seen,
           NULL::timestamptz AS ended
    FROM current_sockets c
    WHERE c.host_id = $1 AND ($2::timestamptz IS NULL OR c.first_seen <= $2)
    UNION ALL
    SELECT l.netns, l.sock_key, l.state, l.local_addr, l.local_port, l.remote_addr, l.remote_port,
           l.owners, l.rx_queue, l.tx_queue, l.inode, l.uid, l.timer, l.first_seen, l.last_seen
    FROM socket_lifetimes l
    WHERE $2::timestamptz IS NOT NULL AND l.host_id = $1
      AND l.last_seen >= $2 AND l.first_seen <= $2
)
SELECT h.hostname, lt.netns, lt.state, host(lt.local_addr) AS local_addr, lt.local_port,
       host(lt.remote_addr) AS remote_addr, lt.remote_port, lt.owners, lt.rx_queue, lt.tx_queue,
       lt.inode, lt.uid, lt.timer, lt.first_seen, lt.ended,
       ns.service AS ns_service, ns.container AS ns_container,
       GREATEST(0, EXTRACT(EPOCH FROM COALESCE($2, h.last_report, lt.first_seen) - lt.first_seen))::bigint AS age_s
FROM lt JOIN hosts h ON h.host_id = $1
LEFT JOIN namespaces ns ON ns.host_id = $1 AND ns.netns = lt.netns
WHERE ($3::smallint IS NULL OR lt.state = $3)
  AND ($4::int IS NULL OR lt.local_port = $4 OR lt.remote_port = $4)
  AND ($5::bigint IS NULL OR lt.owners @> jsonb_build_array(jsonb_build_object('pid', $5::bigint)))
  AND ($6::text IS NULL OR lt.owners @> jsonb_build_array(jsonb_build_object('comm', $6::text)))
  AND ($9::text IS NULL OR COALESCE(lt.owners -> 0 ->> 'service', ns.service) = $9)
ORDER BY lt.state, lt.local_addr, lt.local_port, lt.remote_addr, lt.remote_port, lt.netns, lt.sock_key
LIMIT $7 OFFSET $8

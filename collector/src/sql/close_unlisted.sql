-- After a full table: ends every open lifetime of the host that the table does not
-- list ($2 netns, $3 sock_key). last_seen = $4 (the previous report).
WITH gone AS (
    DELETE FROM current_sockets c
    WHERE c.host_id = $1
      AND (c.netns, c.sock_key) NOT IN (SELECT * FROM UNNEST($2::bigint[], $3::bigint[]))
    RETURNING c.*
)
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason)
SELECT host_id, netns, sock_key, cookie, state, local_addr, local_port, remote_addr, remote_port,
       inode, uid, rx_queue, tx_queue, timer, owners, first_seen, GREATEST($4, first_seen), 1
FROM gone

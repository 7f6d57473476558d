-- After a full table: ends every open lifetime of the host ($1) that the table does not
-- list (batch_sockets, filled chunk by chunk). last_seen = $2 (the previous report).
WITH gone AS (
    DELETE FROM current_sockets c
    WHERE c.host_id = $1
      AND NOT EXISTS (SELECT 1 FROM batch_sockets l
                      WHERE l.netns = c.netns AND l.sock_key = c.sock_key)
    RETURNING c.*
)
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason, pair_key)
SELECT host_id, netns, sock_key, cookie, state, local_addr, local_port, remote_addr, remote_port,
       inode, uid, rx_queue, tx_queue, timer, owners, first_seen, GREATEST($2, first_seen), 1, pair_key
FROM gone

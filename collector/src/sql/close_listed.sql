-- Ends the open lifetimes of the host ($1) whose socket the batch lists (batch_sockets)
-- with another state (state 0 = removed, so always ended), or with a tuple that would
-- give another pair key (a key is never rewritten in place). last_seen = $2 (the
-- previous report), end_reason = 1 gone or 2 state changed.
WITH gone AS (
    DELETE FROM current_sockets c
    USING batch_sockets g
    WHERE c.host_id = $1 AND c.netns = g.netns AND c.sock_key = g.sock_key
      AND (c.state <> g.state
           OR c.pair_key IS DISTINCT FROM finwait_pair_key($1, g.netns, g.state, g.local_addr,
                                                           g.local_port, g.remote_addr,
                                                           g.remote_port))
    RETURNING c.*, CASE WHEN g.state = 0 THEN 1 ELSE 2 END AS reason
)
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason, pair_key)
SELECT host_id, netns, sock_key, cookie, state, local_addr, local_port, remote_addr, remote_port,
       inode, uid, rx_queue, tx_queue, timer, owners, first_seen, GREATEST($2, first_seen), reason,
       pair_key
FROM gone

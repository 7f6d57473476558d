-- Opens a lifetime for every socket the batch lists (batch_sockets; not the removed,
-- state 0), first seen at the batch time ($2), with its pair key (finwait_pair_key).
-- Alone for the chunks of a fresh table staged after a repeated listing (store.rs:
-- nothing else is open, the host row is locked); otherwise followed by
-- upsert_current.sql's ON CONFLICT clause.
INSERT INTO current_sockets AS c (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen, pair_key)
SELECT $1, u.netns, u.sock_key, u.cookie, u.state, u.local_addr, u.local_port, u.remote_addr,
       u.remote_port, u.inode, u.uid, u.rx_queue, u.tx_queue, u.timer, u.owners, $2,
       finwait_pair_key($1, u.netns, u.state, u.local_addr, u.local_port, u.remote_addr,
                        u.remote_port)
FROM batch_sockets u
WHERE u.state <> 0

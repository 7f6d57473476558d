-- Hosts whose lease lapsed more than $1 ago: their open lifetimes end at their last
-- report (end_reason 3), so a silent agent's sockets do not look alive forever.
WITH silent AS (
    SELECT host_id, last_report FROM hosts
    WHERE live_until < now() - $1::interval AND last_report IS NOT NULL
), gone AS (
    DELETE FROM current_sockets c USING silent s
    WHERE c.host_id = s.host_id
    RETURNING c.*, s.last_report
)
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason, pair_key)
SELECT host_id, netns, sock_key, cookie, state, local_addr, local_port, remote_addr, remote_port,
       inode, uid, rx_queue, tx_queue, timer, owners, first_seen, GREATEST(last_report, first_seen), 3, pair_key
FROM gone

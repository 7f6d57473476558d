-- Ends the open lifetimes of the listed sockets ($2 netns, $3 sock_key) whose state is
-- not the listed one ($4; 0 = gone, so always ended), or whose pair key the listed
-- tuple ($6 local address, $7 port, $8 remote address, $9 port; NULL when gone) would
-- change (a key is never rewritten in place). last_seen = $5 (the previous report),
-- end_reason = 1 gone or 2 state changed.
WITH gone AS (
    DELETE FROM current_sockets c
    USING UNNEST($2::bigint[], $3::bigint[], $4::smallint[], $6::text[], $7::int[], $8::text[],
                 $9::int[]) AS g(netns, sock_key, state, la, lp, ra, rp)
    WHERE c.host_id = $1 AND c.netns = g.netns AND c.sock_key = g.sock_key
      AND (c.state <> g.state
           OR c.pair_key IS DISTINCT FROM finwait_pair_key($1, g.netns, g.state, g.la::inet, g.lp,
                                                           g.ra::inet, g.rp))
    RETURNING c.*, CASE WHEN g.state = 0 THEN 1 ELSE 2 END AS reason
)
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason, pair_key)
SELECT host_id, netns, sock_key, cookie, state, local_addr, local_port, remote_addr, remote_port,
       inode, uid, rx_queue, tx_queue, timer, owners, first_seen, GREATEST($5, first_seen), reason,
       pair_key
FROM gone

-- Adds or rewrites open lifetimes. New rows start at the batch time ($2); existing
-- rows keep their first_seen and are only rewritten when something tracked changed.
-- A socket that loses its holders while its state lasts (the process exiting, or no
-- longer readable) keeps its last known holders: a leak ended by its process's exit
-- still names that process. Each row carries its pair key (finwait_pair_key); a row
-- whose key would change was ended by close_listed.sql first, so the key is never
-- rewritten in place (a distributed table cannot move a row between shards).
INSERT INTO current_sockets AS c (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen, pair_key)
SELECT $1, u.netns, u.sock_key, u.cookie, u.state, u.la::inet, u.lp, u.ra::inet, u.rp, u.inode,
       u.uid, u.rq, u.tq, u.timer, u.owners::jsonb, $2,
       finwait_pair_key($1, u.netns, u.state, u.la::inet, u.lp, u.ra::inet, u.rp)
FROM UNNEST($3::bigint[], $4::bigint[], $5::bigint[], $6::smallint[], $7::text[], $8::int[],
            $9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
            $15::smallint[], $16::text[])
     AS u(netns, sock_key, cookie, state, la, lp, ra, rp, inode, uid, rq, tq, timer, owners)
ON CONFLICT (host_id, netns, sock_key, pair_key) DO UPDATE
SET state = EXCLUDED.state, local_addr = EXCLUDED.local_addr, local_port = EXCLUDED.local_port,
    remote_addr = EXCLUDED.remote_addr, remote_port = EXCLUDED.remote_port, inode = EXCLUDED.inode,
    uid = EXCLUDED.uid, rx_queue = EXCLUDED.rx_queue, tx_queue = EXCLUDED.tx_queue,
    timer = EXCLUDED.timer,
    owners = CASE WHEN EXCLUDED.owners = '[]'::jsonb AND c.state = EXCLUDED.state
                  THEN c.owners ELSE EXCLUDED.owners END
WHERE (c.state, c.inode, c.uid, c.timer, c.owners, c.local_addr, c.local_port, c.remote_addr, c.remote_port)
      IS DISTINCT FROM
      (EXCLUDED.state, EXCLUDED.inode, EXCLUDED.uid, EXCLUDED.timer, EXCLUDED.owners,
       EXCLUDED.local_addr, EXCLUDED.local_port, EXCLUDED.remote_addr, EXCLUDED.remote_port)


-- (Appended to insert_current.sql.) Existing rows keep their first_seen and are only
-- rewritten when something tracked changed. A socket that loses its holders while its
-- state lasts (the process exiting, or no longer readable) keeps its last known
-- holders: a leak ended by its process's exit still names that process. A row whose
-- pair key would change was ended by close_listed.sql first, so the key is never
-- rewritten in place (a distributed table cannot move a row between shards).
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

-- Issue 13, past one PostgreSQL node: a stored distribution key that keeps both ends of
-- a connection on one shard (docs/scale.md says why it is this key and not host_id).
--
-- The pairing joins look a CLOSE_WAIT's peer up by one endpoint: the holder's remote
-- endpoint is the peer's local one, exact or through NAT (nat pairs share only that
-- endpoint: the other one was translated). That endpoint is the active closer's own
-- address, so a socket's pair key is:
--   CLOSE_WAIT, LAST_ACK (8, 9; the passive closer): its remote endpoint;
--   FIN_WAIT1, FIN_WAIT2 (4, 5; the active closer): its local endpoint;
--   LISTEN (10): its local endpoint (its remote one is the wildcard);
--   any other state: the endpoint with the higher port (usually the client's
--   ephemeral one), so both ends of an exact pair in any state agree and one busy
--   server port does not make one hot key.
-- Loopback endpoints identify a socket only with their host and namespace (the scope
-- rule of finwait_scope_local): their key includes both.
--
-- The key is a function of the row, computed by the collector's inserts (Citus refuses
-- a GENERATED distribution column), and part of current_sockets' conflict target (a
-- distributed table's unique keys must contain it). The joins compare it as well as the
-- endpoints, which is implied by the endpoint equality and lets a distributed planner
-- push each join down to one shard.
CREATE FUNCTION finwait_endpoint_key(host_id bigint, netns bigint, addr inet, port integer)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN hashtextextended(
        CASE WHEN finwait_scope_local(addr)
             THEN host(addr) || ' ' || port || ' ' || host_id || ' ' || netns
             ELSE host(addr) || ' ' || port END, 0);

CREATE FUNCTION finwait_pair_key(host_id bigint, netns bigint, state smallint,
                                 local_addr inet, local_port integer,
                                 remote_addr inet, remote_port integer)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN state IN (8, 9) THEN finwait_endpoint_key(host_id, netns, remote_addr, remote_port)
        WHEN state IN (4, 5, 10) THEN finwait_endpoint_key(host_id, netns, local_addr, local_port)
        WHEN (remote_port, remote_addr) > (local_port, local_addr)
            THEN finwait_endpoint_key(host_id, netns, remote_addr, remote_port)
        ELSE finwait_endpoint_key(host_id, netns, local_addr, local_port) END;

-- Adding a nullable column without a default rewrites nothing.
ALTER TABLE current_sockets ADD COLUMN pair_key bigint;
ALTER TABLE socket_lifetimes ADD COLUMN pair_key bigint;

-- Open lifetimes are bounded by the sockets open now (not by history): filled here.
-- Ended lifetimes (history, possibly large) are filled after start-up, in bounded
-- batches, by the collector's backfill task (store::backfill_pair_keys).
UPDATE current_sockets
SET pair_key = finwait_pair_key(host_id, netns, state, local_addr, local_port,
                                remote_addr, remote_port);

-- The upsert's conflict target: the identity plus the key (a row's key never changes
-- in place; a socket whose key would change is ended and opened again).
CREATE UNIQUE INDEX current_sockets_identity_key
    ON current_sockets (host_id, netns, sock_key, pair_key);

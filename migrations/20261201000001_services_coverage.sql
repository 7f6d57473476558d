-- Services, containers and coverage; the scope rule for pairing endpoints.
--
-- namespaces: every network namespace an agent reported, with the container that uses
-- it (named from a cgroup path by the collector). A socket no process holds any more
-- (an orphaned FIN_WAIT2) still belongs to its namespace's container.
CREATE TABLE namespaces (
    host_id   bigint NOT NULL REFERENCES hosts (host_id),
    netns     bigint NOT NULL,
    is_host   boolean NOT NULL,
    cgroup    text NOT NULL,
    service   text,
    container text,
    PRIMARY KEY (host_id, netns)
);

-- Each cycle's self-account (what the agent could not see, and why) with its batch;
-- the latest one on the host, for `hosts`.
ALTER TABLE ingest_batches ADD COLUMN account jsonb;
ALTER TABLE hosts ADD COLUMN account jsonb;
ALTER TABLE hosts ADD COLUMN account_at timestamptz;

-- An endpoint's identity for pairing: loopback addresses mean something only inside
-- their network namespace, so they pair only within (host, netns); routable addresses
-- pair across namespaces and hosts.
CREATE FUNCTION finwait_scope_local(a inet) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN a <<= inet '127.0.0.0/8' OR a = inet '::1' OR a <<= inet '::ffff:127.0.0.0/104';

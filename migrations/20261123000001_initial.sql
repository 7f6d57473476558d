-- finwait initial schema.
--
-- Every table carries host_id so that a distributed PostgreSQL (Citus) can shard on it.
-- Open socket lifetimes live in current_sockets (small, updated in place); ended ones
-- move to socket_lifetimes (append-only, partitioned by the time they were last seen,
-- so retention drops whole partitions). Per-cycle counts are partitioned by time too.

CREATE TABLE hosts (
    host_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id         text NOT NULL,
    hostname           text NOT NULL,
    boot_id            text NOT NULL,
    labels             jsonb NOT NULL DEFAULT '{}'::jsonb,
    agent_version      text NOT NULL DEFAULT '',
    ephemeral_low      integer NOT NULL DEFAULT 0,
    ephemeral_high     integer NOT NULL DEFAULT 0,
    fin_timeout_s      integer NOT NULL DEFAULT 0,
    sample_interval_ms integer NOT NULL DEFAULT 0,
    first_seen         timestamptz NOT NULL DEFAULT now(),
    -- taken_at of the last committed batch: open lifetimes are known alive until then
    last_report        timestamptz,
    last_epoch         bigint NOT NULL DEFAULT 0,
    last_seq           bigint NOT NULL DEFAULT 0,
    -- the agent instance holding the host's lease, and when the lease lapses
    live_instance      text,
    live_until         timestamptz,
    UNIQUE (machine_id, hostname)
);

-- Idempotency ledger: a batch is written once; a resent one hits the primary key.
CREATE TABLE ingest_batches (
    host_id      bigint NOT NULL REFERENCES hosts (host_id),
    epoch        bigint NOT NULL,
    seq          bigint NOT NULL,
    full_table   boolean NOT NULL,
    taken_at     timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    sockets      integer NOT NULL,
    PRIMARY KEY (host_id, epoch, seq)
);

-- Open lifetimes: one row per socket (in its current state) per host.
CREATE TABLE current_sockets (
    host_id     bigint NOT NULL REFERENCES hosts (host_id),
    netns       bigint NOT NULL,
    sock_key    bigint NOT NULL,
    cookie      bigint,
    state       smallint NOT NULL,
    local_addr  inet NOT NULL,
    local_port  integer NOT NULL,
    remote_addr inet NOT NULL,
    remote_port integer NOT NULL,
    inode       bigint NOT NULL,
    uid         bigint NOT NULL,
    rx_queue    bigint NOT NULL,
    tx_queue    bigint NOT NULL,
    timer       smallint NOT NULL,
    owners      jsonb NOT NULL,
    first_seen  timestamptz NOT NULL,
    PRIMARY KEY (host_id, netns, sock_key)
);
CREATE INDEX current_sockets_local ON current_sockets (local_addr, local_port);
CREATE INDEX current_sockets_remote ON current_sockets (remote_addr, remote_port);
CREATE INDEX current_sockets_state ON current_sockets (state, first_seen);

-- Ended lifetimes. last_seen is the last report in which the socket was present in
-- this state; end_reason: 1 gone, 2 state changed, 3 agent went silent.
CREATE TABLE socket_lifetimes (
    host_id     bigint NOT NULL,
    netns       bigint NOT NULL,
    sock_key    bigint NOT NULL,
    cookie      bigint,
    state       smallint NOT NULL,
    local_addr  inet NOT NULL,
    local_port  integer NOT NULL,
    remote_addr inet NOT NULL,
    remote_port integer NOT NULL,
    inode       bigint NOT NULL,
    uid         bigint NOT NULL,
    rx_queue    bigint NOT NULL,
    tx_queue    bigint NOT NULL,
    timer       smallint NOT NULL,
    owners      jsonb NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    end_reason  smallint NOT NULL
) PARTITION BY RANGE (last_seen);
CREATE INDEX socket_lifetimes_local ON socket_lifetimes (local_addr, local_port, last_seen);
CREATE INDEX socket_lifetimes_remote ON socket_lifetimes (remote_addr, remote_port, last_seen);
CREATE INDEX socket_lifetimes_host ON socket_lifetimes (host_id, last_seen);
CREATE TABLE socket_lifetimes_default PARTITION OF socket_lifetimes DEFAULT;

-- Per-cycle, per-namespace, per-state counts (charts).
CREATE TABLE state_counts (
    host_id bigint NOT NULL,
    ts      timestamptz NOT NULL,
    netns   bigint NOT NULL,
    state   smallint NOT NULL,
    count   integer NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX state_counts_host ON state_counts (host_id, ts);
CREATE TABLE state_counts_default PARTITION OF state_counts DEFAULT;

-- Per-cycle TIME_WAIT summaries.
CREATE TABLE time_wait_counts (
    host_id     bigint NOT NULL,
    ts          timestamptz NOT NULL,
    netns       bigint NOT NULL,
    local_addr  inet NOT NULL,
    remote_addr inet NOT NULL,
    remote_port integer NOT NULL,
    count       integer NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX time_wait_counts_host ON time_wait_counts (host_id, ts);
CREATE TABLE time_wait_counts_default PARTITION OF time_wait_counts DEFAULT;

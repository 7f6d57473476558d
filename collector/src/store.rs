//! The only module that writes SQL. Batches are applied in one transaction each (a
//! full table sent in chunks too: [`Store::begin`], [`BatchTx::write`] per chunk,
//! [`BatchTx::finish`]): the host row is locked, the idempotency ledger is looked up
//! (a resent batch is found with its digest and nothing is written), the writing
//! stream's lease and delta continuity are checked, lifetimes are ended, opened or
//! rewritten with set-based statements, never row by row, and the batch enters the
//! ledger with its digest just before the commit. Each message's records are
//! binary-COPYed into the connection's staging table (`sql/batch_sockets.sql`,
//! [`crate::copy_rows`]) and merged at the batch's end; the first full table of a host
//! with no open lifetime is copied straight into `current_sockets`, its pair keys
//! computed by the collector ([`crate::pair_key`]), as nothing can conflict with it.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::copy_rows::{CURRENT_COLUMNS, CopyRows};
use crate::model::{Batch, HostHello, NamespaceRecord, Payload, SocketId, SocketRecord};
use crate::pair_key::pair_key;

/// Bytes of COPY data encoded before they are sent (a few thousand rows).
const COPY_PIECE: usize = 256 * 1024;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another live agent holds this host identity.
    #[error(
        "host {hostname} (machine-id {machine_id}) already has a live agent; refusing a second one"
    )]
    IdentityConflict {
        /// The contested hostname.
        hostname: String,
        /// The contested machine id.
        machine_id: String,
    },
    /// The same agent instance opened a newer stream, which now holds the lease.
    #[error("a newer stream of this agent instance holds the host's lease; this one ends")]
    Superseded,
    /// The host does not exist (a batch without hello).
    #[error("unknown host {0}")]
    UnknownHost(i64),
}

/// Outcome of applying a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written and committed.
    Committed,
    /// Committed before; nothing written. Carries the committed batch's digest
    /// (`None` for batches committed before digests were kept).
    Duplicate(Option<Vec<u8>>),
    /// Not applicable (delta out of sequence): the agent must send a full table.
    Resync(String),
}

/// What a hello returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The host's id.
    pub host_id: i64,
    /// Last committed epoch.
    pub last_epoch: i64,
    /// Last committed sequence number.
    pub last_seq: i64,
}

/// How the store's two pools are sized: ingest (and maintenance) and queries never
/// wait for each other's connections.
#[derive(Debug, Clone, Copy)]
pub struct Pools {
    /// Connections for ingest and maintenance.
    pub ingest: u32,
    /// Connections for queries.
    pub query: u32,
    /// PostgreSQL `statement_timeout` on the query connections; None: no limit.
    pub query_timeout: Option<Duration>,
}

/// How long a question waits for a free query connection before it is told to retry.
const QUERY_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Ingest and maintenance: queries never take these connections.
    pool: PgPool,
    /// Queries only, each statement bounded by the statement timeout; opened lazily.
    query_pool: PgPool,
    /// How long a host's lease lasts past its last batch.
    lease: Duration,
}

/// Counts rows removed past retention from `table` (a fixed name).
fn retention_deleted(table: &'static str, rows: u64) {
    metrics::counter!("finwait_retention_rows_deleted_total", "table" => table).increment(rows);
}

fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Keeps the last record per identity: one statement must not touch a row twice.
fn dedup<'a>(records: impl Iterator<Item = &'a SocketRecord>) -> Vec<&'a SocketRecord> {
    let mut seen = std::collections::HashMap::new();
    let mut out: Vec<&SocketRecord> = Vec::new();
    for r in records {
        match seen.get(&(r.netns, r.sock_key)) {
            Some(&i) => out[i] = r,
            None => {
                seen.insert((r.netns, r.sock_key), out.len());
                out.push(r);
            }
        }
    }
    out
}

impl Store {
    /// Connects to the database at `url` with a pool of `max_connections`.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        lease: Duration,
    ) -> Result<Store, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url)?, max_connections, lease).await
    }

    /// Connects with `options` and a pool of `max_connections` (queries get as many,
    /// with no statement timeout).
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
        lease: Duration,
    ) -> Result<Store, StoreError> {
        let pools = Pools {
            ingest: max_connections,
            query: max_connections,
            query_timeout: None,
        };
        Self::connect_pools(options, pools, lease).await
    }

    /// Connects the ingest pool with `options` (checking the database answers) and
    /// prepares the query pool, sized and bounded by `pools`.
    pub async fn connect_pools(
        options: PgConnectOptions,
        pools: Pools,
        lease: Duration,
    ) -> Result<Store, StoreError> {
        // JIT costs more than it saves on these short, index-driven statements: with it
        // the hosts and leaks queries spent 0.2-0.6 s compiling (finwait-bench history).
        let options = options.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(pools.ingest)
            .acquire_timeout(Duration::from_secs(10))
            // Every ingest connection gets its staging table once, when it opens.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(include_str!("sql/batch_sockets.sql"))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let query_options = match pools.query_timeout {
            Some(t) => options.options([("statement_timeout", format!("{}", t.as_millis()))]),
            None => options,
        };
        let query_pool = PgPoolOptions::new()
            .max_connections(pools.query)
            .acquire_timeout(QUERY_ACQUIRE_TIMEOUT)
            .connect_lazy_with(query_options);
        Ok(Store {
            pool,
            query_pool,
            lease,
        })
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.query_pool.close().await;
        self.pool.close().await;
    }

    /// Applies the migrations in migrations/.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations").run(&self.pool).await?;
        Ok(())
    }

    /// The ingest and maintenance pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The query pool: every statement on it is bounded by the statement timeout.
    pub fn query_pool(&self) -> &PgPool {
        &self.query_pool
    }

    /// Records this minute's fleet totals (an upsert: any collector, any number of times
    /// a minute) and forgets minutes older than `retention_days`.
    pub async fn record_fleet_minute(
        &self,
        leak_threshold_s: f64,
        retention_days: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(include_str!("sql/fleet_minute.sql"))
            .bind(leak_threshold_s)
            .execute(&self.pool)
            .await?;
        let gone =
            sqlx::query("DELETE FROM fleet_minutes WHERE ts < now() - $1 * interval '1 day'")
                .bind(retention_days as f64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        retention_deleted("fleet_minutes", gone);
        Ok(())
    }

    /// Rolls up per-state hourly peaks (`state_hours`) for the hours that ended at
    /// least ten minutes ago and are not rolled up yet, at most a day of them per call
    /// (the first call starts at the oldest count), and drops hours past retention.
    /// Several collectors take turns on the `rollups` row.
    pub async fn roll_state_hours(&self, retention_days: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rollups (name, until) \
             SELECT 'state_hours', COALESCE(date_trunc('hour', min(ts)), date_trunc('hour', now())) \
             FROM state_counts ON CONFLICT (name) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        let until: DateTime<Utc> =
            sqlx::query_scalar("SELECT until FROM rollups WHERE name = 'state_hours' FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let upto: DateTime<Utc> = sqlx::query_scalar(
            "SELECT LEAST(date_trunc('hour', now() - interval '10 minutes'), $1 + interval '24 hours')",
        )
        .bind(until)
        .fetch_one(&mut *tx)
        .await?;
        if upto <= until {
            return Ok(0);
        }
        let rows = sqlx::query(
            "INSERT INTO state_hours (hour, host_id, state, peak) \
             SELECT date_trunc('hour', ts), host_id, state, max(total) \
             FROM (SELECT host_id, ts, state, sum(count)::integer AS total FROM state_counts \
                   WHERE ts >= $1 AND ts < $2 GROUP BY host_id, ts, state) s \
             GROUP BY 1, 2, 3 \
             ON CONFLICT (hour, host_id, state) DO UPDATE SET peak = GREATEST(state_hours.peak, EXCLUDED.peak)",
        )
        .bind(until)
        .bind(upto)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE rollups SET until = $1 WHERE name = 'state_hours'")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        let gone =
            sqlx::query("DELETE FROM state_hours WHERE hour < now() - $1 * interval '1 day'")
                .bind(retention_days as f64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        retention_deleted("state_hours", gone);
        tx.commit().await?;
        Ok(rows)
    }

    /// Creates daily partitions from yesterday to `days_ahead` days ahead, and drops
    /// partitions that ended more than `retention_days` ago.
    pub async fn maintain_partitions(
        &self,
        days_ahead: i64,
        retention_days: i64,
    ) -> Result<(), StoreError> {
        let today = Utc::now().date_naive();
        for table in ["socket_lifetimes", "state_counts", "time_wait_counts"] {
            for d in -1..=days_ahead {
                let day = today + chrono::Duration::days(d);
                let next = day + chrono::Duration::days(1);
                let name = format!("{table}_p{}", day.format("%Y%m%d"));
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&name)
                    .fetch_one(&self.pool)
                    .await?;
                if !exists {
                    // Identifiers come from a fixed list and a formatted date, never input.
                    let ddl = format!(
                        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{day}') TO ('{next}')"
                    );
                    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                        .execute(&self.pool)
                        .await?;
                }
            }
            let cutoff = today - chrono::Duration::days(retention_days);
            if table == "socket_lifetimes" {
                // The idempotency ledger only needs recent batches.
                let gone = sqlx::query(
                    "DELETE FROM ingest_batches WHERE committed_at < now() - make_interval(days => $1)",
                )
                .bind(retention_days as i32)
                .execute(&self.pool)
                .await?
                .rows_affected();
                retention_deleted("ingest_batches", gone);
            }
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 AND c.relname ~ '_p[0-9]{8}$'",
            )
            .bind(table)
            .fetch_all(&self.pool)
            .await?;
            for name in old {
                let Some(day) = name
                    .rsplit("_p")
                    .next()
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").ok())
                else {
                    continue;
                };
                if day < cutoff {
                    tracing::info!(partition = %name, "dropping partition past retention");
                    // Counted exactly, once a day per table: the figure /metrics shows.
                    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM {name}"
                    )))
                    .fetch_one(&self.pool)
                    .await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                        .execute(&self.pool)
                        .await?;
                    metrics::counter!("finwait_retention_partitions_dropped_total", "table" => table)
                        .increment(1);
                    retention_deleted(table, rows as u64);
                }
            }
        }
        metrics::gauge!("finwait_retention_last_run_timestamp_seconds")
            .set(Utc::now().timestamp() as f64);
        Ok(())
    }

    /// The last committed epoch of the host with this identity, if it is known: read
    /// before a hello whose epoch is ahead of the collector's clock is let change
    /// anything.
    pub async fn last_epoch(
        &self,
        machine_id: &str,
        hostname: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT last_epoch FROM hosts WHERE machine_id = $1 AND hostname = $2",
        )
        .bind(machine_id)
        .bind(hostname)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Registers a host and takes its lease for this agent instance.
    #[tracing::instrument(skip_all, fields(host = %h.hostname))]
    pub async fn hello(&self, h: &HostHello, stream: i64) -> Result<Welcome, StoreError> {
        let labels: serde_json::Map<String, serde_json::Value> = h
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let host_id: i64 = sqlx::query_scalar(include_str!("sql/hello.sql"))
            .bind(&h.machine_id)
            .bind(&h.hostname)
            .bind(&h.boot_id)
            .bind(serde_json::Value::Object(labels).to_string())
            .bind(&h.agent_version)
            .bind(i32::from(h.ephemeral.0))
            .bind(i32::from(h.ephemeral.1))
            .bind(h.fin_timeout_s as i32)
            .bind(h.sample_interval_ms as i32)
            .fetch_one(&self.pool)
            .await?;
        let row = sqlx::query(include_str!("sql/take_lease.sql"))
            .bind(host_id)
            .bind(&h.instance_id)
            .bind(interval(self.lease))
            .bind(&h.boot_id)
            .bind(stream)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::IdentityConflict {
                hostname: h.hostname.clone(),
                machine_id: h.machine_id.clone(),
            });
        };
        Ok(Welcome {
            host_id,
            last_epoch: row.try_get(0)?,
            last_seq: row.try_get(1)?,
        })
    }

    /// Gives up the lease when a stream ends, unless a newer stream took it over.
    pub async fn release(&self, host_id: i64, stream: &StreamLease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET live_instance = NULL, live_stream = NULL \
             WHERE host_id = $1 AND live_instance = $2 AND live_stream IS NOT DISTINCT FROM $3",
        )
        .bind(host_id)
        .bind(&stream.instance)
        .bind(stream.stream)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends the open lifetimes of hosts silent for longer than `grace` past their lease.
    pub async fn close_silent(&self, grace: Duration) -> Result<u64, StoreError> {
        let r = sqlx::query(include_str!("sql/close_silent.sql"))
            .bind(interval(grace))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Starts applying batch `head` for stream `stream` of `host_id`: one transaction,
    /// the host row locked until it ends. Either the batch is already settled (a
    /// duplicate, or a resync is needed) or its sockets are written with
    /// [`BatchTx::write`] (once per chunk) and it is committed by [`BatchTx::finish`].
    #[tracing::instrument(skip_all, fields(host_id, epoch = head.epoch, seq = head.seq))]
    pub async fn begin(
        &self,
        host_id: i64,
        stream: &StreamLease,
        head: &BatchHead,
    ) -> Result<Begun, StoreError> {
        let acquiring = std::time::Instant::now();
        let mut tx = self.pool.begin().await.inspect_err(|e| {
            if matches!(e, sqlx::Error::PoolTimedOut) {
                metrics::counter!("finwait_db_pool_timeouts_total", "pool" => "ingest")
                    .increment(1);
            }
        })?;
        metrics::histogram!("finwait_db_acquire_seconds", "pool" => "ingest")
            .record(acquiring.elapsed().as_secs_f64());
        let host = sqlx::query(
            "SELECT last_epoch, last_seq, last_report, live_instance, live_stream \
             FROM hosts WHERE host_id = $1 FOR UPDATE",
        )
        .bind(host_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::UnknownHost(host_id))?;
        let last_epoch: i64 = host.try_get(0)?;
        let last_seq: i64 = host.try_get(1)?;
        let last_report: Option<DateTime<Utc>> = host.try_get(2)?;
        let holder: Option<String> = host.try_get(3)?;
        let holder_stream: Option<i64> = host.try_get(4)?;

        // The host row is locked: nobody can commit this (epoch, seq) before we do.
        let committed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT digest FROM ingest_batches WHERE host_id = $1 AND epoch = $2 AND seq = $3",
        )
        .bind(host_id)
        .bind(head.epoch)
        .bind(head.seq)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(digest) = committed {
            tx.rollback().await?;
            return Ok(Begun::Done(Applied::Duplicate(digest)));
        }
        if holder.as_deref().is_some_and(|h| h != stream.instance) {
            // Our lease lapsed and another instance took the host: this stream must end.
            tx.rollback().await?;
            let who: (String, String) =
                sqlx::query_as("SELECT hostname, machine_id FROM hosts WHERE host_id = $1")
                    .bind(host_id)
                    .fetch_one(&self.pool)
                    .await?;
            return Err(StoreError::IdentityConflict {
                hostname: who.0,
                machine_id: who.1,
            });
        }
        if holder.is_some() && holder_stream.is_some_and(|s| s != stream.stream) {
            // The same instance opened a newer stream (a reconnect): it holds the lease.
            tx.rollback().await?;
            return Err(StoreError::Superseded);
        }
        let newer = (head.epoch, head.seq) > (last_epoch, last_seq);
        let follows = head.epoch == last_epoch && head.seq == last_seq + 1;
        if !head.full && !follows {
            tx.rollback().await?;
            return Ok(Begun::Done(Applied::Resync(format!(
                "delta {}:{} does not follow the last committed batch {last_epoch}:{last_seq}",
                head.epoch, head.seq
            ))));
        }
        if head.full && !newer {
            tx.rollback().await?;
            return Ok(Begun::Done(Applied::Resync(format!(
                "full table {}:{} is older than the last committed batch {last_epoch}:{last_seq}",
                head.epoch, head.seq
            ))));
        }
        // With no open lifetime for the host, a full table only opens lifetimes: its
        // rows are copied straight in, with nothing to end and no conflict to handle.
        // The host row is locked, so no other row can appear before the commit.
        let fresh = head.full
            && !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM current_sockets WHERE host_id = $1)",
            )
            .bind(host_id)
            .fetch_one(&mut *tx)
            .await?;
        Ok(Begun::Open(BatchTx {
            tx,
            host_id,
            head: head.clone(),
            // Sockets that vanish were last seen in the previous report.
            prev: last_report.unwrap_or(head.taken_at).min(head.taken_at),
            lease: self.lease,
            sockets: 0,
            staged: 0,
            writes: 0,
            fresh,
            fell_back: false,
        }))
    }
}

/// The first message of a batch: what decides whether and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHead {
    /// The stream's epoch.
    pub epoch: i64,
    /// Sequence number within it.
    pub seq: i64,
    /// A full table (possibly in chunks) rather than a delta.
    pub full: bool,
    /// When the agent read the table.
    pub taken_at: DateTime<Utc>,
}

/// Which stream of which agent instance writes: a batch from a stream that no longer
/// holds the host's lease is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLease {
    /// The agent process's instance id (Hello.instance_id).
    pub instance: String,
    /// This stream's random id, stored in hosts.live_stream by hello.
    pub stream: i64,
}

/// How [`Store::begin`] left a batch.
#[derive(Debug)]
pub enum Begun {
    /// Write it: the transaction is open and the host row locked.
    Open(BatchTx),
    /// Nothing to write.
    Done(Applied),
}

/// One batch's open transaction; dropping it rolls everything back.
#[derive(Debug)]
pub struct BatchTx {
    tx: Transaction<'static, Postgres>,
    host_id: i64,
    head: BatchHead,
    prev: DateTime<Utc>,
    lease: Duration,
    /// Socket records written so far (every chunk).
    sockets: usize,
    /// Rows copied into the staging table (their `ord`).
    staged: i64,
    /// Messages written (a chunked full table writes several).
    writes: usize,
    /// A full table for a host with no open lifetime (see [`Store::begin`]): its
    /// rows go straight into current_sockets.
    fresh: bool,
    /// A chunk of a fresh table listed a socket an earlier chunk did (a broken or
    /// hostile agent): that chunk and the rest are staged and merged at the end.
    fell_back: bool,
}

impl BatchTx {
    /// Socket records written so far.
    pub fn sockets(&self) -> usize {
        self.sockets
    }

    /// Writes one message's sockets into the staging table: a full table's chunk (or
    /// the whole table), or a delta. A full table's sockets must come as
    /// `Payload::Full`. They reach the socket tables in [`BatchTx::finish`].
    pub async fn write(&mut self, payload: &Payload) -> Result<(), StoreError> {
        let (records, removed, count) = match payload {
            Payload::Full(records) => (dedup(records.iter()), &[][..], records.len()),
            Payload::Delta {
                added,
                removed,
                changed,
            } => (
                dedup(added.iter().chain(changed.iter())),
                removed.as_slice(),
                added.len() + removed.len() + changed.len(),
            ),
        };
        if self.fresh && !self.fell_back {
            self.copy_current(&records).await?;
        } else {
            self.stage(&records, removed).await?;
        }
        self.sockets += count;
        self.writes += 1;
        Ok(())
    }

    /// Copies a fresh table's records straight into current_sockets. A later chunk
    /// copies under a savepoint: a socket an earlier chunk listed too breaks the
    /// identity key, and the chunk is staged instead (see `fell_back`).
    async fn copy_current(&mut self, records: &[&SocketRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let later = self.writes > 0;
        if later {
            sqlx::query("SAVEPOINT chunk")
                .execute(&mut *self.tx)
                .await?;
        }
        match self.copy_current_rows(records).await {
            Ok(()) if later => {
                sqlx::query("RELEASE SAVEPOINT chunk")
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if later && e.code().as_deref() == Some("23505") =>
            {
                sqlx::query("ROLLBACK TO SAVEPOINT chunk")
                    .execute(&mut *self.tx)
                    .await?;
                tracing::warn!(
                    host_id = self.host_id,
                    "a chunk of a full table lists a socket an earlier chunk listed: the last listing stands"
                );
                self.fell_back = true;
                self.stage(records, &[]).await
            }
            Err(e) => Err(e),
        }
    }

    async fn copy_current_rows(&mut self, records: &[&SocketRecord]) -> Result<(), StoreError> {
        let (host_id, at) = (self.host_id, self.head.taken_at);
        let mut copy = self
            .tx
            .copy_in_raw(&format!(
                "COPY current_sockets ({CURRENT_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        let mut rows = CopyRows::new();
        for r in records {
            let key = pair_key(
                host_id,
                r.netns,
                r.state,
                (r.local_addr, r.local_port),
                (r.remote_addr, r.remote_port),
            );
            rows.current(host_id, r, at, key);
            if rows.len() >= COPY_PIECE {
                copy.send(rows.take()).await?;
            }
        }
        copy.send(rows.finish()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// Copies `removed` and `records` into the staging table, in pieces of about
    /// [`COPY_PIECE`] bytes so the encoded rows never all sit in memory.
    async fn stage(
        &mut self,
        records: &[&SocketRecord],
        removed: &[SocketId],
    ) -> Result<(), StoreError> {
        if records.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let mut copy = self
            .tx
            .copy_in_raw("COPY batch_sockets FROM STDIN (FORMAT binary)")
            .await?;
        let mut rows = CopyRows::new();
        for &id in removed {
            self.staged += 1;
            rows.removed(self.staged, id);
            if rows.len() >= COPY_PIECE {
                copy.send(rows.take()).await?;
            }
        }
        for r in records {
            self.staged += 1;
            rows.staged(self.staged, r);
            if rows.len() >= COPY_PIECE {
                copy.send(rows.take()).await?;
            }
        }
        copy.send(rows.finish()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// Merges the staged rows: ends the lifetimes they close, opens and rewrites the
    /// rest, and after a full table ends those it did not list.
    async fn merge(&mut self) -> Result<(), StoreError> {
        let (tx, host_id, prev, at) = (&mut self.tx, self.host_id, self.prev, self.head.taken_at);
        if self.staged > 0 && self.writes > 1 {
            let twice: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM batch_sockets GROUP BY netns, sock_key \
                 HAVING count(*) > 1)",
            )
            .fetch_one(&mut **tx)
            .await?;
            if twice {
                sqlx::query(include_str!("sql/batch_dedup.sql"))
                    .execute(&mut **tx)
                    .await?;
            }
        }
        if self.fresh {
            if self.staged > 0 {
                // Chunks after a repeated listing were staged: they replace what the
                // earlier chunks copied of the same sockets (nothing else is open).
                sqlx::query(
                    "DELETE FROM current_sockets c USING batch_sockets b \
                     WHERE c.host_id = $1 AND c.netns = b.netns AND c.sock_key = b.sock_key",
                )
                .bind(host_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query(include_str!("sql/insert_current.sql"))
                    .bind(host_id)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
            return Ok(());
        }
        if self.staged > 0 {
            sqlx::query(include_str!("sql/close_listed.sql"))
                .bind(host_id)
                .bind(prev)
                .execute(&mut **tx)
                .await?;
            sqlx::query(concat!(
                include_str!("sql/insert_current.sql"),
                include_str!("sql/upsert_current.sql")
            ))
            .bind(host_id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        if self.head.full {
            sqlx::query(include_str!("sql/close_unlisted.sql"))
                .bind(host_id)
                .bind(prev)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Ends the batch: lifetimes a full table did not list are ended, `meta`'s counts,
    /// namespaces and account stored, the batch entered in the ledger with `digest`,
    /// the host's position advanced, and the transaction committed.
    pub async fn finish(mut self, meta: &Batch, digest: &[u8]) -> Result<Applied, StoreError> {
        self.merge().await?;
        let (host_id, b) = (self.host_id, &self.head);
        let account = meta.account.as_ref().map(sqlx::types::Json);
        sqlx::query(
            "INSERT INTO ingest_batches (host_id, epoch, seq, full_table, taken_at, sockets, account, digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(host_id)
        .bind(b.epoch)
        .bind(b.seq)
        .bind(b.full)
        .bind(b.taken_at)
        .bind(i32::try_from(self.sockets).unwrap_or(i32::MAX))
        .bind(account)
        .bind(digest)
        .execute(&mut *self.tx)
        .await?;
        insert_counts(&mut self.tx, host_id, meta).await?;
        upsert_namespaces(&mut self.tx, host_id, &meta.namespaces).await?;
        sqlx::query(
            "UPDATE hosts SET last_epoch = $2, last_seq = $3, last_report = GREATEST(last_report, $4), \
             live_until = now() + GREATEST($5::interval, sample_interval_ms * interval '3 milliseconds'), \
             account = COALESCE($6, account), \
             account_at = CASE WHEN $6 IS NULL THEN account_at ELSE $4 END, \
             states = CASE WHEN $7::jsonb IS NOT NULL AND $4 >= COALESCE(last_report, $4) \
                           THEN $7::jsonb ELSE states END \
             WHERE host_id = $1",
        )
        .bind(host_id)
        .bind(b.epoch)
        .bind(b.seq)
        .bind(b.taken_at)
        .bind(interval(self.lease))
        .bind(account)
        .bind(state_totals(meta))
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(Applied::Committed)
    }
}

/// Records the batch's namespaces and their containers; a row is rewritten only when
/// what it says changed, so the steady state writes nothing.
async fn upsert_namespaces(
    tx: &mut Transaction<'_, Postgres>,
    host_id: i64,
    namespaces: &[NamespaceRecord],
) -> Result<(), StoreError> {
    if namespaces.is_empty() {
        return Ok(());
    }
    let netns: Vec<i64> = namespaces.iter().map(|n| n.netns).collect();
    let is_host: Vec<bool> = namespaces.iter().map(|n| n.is_host).collect();
    let cgroup: Vec<&str> = namespaces.iter().map(|n| n.cgroup.as_str()).collect();
    let service: Vec<Option<&str>> = namespaces.iter().map(|n| n.service.as_deref()).collect();
    let container: Vec<Option<&str>> = namespaces.iter().map(|n| n.container.as_deref()).collect();
    sqlx::query(include_str!("sql/upsert_namespaces.sql"))
        .bind(host_id)
        .bind(&netns)
        .bind(&is_host)
        .bind(&cgroup)
        .bind(&service)
        .bind(&container)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stores the cycle's per-state counts and TIME_WAIT summaries.
/// The batch's per-state counts summed over namespaces, as `{"STATE_NUMBER": n}`;
/// `None` when the agent sent none.
fn state_totals(b: &Batch) -> Option<serde_json::Value> {
    if b.counts.is_empty() {
        return None;
    }
    let mut totals: std::collections::BTreeMap<i16, i64> = std::collections::BTreeMap::new();
    for c in &b.counts {
        *totals.entry(c.state).or_default() += i64::from(c.count);
    }
    Some(serde_json::Value::Object(
        totals
            .into_iter()
            .map(|(s, n)| (s.to_string(), serde_json::Value::from(n)))
            .collect(),
    ))
}

async fn insert_counts(
    tx: &mut Transaction<'_, Postgres>,
    host_id: i64,
    b: &Batch,
) -> Result<(), StoreError> {
    if !b.counts.is_empty() {
        let netns: Vec<i64> = b.counts.iter().map(|c| c.netns).collect();
        let state: Vec<i16> = b.counts.iter().map(|c| c.state).collect();
        let count: Vec<i32> = b.counts.iter().map(|c| c.count).collect();
        sqlx::query(
            "INSERT INTO state_counts (host_id, ts, netns, state, count) \
             SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::smallint[], $5::int[])",
        )
        .bind(host_id)
        .bind(b.taken_at)
        .bind(&netns)
        .bind(&state)
        .bind(&count)
        .execute(&mut **tx)
        .await?;
    }
    if !b.time_wait.is_empty() {
        let netns: Vec<i64> = b.time_wait.iter().map(|g| g.netns).collect();
        let la: Vec<String> = b
            .time_wait
            .iter()
            .map(|g| g.local_addr.to_string())
            .collect();
        let ra: Vec<String> = b
            .time_wait
            .iter()
            .map(|g| g.remote_addr.to_string())
            .collect();
        let rp: Vec<i32> = b
            .time_wait
            .iter()
            .map(|g| i32::from(g.remote_port))
            .collect();
        let count: Vec<i32> = b.time_wait.iter().map(|g| g.count).collect();
        sqlx::query(
            "INSERT INTO time_wait_counts (host_id, ts, netns, local_addr, remote_addr, remote_port, count) \
             SELECT $1, $2, u.n, u.la::inet, u.ra::inet, u.rp, u.c \
             FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::int[], $7::int[]) AS u(n, la, ra, rp, c)",
        )
        .bind(host_id)
        .bind(b.taken_at)
        .bind(&netns)
        .bind(&la)
        .bind(&ra)
        .bind(&rp)
        .bind(&count)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

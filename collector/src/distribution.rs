//! Past one PostgreSQL node (docs/scale.md): the pair key's backfill and the Citus
//! layout.
//!
//! Every socket row carries `pair_key` (migration `20261203000001_pair_key.sql`), the
//! key both ends of a connection agree on, exact or through NAT. New rows get it from
//! the collector's inserts; rows written before the migration get it here:
//! [`backfill_pair_keys`] walks each table's heap in bounded block ranges (one short
//! statement each, a pause between them), so a large history is filled without one
//! long transaction, and marks the work done in `rollups` so later starts skip it.
//!
//! With `--citus`, [`distribute`] turns a Citus coordinator's tables into the
//! distributed layout: `hosts` and `namespaces` reference tables, the socket tables
//! distributed by `pair_key` (co-located), the per-host tables by `host_id`
//! (co-located with each other), the `finwait_*` SQL functions created on the workers.
//! It refuses a database without the `citus` extension.

use std::time::Duration;

use sqlx::PgPool;

use crate::store::StoreError;

/// Heap blocks one backfill statement covers (8 MiB with the default block size).
const BLOCKS_PER_STEP: i64 = 1024;
/// How many times one backfill range is tried again after an error.
const STEP_TRIES: u32 = 3;
/// The marker row in `rollups` that says every row written before the migration has
/// its key.
const DONE: &str = "pair_key_backfill";
/// The tables whose rows carry a pair key (socket_lifetimes through its partitions).
const KEYED: [&str; 2] = ["current_sockets", "socket_lifetimes"];

/// What the Citus set-up can refuse.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// `--citus` on a database that is not a Citus coordinator.
    #[error(
        "--citus: the database has no citus extension; run the collector with --citus only \
         against a Citus coordinator (CREATE EXTENSION citus; and add the workers first), \
         or drop --citus"
    )]
    NotCitus,
    /// Rows without a pair key remain after the backfill (an older collector still
    /// writing?).
    #[error(
        "--citus: {0} socket rows still have no pair key (is a collector older than \
         the pair-key migration still running?); stop it and start again"
    )]
    Unkeyed(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DistributionError {
    fn from(e: sqlx::Error) -> Self {
        DistributionError::Store(StoreError::Database(e))
    }
}

/// Whether the backfill has been completed (by this or another collector).
pub async fn backfill_done(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM rollups WHERE name = $1)")
            .bind(DONE)
            .fetch_one(pool)
            .await?,
    )
}

/// The heap tables holding keyed rows: `current_sockets` and every leaf partition of
/// `socket_lifetimes`, with their sizes in blocks.
async fn keyed_heaps(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "WITH RECURSIVE tree AS ( \
             SELECT c.oid FROM pg_class c WHERE c.oid = ANY(ARRAY[$1, $2]::regclass[]) \
             UNION ALL \
             SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid) \
         SELECT c.oid::regclass::text, \
                pg_relation_size(c.oid) / current_setting('block_size')::bigint \
         FROM tree t JOIN pg_class c ON c.oid = t.oid WHERE c.relkind = 'r' ORDER BY 1",
    )
    .bind(KEYED[0])
    .bind(KEYED[1])
    .fetch_all(pool)
    .await?)
}

/// Fills `pair_key` on every row that lacks it, `BLOCKS_PER_STEP` heap blocks per
/// statement with `pause` between statements, unless the work is marked done; then
/// marks it done. Returns the rows filled. Stops early (not marked) when `stop` says so.
#[tracing::instrument(skip_all, err)]
pub async fn backfill_pair_keys(
    pool: &PgPool,
    pause: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<u64, StoreError> {
    if backfill_done(pool).await? {
        return Ok(0);
    }
    let mut filled = 0u64;
    for (table, blocks) in keyed_heaps(pool).await? {
        let mut from = 0i64;
        // A table's rows as of the start: rows moved or added later have their key.
        while from < blocks {
            if stop.is_cancelled() {
                return Ok(filled);
            }
            let to = from + BLOCKS_PER_STEP;
            // The table name comes from the catalogue (regclass text, quoted as needed),
            // never from input.
            let sql = format!(
                "UPDATE {table} SET pair_key = finwait_pair_key(host_id, netns, state, \
                 local_addr, local_port, remote_addr, remote_port) \
                 WHERE ctid >= $1::text::tid AND ctid < $2::text::tid AND pair_key IS NULL"
            );
            // A range that fails (a lock conflict with a rolling upgrade's old writer, a
            // dropped partition) is tried again a few times before the task gives up
            // until the next start.
            let mut tries = 0;
            let done = loop {
                match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(format!("({from},0)"))
                    .bind(format!("({to},0)"))
                    .execute(pool)
                    .await
                {
                    Ok(done) => break done,
                    Err(e) if tries < STEP_TRIES => {
                        tries += 1;
                        tracing::debug!(%table, from, error = %e, "pair-key backfill step retried");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            filled += done.rows_affected();
            from = to;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    sqlx::query(
        "INSERT INTO rollups (name, until) VALUES ($1, now()) ON CONFLICT (name) DO NOTHING",
    )
    .bind(DONE)
    .execute(pool)
    .await?;
    if filled > 0 {
        tracing::info!(
            rows = filled,
            "pair keys filled on rows written before the migration"
        );
    }
    Ok(filled)
}

/// Makes the Citus layout on a Citus coordinator (idempotent: tables already
/// distributed are left alone): fills every missing pair key first, makes it NOT
/// NULL, moves current_sockets' primary key onto (identity, pair key), then creates the
/// reference and distributed tables. Refuses a database without the citus extension.
#[tracing::instrument(skip_all, err)]
pub async fn distribute(pool: &PgPool) -> Result<(), DistributionError> {
    let citus: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
            .fetch_optional(pool)
            .await?;
    let Some(version) = citus else {
        return Err(DistributionError::NotCitus);
    };
    backfill_pair_keys(
        pool,
        Duration::ZERO,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    let mut unkeyed = 0i64;
    for table in KEYED {
        let sql = format!("SELECT count(*) FROM {table} WHERE pair_key IS NULL");
        unkeyed += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await?;
    }
    if unkeyed > 0 {
        return Err(DistributionError::Unkeyed(unkeyed));
    }
    sqlx::raw_sql(include_str!("sql/citus_prepare.sql"))
        .execute(pool)
        .await?;
    // (table, how): reference tables first (foreign keys point at them), then each
    // co-location group's first table, then its members.
    let layout: [(&str, &str); 8] = [
        ("hosts", "SELECT create_reference_table('hosts')"),
        ("namespaces", "SELECT create_reference_table('namespaces')"),
        (
            "current_sockets",
            "SELECT create_distributed_table('current_sockets', 'pair_key')",
        ),
        (
            "socket_lifetimes",
            "SELECT create_distributed_table('socket_lifetimes', 'pair_key', \
             colocate_with => 'current_sockets')",
        ),
        (
            "ingest_batches",
            "SELECT create_distributed_table('ingest_batches', 'host_id')",
        ),
        (
            "state_counts",
            "SELECT create_distributed_table('state_counts', 'host_id', \
             colocate_with => 'ingest_batches')",
        ),
        (
            "time_wait_counts",
            "SELECT create_distributed_table('time_wait_counts', 'host_id', \
             colocate_with => 'ingest_batches')",
        ),
        (
            "state_hours",
            "SELECT create_distributed_table('state_hours', 'host_id', \
             colocate_with => 'ingest_batches')",
        ),
    ];
    sqlx::raw_sql(include_str!("sql/citus_functions.sql"))
        .execute(pool)
        .await?;
    for (table, create) in layout {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::regclass)",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        if !done {
            tracing::info!(table, "creating the Citus table");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(pool)
                .await?;
        }
    }
    tracing::info!(citus = %version, "tables distributed (docs/scale.md)");
    Ok(())
}

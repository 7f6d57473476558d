//! The synthetic fleet behind `finwait-bench history`: hosts, their open sockets, a
//! history of ended lifetimes, per-minute counts and ledger rows, and a known set of
//! leaks, written by PostgreSQL itself (`INSERT ... SELECT generate_series`, the SQL in
//! `fleet.sql`) into a database the collector has migrated.
//!
//! Secondary indexes are dropped before the load and rebuilt after it from their own
//! catalog definitions (so whatever indexes the migrations define are the ones timed),
//! then the tables are vacuumed and analysed as autovacuum would have by then.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection, Row};
use tracing::info;

const FLEET_SQL: &str = include_str!("fleet.sql");

/// The tables the fleet fills, in the order sizes are reported.
pub const TABLES: [&str; 6] = [
    "hosts",
    "current_sockets",
    "socket_lifetimes",
    "state_counts",
    "time_wait_counts",
    "ingest_batches",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Hosts, `host-0001` on.
    pub hosts: u32,
    /// Hours of history up to now.
    pub hours: u32,
    /// Ended connections per client host and hour.
    pub conns_per_hour: u32,
    /// Leaking server processes.
    pub leaky: u32,
    /// Leaked connections per leaking process.
    pub leaks_per: u32,
}

/// One table after the load.
#[derive(Debug, Clone)]
pub struct TableSize {
    /// Table name.
    pub name: &'static str,
    /// Rows.
    pub rows: i64,
    /// Heap, indexes and TOAST over all partitions, bytes.
    pub bytes: i64,
}

/// The leaks planted, by what the collector should call them.
#[derive(Debug, Clone, Default)]
pub struct LeakMix {
    /// CLOSE_WAIT leaks in all: each is one leak in the answer.
    pub total: i64,
    /// Open, peer's orphaned FIN_WAIT2 seen then expired: `exact`.
    pub open_exact: i64,
    /// Open, peer still holding a half-closed FIN_WAIT2: `exact`.
    pub open_half_closed_peer: i64,
    /// Ended (the holder closed): `exact`, with an end time.
    pub ended_exact: i64,
    /// No peer seen (client without agent, or its FIN_WAIT2 never sampled).
    pub one_sided: i64,
    /// Client reached the server through a VIP.
    pub nat: i64,
}

/// What the generation produced and what it took.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Wall time of the whole generation, seconds.
    pub seconds: f64,
    /// Each step with its wall time, seconds.
    pub steps: Vec<(String, f64)>,
    /// Rows and bytes per table.
    pub tables: Vec<TableSize>,
    /// The database's size, bytes.
    pub database_bytes: i64,
    /// The planted leaks.
    pub leaks: LeakMix,
}

/// The `-- step: NAME` blocks of `sql`, in order.
fn steps(sql: &'static str) -> Vec<(&'static str, &'static str)> {
    sql.split("\n-- step: ")
        .skip(1)
        .map(|s| {
            let (name, body) = s.split_once('\n').unwrap_or((s, ""));
            (name.trim(), body)
        })
        .collect()
}

/// Generates the fleet into the (migrated, empty) database at `url`.
pub async fn generate(url: &str, shape: &Shape) -> Result<Generated> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to the bench database")?;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts")
        .fetch_one(&mut conn)
        .await?;
    if hosts > 0 {
        bail!("the bench database already holds {hosts} hosts; the generator needs it empty");
    }
    // One statement may run for a while, but not forever; JIT only costs here.
    sqlx::raw_sql(
        "SET jit = off; SET work_mem = '256MB'; SET maintenance_work_mem = '1GB'; \
         SET statement_timeout = '10min'",
    )
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(
        "CREATE TEMP TABLE gen (hosts integer, hours integer, cph integer, leaky integer, \
         leaks_per integer, t_now timestamptz)",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("INSERT INTO gen VALUES ($1, $2, $3, $4, $5, now())")
        .bind(shape.hosts as i32)
        .bind(shape.hours as i32)
        .bind(shape.conns_per_hour as i32)
        .bind(shape.leaky as i32)
        .bind(shape.leaks_per as i32)
        .execute(&mut conn)
        .await?;

    let mut timings = Vec::new();
    let t = Instant::now();
    let indexes = drop_secondary_indexes(&mut conn).await?;
    timings.push(("drop indexes".to_owned(), t.elapsed().as_secs_f64()));
    for (name, sql) in steps(FLEET_SQL) {
        let t = Instant::now();
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .with_context(|| format!("fleet.sql step {name}"))?;
        let s = t.elapsed().as_secs_f64();
        info!(step = name, seconds = format!("{s:.1}"), "generated");
        timings.push((name.to_owned(), s));
    }
    let t = Instant::now();
    for (name, def) in &indexes {
        let t = Instant::now();
        // Definitions come from the catalog, not from input. A partitioned index reads
        // back as `ON ONLY parent`; rebuilt `ON parent` it covers every partition again.
        sqlx::raw_sql(sqlx::AssertSqlSafe(def.replacen(" ON ONLY ", " ON ", 1)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("rebuilding index {name}"))?;
        info!(index = %name, seconds = format!("{:.1}", t.elapsed().as_secs_f64()), "index rebuilt");
    }
    timings.push(("rebuild indexes".to_owned(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM (ANALYZE) {}",
        TABLES.join(", ")
    )))
    .execute(&mut conn)
    .await
    .context("vacuum analyze")?;
    let s = t.elapsed().as_secs_f64();
    info!(seconds = format!("{s:.1}"), "vacuumed and analysed");
    timings.push(("vacuum analyze".to_owned(), s));
    let seconds = started.elapsed().as_secs_f64();

    let row = sqlx::query(
        "SELECT count(*), count(*) FILTER (WHERE kind < 8), count(*) FILTER (WHERE kind IN (8, 9)), \
                count(*) FILTER (WHERE kind IN (10, 11, 12)), count(*) FILTER (WHERE kind IN (13, 14)), \
                count(*) FILTER (WHERE kind = 15) FROM lk",
    )
    .fetch_one(&mut conn)
    .await?;
    let leaks = LeakMix {
        total: row.try_get(0)?,
        open_exact: row.try_get(1)?,
        open_half_closed_peer: row.try_get(2)?,
        ended_exact: row.try_get(3)?,
        one_sided: row.try_get(4)?,
        nat: row.try_get(5)?,
    };
    let mut tables = Vec::new();
    for name in TABLES {
        // Table names come from the fixed list above.
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                .fetch_one(&mut conn)
                .await?;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
             WHERE c.oid = $1::regclass \
                OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
        tables.push(TableSize { name, rows, bytes });
    }
    let database_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(Generated {
        seconds,
        steps: timings,
        tables,
        database_bytes,
        leaks,
    })
}

/// Drops the fleet tables' indexes that back no constraint, returning their definitions.
async fn drop_secondary_indexes(conn: &mut PgConnection) -> Result<Vec<(String, String)>> {
    let tables: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
    let rows = sqlx::query(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         WHERE t.relname = ANY($1) AND t.relnamespace = 'public'::regnamespace \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
         ORDER BY 1",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let (name, def): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        // The name is the catalog's own, already quoted where needed by regclass::text.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("dropping index {name}"))?;
        out.push((name, def));
    }
    info!(
        indexes = out.len(),
        "secondary indexes dropped for the load"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_sql_is_split_into_named_steps() {
        let names: Vec<&str> = steps(FLEET_SQL).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "functions",
                "partitions",
                "hosts",
                "fleet",
                "current",
                "history",
                "leaks",
                "counts",
                "rollup"
            ]
        );
        assert!(steps(FLEET_SQL).iter().all(|(_, b)| b.contains(';')));
    }
}

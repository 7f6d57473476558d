//! Stored reports (`reports`) and their delivery states (`report_deliveries`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use finwait_vocab::report::{Report, ReportEntry, ReportsPage, Tally, Window};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::schedule::Destination;
use crate::query::{PageReq, QueryError};

/// The end of the newest stored window of `schedule`.
pub async fn last_window_end(
    pool: &PgPool,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(window_end) FROM reports WHERE schedule = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
}

/// Takes the right to build `schedule`'s window ending at `end`: true when this
/// transaction holds it and no such report is stored yet. The lock is released at
/// commit or rollback, so another collector asking meanwhile gets false.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    schedule: &str,
    end: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let key = format!("finwait-report:{schedule}:{}", end.timestamp());
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&key)
            .fetch_one(&mut **tx)
            .await?;
    if !locked {
        return Ok(false);
    }
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM reports WHERE schedule = $1 AND window_end = $2)",
    )
    .bind(schedule)
    .bind(end)
    .fetch_one(&mut **tx)
    .await?;
    Ok(!exists)
}

/// True when `schedule` has a stored report older than `end`: the next one is no
/// baseline.
pub async fn has_earlier(
    tx: &mut Transaction<'_, Postgres>,
    schedule: &str,
    end: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM reports WHERE schedule = $1 AND window_end < $2)",
    )
    .bind(schedule)
    .bind(end)
    .fetch_one(&mut **tx)
    .await
}

/// Stores a report and one delivery row per destination (`skipped` when `skip`);
/// returns its id. Nothing is stored when the window is already there.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    report: &Report,
    destinations: &[Destination],
    skip: bool,
) -> Result<Option<i64>, sqlx::Error> {
    let w = report.scope.window;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO reports (schedule, window_start, window_end, generated_at, baseline, changed, document) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (schedule, window_end) DO NOTHING RETURNING report_id",
    )
    .bind(&report.scope.schedule)
    .bind(w.start)
    .bind(w.end)
    .bind(report.generated_at)
    .bind(report.baseline)
    .bind(report.changed)
    .bind(sqlx::types::Json(report))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    for d in destinations {
        sqlx::query(
            "INSERT INTO report_deliveries (report_id, label, destination, state) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(d.label())
        .bind(sqlx::types::Json(d))
        .bind(if skip { "skipped" } else { "pending" })
        .execute(&mut **tx)
        .await?;
    }
    Ok(Some(id))
}

/// One stored report, with its id filled in.
pub async fn get(pool: &PgPool, id: i64) -> Result<Report, QueryError> {
    let doc: Option<sqlx::types::Json<Report>> =
        sqlx::query_scalar("SELECT document FROM reports WHERE report_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let mut r = doc
        .ok_or_else(|| QueryError::not_found("id", format!("no report {id}")))?
        .0;
    r.id = Some(id);
    Ok(r)
}

/// Stored reports, newest window first, optionally of one schedule.
pub async fn list(
    pool: &PgPool,
    schedule: Option<&str>,
    page: PageReq,
) -> Result<ReportsPage, QueryError> {
    let rows = sqlx::query(
        "SELECT r.report_id, r.schedule, r.window_start, r.window_end, r.generated_at, \
                r.baseline, r.changed, r.document -> 'now' AS now, \
                COALESCE((SELECT jsonb_object_agg(d.label, d.state) FROM report_deliveries d \
                          WHERE d.report_id = r.report_id), '{}'::jsonb) AS deliveries \
         FROM reports r WHERE ($1::text IS NULL OR r.schedule = $1) \
         ORDER BY r.window_end DESC, r.report_id DESC LIMIT $2 OFFSET $3",
    )
    .bind(schedule)
    .bind(page.fetch())
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    let mut reports = Vec::with_capacity(rows.len());
    for row in &rows {
        let now: sqlx::types::Json<Tally> = row.try_get("now")?;
        let deliveries: sqlx::types::Json<BTreeMap<String, String>> = row.try_get("deliveries")?;
        reports.push(ReportEntry {
            id: row.try_get("report_id")?,
            schedule: row.try_get("schedule")?,
            window: Window {
                start: row.try_get("window_start")?,
                end: row.try_get("window_end")?,
            },
            generated_at: row.try_get("generated_at")?,
            baseline: row.try_get("baseline")?,
            changed: row.try_get("changed")?,
            now: now.0,
            deliveries: deliveries.0,
        });
    }
    let next_page_token = page.finish(&mut reports);
    Ok(ReportsPage {
        reports,
        next_page_token,
    })
}

/// Deletes reports (and their deliveries) generated more than `days` ago.
pub async fn expire(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM reports WHERE generated_at < now() - $1 * interval '1 day'")
            .bind(days as i32)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

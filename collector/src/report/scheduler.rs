//! The collector's report task: every [`TICK`] it builds each schedule's due windows
//! (missed ones too, after a restart: see [`super::schedule::Schedule::due`]),
//! delivers what is due, and once an hour deletes reports past their retention.
//!
//! Several collectors on one database build each window once: the builder holds a
//! transaction-scoped advisory lock on (schedule, window end) while it builds and
//! stores, and the table's unique key refuses a second copy (see [`super::store::claim`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::schedule::{Schedule, Schedules};
use super::{Links, Spec, build, deliver, store};
use crate::query::Context;

/// How often schedules and deliveries are looked at.
pub const TICK: Duration = Duration::from_secs(5);

/// Runs until `stop`.
pub async fn run(ctx: Context, settings: Arc<Schedules>, stop: CancellationToken) {
    let links = Links {
        base: settings.public_url.clone(),
    };
    for s in &settings.schedules {
        tracing::info!(
            schedule = %s.name,
            cron = %s.cron_text,
            time_zone = %s.tz.name(),
            window_s = s.window.num_seconds(),
            destinations = s.destinations.len(),
            next = ?s.next(Utc::now()),
            "report schedule"
        );
    }
    let mut tick = tokio::time::interval(TICK);
    let mut expired_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A report being built when the collector stops is abandoned (its transaction
        // rolls back; the next start builds it), so shutdown never waits on a build.
        let pass = async {
            for s in &settings.schedules {
                if let Err(e) = catch_up(&ctx, &links, s, Utc::now()).await {
                    tracing::warn!(schedule = %s.name, error = %e, "building scheduled reports failed; retrying next tick");
                }
            }
            if let Err(e) = deliver::deliver_due(&ctx.pool, &settings, 100).await {
                tracing::warn!(error = %e, "report delivery pass failed");
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pass => {}
        }
        if expired_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            match store::expire(&ctx.pool, settings.retention_days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reports = n, "deleted reports past their retention"),
                Err(e) => tracing::warn!(error = %e, "report retention failed"),
            }
            expired_at = Some(Instant::now());
        }
    }
}

/// Builds every due window of `s` as of `now`; returns the ids stored.
pub async fn catch_up(
    ctx: &Context,
    links: &Links,
    s: &Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<i64>> {
    let last = store::last_window_end(&ctx.pool, &s.name).await?;
    let mut ids = Vec::new();
    for end in s.due(last, now) {
        if let Some(id) = produce(ctx, links, s, end).await? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Builds and stores `s`'s window ending at `end`, unless another collector has it.
#[tracing::instrument(name = "report_produce", skip_all, fields(schedule = %s.name, end = %end))]
pub async fn produce(
    ctx: &Context,
    links: &Links,
    s: &Schedule,
    end: DateTime<Utc>,
) -> anyhow::Result<Option<i64>> {
    let mut tx = ctx.pool.begin().await?;
    if !store::claim(&mut tx, &s.name, end).await? {
        return Ok(None);
    }
    let baseline = !store::has_earlier(&mut tx, &s.name, end).await?;
    let spec = Spec {
        schedule: s.name.clone(),
        window: s.window_ending(end),
        tz: s.tz,
        hosts: s.hosts.clone(),
        services: s.services.clone(),
    };
    let report = build(ctx, links, &spec, baseline)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let skip = s.only_changed && !report.changed;
    let id = store::insert(&mut tx, &report, &s.destinations, skip).await?;
    tx.commit().await?;
    if let Some(id) = id {
        tracing::info!(
            report = id,
            baseline,
            changed = report.changed,
            delivered = !skip,
            "scheduled report stored"
        );
    }
    Ok(id)
}

//! Reports as questions: the stored list, one stored report in a format, and one
//! built on demand for any past window (the same document a schedule stores).

use chrono::{Duration, Utc};
use chrono_tz::Tz;
use finwait_vocab::report::{ReportFormat, ReportsPage, Window};
use serde::Serialize;

use super::{Context, Params, QueryError, Question};
use crate::report::{self, Links, Spec, render::render, store};

/// A report rendered in one format.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// The format.
    pub format: ReportFormat,
    /// The text.
    pub body: String,
}

/// `GET /api/v1/reports`: stored reports, newest first.
#[derive(Debug)]
pub struct ReportsQuery {
    schedule: Option<String>,
    page: super::PageReq,
}

impl Question for ReportsQuery {
    const NAME: &'static str = "reports";
    const PARAMS: &'static [&'static str] = &["schedule", "limit", "page_token"];
    type Answer = ReportsPage;

    fn parse(p: &Params, _ctx: &Context) -> Result<Self, QueryError> {
        Ok(ReportsQuery {
            schedule: p.text("schedule"),
            page: p.page()?,
        })
    }

    #[tracing::instrument(name = "query_reports", skip_all)]
    async fn run(&self, ctx: &Context) -> Result<ReportsPage, QueryError> {
        store::list(&ctx.pool, self.schedule.as_deref(), self.page).await
    }
}

fn format(p: &Params) -> Result<ReportFormat, QueryError> {
    Ok(p.parsed("format")?.unwrap_or(ReportFormat::Json))
}

/// `GET /api/v1/reports/{id}`: one stored report.
#[derive(Debug)]
pub struct ReportQuery {
    id: i64,
    format: ReportFormat,
}

impl Question for ReportQuery {
    const NAME: &'static str = "report";
    const PARAMS: &'static [&'static str] = &["id", "format"];
    type Answer = Rendered;

    fn parse(p: &Params, _ctx: &Context) -> Result<Self, QueryError> {
        Ok(ReportQuery {
            id: p
                .number("id", 1..=i64::MAX)?
                .ok_or_else(|| QueryError::bad("id", "required"))?,
            format: format(p)?,
        })
    }

    #[tracing::instrument(name = "query_report", skip_all, fields(id = self.id))]
    async fn run(&self, ctx: &Context) -> Result<Rendered, QueryError> {
        let r = store::get(&ctx.pool, self.id).await?;
        Ok(Rendered {
            format: self.format,
            body: render(&r, self.format),
        })
    }
}

/// `GET /api/v1/reports/run`: a report built now for any window, not stored.
#[derive(Debug)]
pub struct RunReportQuery {
    spec: Spec,
    format: ReportFormat,
}

/// A list parameter: comma-separated values.
fn list(p: &Params, k: &str) -> Vec<String> {
    p.text(k)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Question for RunReportQuery {
    const NAME: &'static str = "report_run";
    const PARAMS: &'static [&'static str] =
        &["since", "window", "host", "service", "time_zone", "format"];
    type Answer = Rendered;

    /// Defaults: a 7-day window ending now; UTC days.
    fn parse(p: &Params, _ctx: &Context) -> Result<Self, QueryError> {
        let secs = p.seconds("window")?.unwrap_or(7.0 * 86_400.0);
        if !(60.0..=366.0 * 86_400.0).contains(&secs) {
            return Err(QueryError::bad("window", "must be between 1m and 366d"));
        }
        let length = Duration::milliseconds((secs * 1000.0) as i64);
        let now = Utc::now();
        let start = p.instant("since")?.unwrap_or(now - length);
        let end = start + length;
        if end > now + Duration::minutes(1) {
            return Err(QueryError::bad(
                "since",
                format!(
                    "the window would end in the future ({end}); give an earlier since or a shorter window"
                ),
            ));
        }
        let tz: Tz = match p.text("time_zone") {
            None => Tz::UTC,
            Some(z) => z.parse().map_err(|_| {
                QueryError::bad(
                    "time_zone",
                    format!("{z:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)"),
                )
            })?,
        };
        Ok(RunReportQuery {
            spec: Spec {
                schedule: "adhoc".into(),
                window: Window { start, end },
                tz,
                hosts: list(p, "host"),
                services: list(p, "service"),
            },
            format: format(p)?,
        })
    }

    /// A report reads a window's history: it gets [`report::BUILD_TIMEOUT`].
    fn budget(_ctx: &Context) -> std::time::Duration {
        report::BUILD_TIMEOUT + std::time::Duration::from_secs(10)
    }

    #[tracing::instrument(name = "query_report_run", skip_all, fields(start = %self.spec.window.start, end = %self.spec.window.end))]
    async fn run(&self, ctx: &Context) -> Result<Rendered, QueryError> {
        let links = Links {
            base: ctx.public_url.as_deref().map(str::to_owned),
        };
        let r = report::build(ctx, &links, &self.spec, false).await?;
        Ok(Rendered {
            format: self.format,
            body: render(&r, self.format),
        })
    }
}

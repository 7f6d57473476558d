//! `fleet`: the whole fleet over time from the once-a-minute rollup (per-state totals,
//! hosts reporting and silent, open leaks), for the dashboard's charts and anyone who
//! wants the same numbers.

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::{FleetPage, FleetPoint};
use sqlx::Row;

use super::{Context, PageReq, Params, QueryError, Question};

/// Parameters `fleet` accepts.
pub const PARAMS: &[&str] = &["since", "until", "step", "limit", "page_token"];

/// Points in a span when no step is given.
const DEFAULT_POINTS: i64 = 120;

/// The fleet over a span.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetQuery {
    /// Span start.
    pub since: DateTime<Utc>,
    /// Span end.
    pub until: DateTime<Utc>,
    /// Bucket width, seconds (at least a minute: the rollup's grain).
    pub step_s: i64,
    /// The page of points.
    pub page: PageReq,
}

impl Question for FleetQuery {
    const NAME: &'static str = "fleet";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = FleetPage;

    /// Reads and checks the parameters: since 24 h ago until now, about 120 points.
    fn parse(p: &Params, _ctx: &Context) -> Result<FleetQuery, QueryError> {
        let (since, until, step_s) = p.span(DEFAULT_POINTS, 60)?;
        Ok(FleetQuery {
            since,
            until,
            step_s,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_fleet", skip_all)]
    async fn run(&self, ctx: &Context) -> Result<FleetPage, QueryError> {
        let rows = sqlx::query(include_str!("../sql/fleet.sql"))
            .bind(self.since)
            .bind(self.until)
            .bind(self.step_s as f64)
            .fetch_all(&ctx.pool)
            .await?;
        let mut points = Vec::with_capacity(rows.len());
        for row in &rows {
            let states: serde_json::Value = row.try_get("states")?;
            let states = states
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((TcpState::from_number(k.parse().ok()?)?, v.as_i64()?)))
                .collect();
            points.push(FleetPoint {
                t: row.try_get("t")?,
                states,
                hosts_reporting: i64::from(row.try_get::<i32, _>("hosts_reporting")?),
                hosts_silent: i64::from(row.try_get::<i32, _>("hosts_silent")?),
                open_leaks: i64::from(row.try_get::<i32, _>("open_leaks")?),
            });
        }
        let (points, next_page_token) = self.page.slice(points);
        Ok(FleetPage {
            points,
            step_s: self.step_s,
            next_page_token,
        })
    }
}

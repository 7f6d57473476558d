//! `timeline`: a host's per-state socket counts over time, one point per bucket.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::{Point, TimelinePage};
use sqlx::Row;

use super::{Context, PageReq, Params, QueryError, Question, host_id};

/// Parameters `timeline` accepts.
pub const PARAMS: &[&str] = &["host", "since", "until", "step", "limit", "page_token"];

/// Buckets in a span when no step is given.
const DEFAULT_POINTS: i64 = 120;

/// A host's counts over a span.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineQuery {
    /// Hostname.
    pub host: String,
    /// Span start.
    pub since: DateTime<Utc>,
    /// Span end.
    pub until: DateTime<Utc>,
    /// Bucket width, seconds.
    pub step_s: i64,
    /// The page of points.
    pub page: PageReq,
}

impl Question for TimelineQuery {
    const NAME: &'static str = "timeline";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = TimelinePage;

    /// Reads and checks the parameters: since 24 h ago until now, about 120 buckets.
    fn parse(p: &Params, _ctx: &Context) -> Result<TimelineQuery, QueryError> {
        let (since, until, step_s) = p.span(DEFAULT_POINTS, 1)?;
        Ok(TimelineQuery {
            host: p.required("host")?,
            since,
            until,
            step_s,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_timeline", skip_all, fields(host = ?self.host))]
    async fn run(&self, ctx: &Context) -> Result<TimelinePage, QueryError> {
        let host_id = host_id(&ctx.pool, &self.host).await?;
        let rows = sqlx::query(include_str!("../sql/timeline.sql"))
            .bind(host_id)
            .bind(self.since)
            .bind(self.until)
            .bind(self.step_s as f64)
            .fetch_all(&ctx.pool)
            .await?;
        let mut points: Vec<Point> = Vec::new();
        for row in &rows {
            let t: DateTime<Utc> = row.try_get("t")?;
            let n: i16 = row.try_get("state")?;
            let Some(state) = TcpState::from_number(n) else {
                continue;
            };
            let n: i64 = row.try_get("n")?;
            match points.last_mut() {
                Some(p) if p.t == t => {
                    p.states.insert(state, n);
                }
                _ => points.push(Point {
                    t,
                    states: BTreeMap::from([(state, n)]),
                }),
            }
        }
        let (points, next_page_token) = self.page.slice(points);
        Ok(TimelinePage {
            host: self.host.clone(),
            step_s: self.step_s,
            points,
            next_page_token,
        })
    }
}

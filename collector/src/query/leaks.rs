//! Leak correlation: which sockets are leaking, and who is on the other end.
//!
//! A CLOSE_WAIT that lasts is the signature of a process that never closed a
//! connection its peer closed. Its peer is the FIN_WAIT2 (or FIN_WAIT1) on another host
//! with the reversed tuple at overlapping times (`exact`); through NAT only the client
//! endpoint survives (`nat`); with no peer seen (peer not instrumented, or its orphaned
//! FIN_WAIT2 already expired after tcp_fin_timeout) a CLOSE_WAIT older than the
//! threshold is a leak on its own (`one_sided`). Half-closed FIN_WAIT2 (no timer, still
//! held) and LAST_ACK that does not clear are reported too, and TIME_WAIT pressure
//! against a host's ephemeral port range beside them. Ended leaks keep their end time
//! (`until`). The SQL is in `sql/leaks.sql` and `sql/time_wait_pressure.sql`.

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{Leak, LeaksPage, Side, TimeWaitPressure};
use finwait_vocab::{Confidence, LeakKind};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::socket::Cols;
use super::{Context, PageReq, Params, QueryError, Question, TIME_WAIT_PRESSURE_RATIO};

/// Parameters `leaks` accepts.
pub const PARAMS: &[&str] = &[
    "since",
    "min_age",
    "host",
    "process",
    "service",
    "kind",
    "confidence",
    "limit",
    "page_token",
];

/// What to look for.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakQuery {
    /// Ignore lifetimes last seen before this.
    pub since: DateTime<Utc>,
    /// A holder must have stayed this long in its state (seconds).
    pub min_age_s: f64,
    /// Allowed gap between holder and peer lifetimes (seconds).
    pub slack_s: f64,
    /// Only this hostname.
    pub host: Option<String>,
    /// Only holders whose process has this command name.
    pub process: Option<String>,
    /// Only holders of this service.
    pub service: Option<String>,
    /// Only this kind.
    pub kind: Option<LeakKind>,
    /// Only this confidence.
    pub confidence: Option<Confidence>,
    /// Answer as of this instant (None: now): lifetimes first seen later are ignored,
    /// and one that lasted past it is open then. Reports use it for past windows.
    pub until: Option<DateTime<Utc>>,
    /// The page.
    pub page: PageReq,
}

impl LeakQuery {
    /// Every leak seen since `since`, with the collector's threshold and slack, no
    /// filter, and the longest page: the start of a page's own question.
    pub fn since(ctx: &Context, since: DateTime<Utc>) -> LeakQuery {
        LeakQuery {
            since,
            min_age_s: ctx.leak_threshold_s,
            slack_s: ctx.slack_s,
            host: None,
            process: None,
            service: None,
            kind: None,
            confidence: None,
            until: None,
            page: PageReq {
                offset: 0,
                limit: super::MAX_LIMIT,
            },
        }
    }
}

impl Question for LeakQuery {
    const NAME: &'static str = "leaks";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = LeaksPage;

    /// Reads and checks the parameters; defaults: since 24 h ago, the collector's
    /// threshold and slack.
    fn parse(p: &Params, ctx: &Context) -> Result<LeakQuery, QueryError> {
        Ok(LeakQuery {
            since: p
                .instant("since")?
                .unwrap_or_else(|| Utc::now() - chrono::Duration::hours(24)),
            min_age_s: p.seconds("min_age")?.unwrap_or(ctx.leak_threshold_s),
            slack_s: ctx.slack_s,
            host: p.text("host"),
            process: p.text("process"),
            service: p.text("service"),
            kind: p.parsed("kind")?,
            confidence: p.parsed("confidence")?,
            until: None,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_leaks", skip_all, fields(host = ?self.host, process = ?self.process))]
    async fn run(&self, ctx: &Context) -> Result<LeaksPage, QueryError> {
        let mut leaks = leaks(&ctx.pool, self).await?;
        let next_page_token = self.page.finish(&mut leaks);
        let time_wait_pressure =
            time_wait_pressure(&ctx.pool, self.since, self.until, self.host.as_deref(), 100)
                .await?;
        Ok(LeaksPage {
            leaks,
            time_wait_pressure,
            next_page_token,
        })
    }
}

fn side(row: &PgRow, prefix: &str) -> Result<Option<Side>, sqlx::Error> {
    let c = Cols { row, prefix };
    let Some(host) = c.get::<Option<String>>("hostname")? else {
        return Ok(None);
    };
    let owner = c.owners()?.into_iter().next();
    let (service, container) = c.service(owner.as_ref())?;
    let first: DateTime<Utc> = c.get("first_seen")?;
    let last: DateTime<Utc> = c.get("last_seen")?;
    Ok(Some(Side {
        host,
        netns: c.get("netns")?,
        pid: owner.as_ref().map(|o| o.pid),
        fd: owner.as_ref().map(|o| o.fd),
        comm: owner.as_ref().map(|o| o.comm.clone()),
        cmdline: owner.map(|o| o.cmdline),
        service,
        container,
        state: c.state()?,
        local: c.endpoint("local")?,
        remote: c.endpoint("remote")?,
        since: first,
        age_s: (last - first).num_seconds(),
        rx_queue: c.get("rx_queue")?,
        until: c.get("ended")?,
    }))
}

/// A word the SQL wrote, read back as its vocabulary type.
fn word<T: std::str::FromStr<Err = String>>(row: &PgRow, col: &str) -> Result<T, sqlx::Error> {
    row.try_get::<&str, _>(col)?
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))
}

/// Finds leaks: one page, plus one row more when another page follows.
pub async fn leaks(pool: &PgPool, q: &LeakQuery) -> Result<Vec<Leak>, sqlx::Error> {
    Ok(lives(pool, q).await?.into_iter().map(|l| l.leak).collect())
}

/// A leak with the last instant its holder was seen (the query's `until` at most):
/// what reports measure time with, to the microsecond.
#[derive(Debug, Clone)]
pub struct LeakLife {
    /// The leak as the API answers it.
    pub leak: Leak,
    /// Last seen in its state.
    pub last_seen: DateTime<Utc>,
}

/// [`leaks`], with each holder's last-seen instant, on any executor (reports run it
/// in their own transaction).
pub async fn lives<'e>(
    db: impl sqlx::PgExecutor<'e>,
    q: &LeakQuery,
) -> Result<Vec<LeakLife>, sqlx::Error> {
    let rows = sqlx::query(include_str!("../sql/leaks.sql"))
        .bind(q.since)
        .bind(q.min_age_s)
        .bind(q.slack_s)
        .bind(&q.host)
        .bind(&q.process)
        .bind(q.kind.map(LeakKind::name))
        .bind(q.confidence.map(Confidence::name))
        .bind(q.page.fetch())
        .bind(q.page.offset)
        .bind(&q.service)
        .bind(q.until)
        .fetch_all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(holder) = side(row, "")? else {
            continue;
        };
        let kind: LeakKind = word(row, "kind")?;
        out.push(LeakLife {
            last_seen: row.try_get("last_seen")?,
            leak: Leak {
                kind,
                confidence: word(row, "confidence")?,
                until: holder.until,
                peer: side(row, "p_")?,
                holder,
                hint: kind.hint().to_owned(),
            },
        });
    }
    Ok(out)
}

/// TIME_WAIT pressure since `since` (and before `until`, if given), worst first.
pub async fn time_wait_pressure<'e>(
    db: impl sqlx::PgExecutor<'e>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    host: Option<&str>,
    limit: i64,
) -> Result<Vec<TimeWaitPressure>, sqlx::Error> {
    let rows = sqlx::query(include_str!("../sql/time_wait_pressure.sql"))
        .bind(since)
        .bind(host)
        .bind(TIME_WAIT_PRESSURE_RATIO)
        .bind(limit)
        .bind(until)
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| pressure_from_row(r, "")).collect()
}

/// Decodes the `{prefix}`-named columns of `sql/time_wait_pressure.sql`'s shape
/// (`hostname, local_addr, remote_addr, remote_port, count, ports, at`).
pub(super) fn pressure_from_row(
    row: &PgRow,
    prefix: &str,
) -> Result<TimeWaitPressure, sqlx::Error> {
    let c = Cols { row, prefix };
    let count: i64 = c.get("count")?;
    let ports: i64 = c.get("ports")?;
    Ok(TimeWaitPressure {
        host: c.get("hostname")?,
        local_addr: c.get("local_addr")?,
        remote: c.endpoint("remote")?,
        count,
        ports,
        ratio: if ports > 0 {
            count as f64 / ports as f64
        } else {
            0.0
        },
        at: c.get("at")?,
    })
}

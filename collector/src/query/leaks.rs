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
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::socket::Cols;
use super::{
    Context, NextPage, PageReq, Params, QueryError, Question, TIME_WAIT_PRESSURE_RATIO, state_name,
};

/// Parameters `leaks` accepts.
pub const PARAMS: &[&str] = &[
    "since",
    "min_age",
    "host",
    "process",
    "kind",
    "confidence",
    "limit",
    "page_token",
];

/// Leak kinds.
pub const KINDS: &[&str] = &["close_wait", "half_closed_wait", "last_ack_stuck"];
/// Confidences.
pub const CONFIDENCES: &[&str] = &["exact", "nat", "one_sided"];

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
    /// Only this kind.
    pub kind: Option<&'static str>,
    /// Only this confidence.
    pub confidence: Option<&'static str>,
    /// The page.
    pub page: PageReq,
}

/// One end of a leaking connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Hostname.
    pub host: String,
    /// Network namespace inode.
    pub netns: i64,
    /// Holding process (first holder), if any.
    pub pid: Option<u32>,
    /// Its command name.
    pub comm: Option<String>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// Its descriptor.
    pub fd: Option<u32>,
    /// TCP state.
    pub state: &'static str,
    /// Local `addr:port`.
    pub local: String,
    /// Remote `addr:port`.
    pub remote: String,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// Seconds in this state (up to the last report, or to its end).
    pub age_s: i64,
    /// Unread bytes.
    pub rx_queue: i64,
    /// When it left this state; absent while it lasts.
    pub until: Option<DateTime<Utc>>,
}

/// A leak verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leak {
    /// `close_wait`, `half_closed_wait` or `last_ack_stuck`.
    pub kind: &'static str,
    /// `exact`, `nat` or `one_sided`.
    pub confidence: &'static str,
    /// The socket whose process is at fault.
    pub holder: Side,
    /// The other end, when seen.
    pub peer: Option<Side>,
    /// When the leak ended (the holder closed or exited); absent while it lasts.
    pub until: Option<DateTime<Utc>>,
    /// One line on what it means and what fixes it.
    pub hint: &'static str,
}

/// TIME_WAIT towards one destination filling much of a host's ephemeral port range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeWaitPressure {
    /// Hostname.
    pub host: String,
    /// Local address of the TIME_WAIT sockets.
    pub local_addr: String,
    /// Their destination `addr:port`.
    pub remote: String,
    /// Peak TIME_WAIT count towards it.
    pub count: i64,
    /// Size of the host's ephemeral port range.
    pub ports: i64,
    /// `count / ports`.
    pub ratio: f64,
    /// Last time it was this high.
    pub at: DateTime<Utc>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaksAnswer {
    /// The leaks, oldest first.
    pub leaks: Vec<Leak>,
    /// TIME_WAIT pressure in the same window, worst first.
    pub time_wait_pressure: Vec<TimeWaitPressure>,
    /// Paging.
    #[serde(flatten)]
    pub next: NextPage,
}

impl Question for LeakQuery {
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = LeaksAnswer;

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
            kind: p.choice("kind", KINDS)?,
            confidence: p.choice("confidence", CONFIDENCES)?,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_leaks", skip_all, fields(host = ?self.host, process = ?self.process), err)]
    async fn run(&self, ctx: &Context) -> Result<LeaksAnswer, QueryError> {
        let mut leaks = leaks(&ctx.pool, self).await?;
        let next_page_token = self.page.finish(&mut leaks);
        let time_wait_pressure =
            time_wait_pressure(&ctx.pool, self.since, self.host.as_deref(), 100).await?;
        Ok(LeaksAnswer {
            leaks,
            time_wait_pressure,
            next: NextPage { next_page_token },
        })
    }
}

fn side(row: &PgRow, prefix: &str) -> Result<Option<Side>, sqlx::Error> {
    let c = Cols { row, prefix };
    let Some(host) = c.get::<Option<String>>("hostname")? else {
        return Ok(None);
    };
    let owner = c.owners()?.into_iter().next();
    let first: DateTime<Utc> = c.get("first_seen")?;
    let last: DateTime<Utc> = c.get("last_seen")?;
    Ok(Some(Side {
        host,
        netns: c.get("netns")?,
        pid: owner.as_ref().map(|o| o.pid),
        fd: owner.as_ref().map(|o| o.fd),
        comm: owner.as_ref().map(|o| o.comm.clone()),
        cmdline: owner.map(|o| o.cmdline),
        state: state_name(c.get("state")?),
        local: c.endpoint("local")?,
        remote: c.endpoint("remote")?,
        since: first,
        age_s: (last - first).num_seconds(),
        rx_queue: c.get("rx_queue")?,
        until: c.get("ended")?,
    }))
}

/// The one-line hint for a leak kind.
pub fn hint(kind: &str) -> &'static str {
    match kind {
        "close_wait" => {
            "the holding process never called close() after its peer closed: fix its close path \
             (keepalive sysctls do not clear CLOSE_WAIT)"
        }
        "half_closed_wait" => {
            "this side shut down writing and still holds the socket, waiting for a peer that never closes its end"
        }
        _ => "our FIN is never acknowledged: the peer is gone or packets are dropped on the way",
    }
}

fn known(v: &str, choices: &[&'static str], default: &'static str) -> &'static str {
    choices
        .iter()
        .find(|c| **c == v)
        .copied()
        .unwrap_or(default)
}

/// Finds leaks: one page, plus one row more when another page follows.
pub async fn leaks(pool: &PgPool, q: &LeakQuery) -> Result<Vec<Leak>, sqlx::Error> {
    let rows = sqlx::query(include_str!("../sql/leaks.sql"))
        .bind(q.since)
        .bind(q.min_age_s)
        .bind(q.slack_s)
        .bind(&q.host)
        .bind(&q.process)
        .bind(q.kind)
        .bind(q.confidence)
        .bind(q.page.fetch())
        .bind(q.page.offset)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(holder) = side(row, "")? else {
            continue;
        };
        let kind = known(row.try_get("kind")?, KINDS, "last_ack_stuck");
        out.push(Leak {
            kind,
            confidence: known(row.try_get("confidence")?, CONFIDENCES, "one_sided"),
            until: holder.until,
            peer: side(row, "p_")?,
            holder,
            hint: hint(kind),
        });
    }
    Ok(out)
}

/// TIME_WAIT pressure since `since`, worst first.
pub async fn time_wait_pressure(
    pool: &PgPool,
    since: DateTime<Utc>,
    host: Option<&str>,
    limit: i64,
) -> Result<Vec<TimeWaitPressure>, sqlx::Error> {
    let rows = sqlx::query(include_str!("../sql/time_wait_pressure.sql"))
        .bind(since)
        .bind(host)
        .bind(TIME_WAIT_PRESSURE_RATIO)
        .bind(limit)
        .fetch_all(pool)
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

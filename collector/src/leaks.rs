//! Leak correlation: which sockets are leaking, and who is on the other end.
//!
//! A CLOSE_WAIT that lasts is the signature of a process that never closed a
//! connection its peer closed. Its peer is the FIN_WAIT2 (or FIN_WAIT1) on another host
//! with the reversed tuple at overlapping times (`exact`); through NAT only the client
//! endpoint survives (`nat`); with no peer seen (peer not instrumented, or its orphaned
//! FIN_WAIT2 already expired after tcp_fin_timeout) a CLOSE_WAIT older than the
//! threshold is a leak on its own (`one_sided`). Half-closed FIN_WAIT2 (no timer, still
//! held) and LAST_ACK that does not clear are reported too. Ended leaks keep their end
//! time (`until`). The SQL is in `sql/leaks.sql`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::model::OwnerRecord;

/// What to look for.
#[derive(Debug, Clone)]
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
    /// At most this many.
    pub limit: i64,
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

/// The name of a kernel state number.
pub fn state_name(n: i16) -> &'static str {
    match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

fn endpoint(addr: &str, port: i32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn side(row: &PgRow, p: &str) -> Result<Option<Side>, sqlx::Error> {
    let col = |c: &str| format!("{p}{c}");
    let host: Option<String> = row.try_get(col("hostname").as_str())?;
    let Some(host) = host else {
        return Ok(None);
    };
    let owners: serde_json::Value = row.try_get(col("owners").as_str())?;
    let owner: Option<OwnerRecord> = serde_json::from_value::<Vec<OwnerRecord>>(owners)
        .ok()
        .and_then(|o| o.into_iter().next());
    let first: DateTime<Utc> = row.try_get(col("first_seen").as_str())?;
    let last: DateTime<Utc> = row.try_get(col("last_seen").as_str())?;
    let state: i16 = row.try_get(col("state").as_str())?;
    Ok(Some(Side {
        host,
        netns: row.try_get(col("netns").as_str())?,
        pid: owner.as_ref().map(|o| o.pid),
        comm: owner.as_ref().map(|o| o.comm.clone()),
        cmdline: owner.as_ref().map(|o| o.cmdline.clone()),
        fd: owner.as_ref().map(|o| o.fd),
        state: state_name(state),
        local: endpoint(
            &row.try_get::<String, _>(col("local_addr").as_str())?,
            row.try_get(col("local_port").as_str())?,
        ),
        remote: endpoint(
            &row.try_get::<String, _>(col("remote_addr").as_str())?,
            row.try_get(col("remote_port").as_str())?,
        ),
        since: first,
        age_s: (last - first).num_seconds(),
        rx_queue: row.try_get(col("rx_queue").as_str())?,
        until: row.try_get(col("ended").as_str())?,
    }))
}

const CLOSE_WAIT_HINT: &str = "the holding process never called close() after its peer closed: fix its close path \
     (keepalive sysctls do not clear CLOSE_WAIT)";
const HALF_CLOSED_HINT: &str = "this side shut down writing and still holds the socket, waiting for a peer that never closes its end";
const LAST_ACK_HINT: &str =
    "our FIN is never acknowledged: the peer is gone or packets are dropped on the way";

/// Finds leaks.
#[tracing::instrument(skip_all, err)]
pub async fn leaks(pool: &PgPool, q: &LeakQuery) -> Result<Vec<Leak>, sqlx::Error> {
    let rows = sqlx::query(include_str!("sql/leaks.sql"))
        .bind(q.since)
        .bind(q.min_age_s)
        .bind(q.slack_s)
        .bind(&q.host)
        .bind(&q.process)
        .bind(q.limit)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(holder) = side(row, "")? else {
            continue;
        };
        let peer = side(row, "p_")?;
        let confidence: Option<String> = row.try_get("confidence")?;
        let (kind, hint) = match holder.state {
            "CLOSE_WAIT" => ("close_wait", CLOSE_WAIT_HINT),
            "FIN_WAIT2" => ("half_closed_wait", HALF_CLOSED_HINT),
            _ => ("last_ack_stuck", LAST_ACK_HINT),
        };
        out.push(Leak {
            kind,
            confidence: match confidence.as_deref() {
                Some("exact") => "exact",
                Some("nat") => "nat",
                _ => "one_sided",
            },
            until: holder.until,
            holder,
            peer,
            hint,
        });
    }
    // A half-closed FIN_WAIT2 that is already the peer of a reported CLOSE_WAIT is that
    // leak's other end, not a second leak.
    let peers: Vec<(String, String, String)> = out
        .iter()
        .filter_map(|l| {
            l.peer
                .as_ref()
                .map(|p| (p.host.clone(), p.local.clone(), p.remote.clone()))
        })
        .collect();
    out.retain(|l| {
        l.kind != "half_closed_wait"
            || !peers.contains(&(
                l.holder.host.clone(),
                l.holder.local.clone(),
                l.holder.remote.clone(),
            ))
    });
    Ok(out)
}

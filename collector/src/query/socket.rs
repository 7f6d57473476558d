//! The socket view shared by `sockets` and `who`, TCP state names, and the decoding
//! of a socket's columns from a result row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::model::OwnerRecord;

/// A socket lifetime in one state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Socket {
    /// Hostname.
    pub host: String,
    /// Network namespace inode.
    pub netns: i64,
    /// TCP state name.
    pub state: &'static str,
    /// Local `addr:port`.
    pub local: String,
    /// Remote `addr:port`.
    pub remote: String,
    /// First holder's pid.
    pub pid: Option<u32>,
    /// First holder's command name.
    pub comm: Option<String>,
    /// First holder's command line.
    pub cmdline: Option<String>,
    /// First holder's descriptor.
    pub fd: Option<u32>,
    /// Every holder.
    pub owners: Vec<OwnerRecord>,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// Seconds in this state up to the last report, the instant asked, or its end.
    pub age_s: i64,
    /// Unread bytes.
    pub rx_queue: i64,
    /// Unsent or unacknowledged bytes.
    pub tx_queue: i64,
    /// Socket inode (0: no file, e.g. TIME_WAIT or orphaned).
    pub inode: i64,
    /// Owning uid.
    pub uid: i64,
    /// Pending timer: off, on, keepalive, timewait or probe.
    pub timer: &'static str,
    /// When it left this state; null while it lasts.
    pub until: Option<DateTime<Utc>>,
}

impl Socket {
    /// Decodes the columns named `{prefix}hostname`, `{prefix}netns`, ... (see
    /// `sql/sockets.sql`); `None` when `{prefix}hostname` is null (an unmatched side).
    pub fn from_row(row: &PgRow, prefix: &str) -> Result<Option<Socket>, sqlx::Error> {
        let c = Cols { row, prefix };
        let Some(host) = c.get::<Option<String>>("hostname")? else {
            return Ok(None);
        };
        let owners = c.owners()?;
        let first = owners.first();
        Ok(Some(Socket {
            host,
            netns: c.get("netns")?,
            state: state_name(c.get("state")?),
            local: c.endpoint("local")?,
            remote: c.endpoint("remote")?,
            pid: first.map(|o| o.pid),
            comm: first.map(|o| o.comm.clone()),
            cmdline: first.map(|o| o.cmdline.clone()),
            fd: first.map(|o| o.fd),
            since: c.get("first_seen")?,
            age_s: c.get("age_s")?,
            rx_queue: c.get("rx_queue")?,
            tx_queue: c.get("tx_queue")?,
            inode: c.get("inode")?,
            uid: c.get("uid")?,
            timer: timer_name(c.get("timer")?),
            until: c.get("ended")?,
            owners,
        }))
    }
}

/// The columns of one side of a result row: `{prefix}{name}`.
pub(crate) struct Cols<'r> {
    /// The row.
    pub row: &'r PgRow,
    /// Prepended to every column name.
    pub prefix: &'r str,
}

impl Cols<'_> {
    /// Column `{prefix}{name}`.
    pub fn get<'a, T>(&'a self, name: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row.try_get(format!("{}{name}", self.prefix).as_str())
    }

    /// `addr:port` from `{prefix}{which}_addr` (text) and `{prefix}{which}_port`.
    pub fn endpoint(&self, which: &str) -> Result<String, sqlx::Error> {
        Ok(endpoint(
            &self.get::<String>(&format!("{which}_addr"))?,
            self.get(&format!("{which}_port"))?,
        ))
    }

    /// The holders in `{prefix}owners` (none when the JSON is not an owner list).
    pub fn owners(&self) -> Result<Vec<OwnerRecord>, sqlx::Error> {
        let owners: serde_json::Value = self.get("owners")?;
        Ok(serde_json::from_value(owners).unwrap_or_default())
    }
}

/// `addr:port`, IPv6 as `[addr]:port`.
pub fn endpoint(addr: &str, port: i32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

const STATES: [&str; 11] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
];

/// The name of a kernel state number.
pub fn state_name(n: i16) -> &'static str {
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| STATES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The kernel state number of a name: any case, `-` or `_`, `ESTAB` and the short
/// forms `ss` prints (`FIN-WAIT-2`, `SYN-RECV`, ...) included.
pub fn parse_state(name: &str) -> Option<i16> {
    let norm: String = name
        .trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if norm == "ESTAB" {
        return Some(1);
    }
    STATES
        .iter()
        .position(|s| s.replace('_', "") == norm)
        .and_then(|i| i16::try_from(i + 1).ok())
}

/// The name of a stored timer kind.
pub fn timer_name(n: i16) -> &'static str {
    match n {
        1 => "on",
        2 => "keepalive",
        3 => "timewait",
        4 => "probe",
        _ => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip_in_every_spelling() {
        for n in 1..=11 {
            assert_eq!(parse_state(state_name(n)), Some(n));
            assert_eq!(
                parse_state(&state_name(n).to_lowercase().replace('_', "-")),
                Some(n)
            );
        }
        assert_eq!(parse_state("estab"), Some(1));
        assert_eq!(parse_state("FIN-WAIT-2"), Some(5));
        assert_eq!(parse_state("nonsense"), None);
        assert_eq!(state_name(0), "UNKNOWN");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(endpoint("fd77::a", 80), "[fd77::a]:80");
    }
}

//! The questions `finwait-bench history` times: each is a finwait API path and the peer
//! an operator would run instead (hand-written SQL through `psql`, in `peer/*.sql`),
//! with the JSON list that says how big finwait's answer was. Adding an endpoint is
//! adding an entry to [`all`].

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, Row};

/// One timed question.
#[derive(Debug, Clone)]
pub struct Query {
    /// Short name, as given to `--queries`.
    pub name: &'static str,
    /// Path and query string under the collector's address.
    pub path: String,
    /// Key of the answer's list (its length is the row count reported).
    pub list: &'static str,
    /// File name of the peer's SQL (under `peer/`).
    pub peer_file: &'static str,
    /// The peer's SQL.
    pub peer_sql: &'static str,
    /// psql variables the peer's SQL uses.
    pub peer_vars: Vec<(&'static str, String)>,
}

/// Every query name, in the order they run and are reported.
pub const NAMES: [&str; 8] = [
    "leaks",
    "groups",
    "who",
    "who-at",
    "sockets-at",
    "hosts",
    "timeline",
    "report",
];

/// The peer's fixed cost (start psql, connect, `SELECT 1`), reported under the table.
pub const FLOOR_SQL: &str = include_str!("peer/floor.sql");

/// What the questions are about, picked from the generated data.
#[derive(Debug, Clone)]
pub struct Targets {
    /// A leaking server's IPv4 address (the endpoint with the most CLOSE_WAIT).
    pub endpoint_ip: String,
    /// Its port.
    pub endpoint_port: i32,
    /// The host asked about by `sockets` and `timeline`.
    pub host: String,
    /// How long ago `who-at` looks, hours.
    pub who_at_h: u32,
    /// How long ago `sockets-at` looks, hours.
    pub sockets_at_h: u32,
    /// The history's length, hours: the window of `report`.
    pub hours: u32,
}

impl Targets {
    /// Picks the endpoint from the database; the host is `host-0042` (or the last one).
    pub async fn pick(url: &str, hosts: u32, hours: u32) -> Result<Targets> {
        let mut conn = PgConnection::connect(url).await?;
        // The busiest server endpoint, leaking ones first.
        let row = sqlx::query(
            "SELECT host(local_addr), local_port FROM current_sockets \
             WHERE state IN (1, 8) AND family(local_addr) = 4 AND local_port < 32768 \
             GROUP BY 1, 2 ORDER BY count(*) FILTER (WHERE state = 8) DESC, count(*) DESC, 1 \
             LIMIT 1",
        )
        .fetch_optional(&mut conn)
        .await?
        .context("no server endpoint in current_sockets")?;
        conn.close().await?;
        Ok(Targets {
            endpoint_ip: row.try_get(0)?,
            endpoint_port: row.try_get(1)?,
            host: format!("host-{:04}", hosts.min(42)),
            who_at_h: hours / 2,
            sockets_at_h: hours / 4,
            hours,
        })
    }

    /// The endpoint as the API writes it.
    pub fn endpoint(&self) -> String {
        if self.endpoint_ip.contains(':') {
            format!("[{}]:{}", self.endpoint_ip, self.endpoint_port)
        } else {
            format!("{}:{}", self.endpoint_ip, self.endpoint_port)
        }
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
pub(super) fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every query, about `t`.
pub fn all(t: &Targets) -> Vec<Query> {
    let ep = encode(&t.endpoint());
    let ip = ("ip", t.endpoint_ip.clone());
    let port = ("port", t.endpoint_port.to_string());
    let host = ("host", t.host.clone());
    vec![
        Query {
            name: "leaks",
            path: "/api/v1/leaks".into(),
            list: "leaks",
            peer_file: "leaks.sql",
            peer_sql: include_str!("peer/leaks.sql"),
            peer_vars: vec![],
        },
        Query {
            name: "groups",
            path: "/api/v1/leaks/groups".into(),
            list: "groups",
            peer_file: "groups.sql",
            peer_sql: include_str!("peer/groups.sql"),
            peer_vars: vec![],
        },
        Query {
            name: "who",
            path: format!("/api/v1/who?endpoint={ep}"),
            list: "connections",
            peer_file: "who.sql",
            peer_sql: include_str!("peer/who.sql"),
            peer_vars: vec![ip.clone(), port.clone()],
        },
        Query {
            name: "who-at",
            path: format!("/api/v1/who?endpoint={ep}&at={}h", t.who_at_h),
            list: "connections",
            peer_file: "who_at.sql",
            peer_sql: include_str!("peer/who_at.sql"),
            peer_vars: vec![ip, port, ("ago", format!("{} hours", t.who_at_h))],
        },
        Query {
            name: "sockets-at",
            path: format!(
                "/api/v1/sockets?host={}&at={}h",
                encode(&t.host),
                t.sockets_at_h
            ),
            list: "sockets",
            peer_file: "sockets_at.sql",
            peer_sql: include_str!("peer/sockets_at.sql"),
            peer_vars: vec![host.clone(), ("ago", format!("{} hours", t.sockets_at_h))],
        },
        Query {
            name: "hosts",
            path: "/api/v1/hosts?limit=1000".into(),
            list: "hosts",
            peer_file: "hosts.sql",
            peer_sql: include_str!("peer/hosts.sql"),
            peer_vars: vec![],
        },
        Query {
            name: "timeline",
            path: format!("/api/v1/timeline?host={}", encode(&t.host)),
            list: "points",
            peer_file: "timeline.sql",
            peer_sql: include_str!("peer/timeline.sql"),
            peer_vars: vec![host],
        },
        Query {
            name: "report",
            path: format!("/api/v1/reports/run?window={}h", t.hours),
            list: "services",
            peer_file: "report.sql",
            peer_sql: include_str!("peer/report.sql"),
            peer_vars: vec![("window", format!("{} hours", t.hours))],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_is_named_and_ipv6_endpoints_are_bracketed_and_encoded() {
        let t = Targets {
            endpoint_ip: "fd00::10:3".into(),
            endpoint_port: 8080,
            host: "host-0042".into(),
            who_at_h: 12,
            sockets_at_h: 6,
            hours: 24,
        };
        let names: Vec<&str> = all(&t).iter().map(|q| q.name).collect();
        assert_eq!(names, NAMES);
        assert_eq!(
            all(&t)[2].path,
            "/api/v1/who?endpoint=%5Bfd00%3A%3A10%3A3%5D%3A8080"
        );
    }
}

//! The grouped leak view: leaks of one kind held by one process on one host, with how
//! many, the oldest, growth per hour and the peers involved. Ended groups stay, with
//! the time the last one ended.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::leaks::{self, Leak, LeakQuery, hint};
use super::{Context, NextPage, PageReq, Params, QueryError, Question};

/// Parameters the grouped view accepts.
pub const PARAMS: &[&str] = &["since", "min_age", "host", "process", "limit", "page_token"];

/// Leaks grouped over at most this many verdicts.
const MAX_LEAKS: i64 = 200_000;

/// The grouped view of a leak query.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupsQuery {
    /// Which leaks (its page is ignored).
    pub leaks: LeakQuery,
    /// The page of groups.
    pub page: PageReq,
}

/// How many of a group's leaks have their peer on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerCount {
    /// Peer hostname.
    pub host: String,
    /// Leaks with their peer there.
    pub count: i64,
}

/// Leaks of one kind held by one process on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakGroup {
    /// Hostname.
    pub host: String,
    /// Holding pid (null for sockets no process holds).
    pub pid: Option<u32>,
    /// Its command name.
    pub comm: Option<String>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// The leak kind.
    pub kind: &'static str,
    /// Leaks in the group.
    pub count: i64,
    /// How many still last.
    pub open: i64,
    /// When the oldest began.
    pub oldest: DateTime<Utc>,
    /// When the newest began.
    pub newest: DateTime<Utc>,
    /// When the last one ended; null while any lasts.
    pub ended: Option<DateTime<Utc>>,
    /// Leaks per hour from the oldest's start to now (or to the end); spans under an
    /// hour count as an hour.
    pub growth_per_hour: f64,
    /// Peer hosts, most leaks first.
    pub peers: Vec<PeerCount>,
    /// What it means and what fixes it.
    pub hint: &'static str,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupsAnswer {
    /// Groups, most leaks first.
    pub groups: Vec<LeakGroup>,
    /// Paging.
    #[serde(flatten)]
    pub next: NextPage,
}

impl Question for GroupsQuery {
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = GroupsAnswer;

    /// Reads and checks the parameters.
    fn parse(p: &Params, ctx: &Context) -> Result<GroupsQuery, QueryError> {
        let mut leaks = LeakQuery::parse(p, ctx)?;
        let page = leaks.page;
        leaks.page = PageReq {
            offset: 0,
            limit: MAX_LEAKS,
        };
        Ok(GroupsQuery { leaks, page })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_leak_groups", skip_all, fields(host = ?self.leaks.host), err)]
    async fn run(&self, ctx: &Context) -> Result<GroupsAnswer, QueryError> {
        let all = leaks::leaks(&ctx.pool, &self.leaks).await?;
        if all.len() as i64 > MAX_LEAKS {
            tracing::warn!(max = MAX_LEAKS, "grouping only the oldest leaks");
        }
        let (groups, next_page_token) = self.page.slice(group(all, Utc::now()));
        Ok(GroupsAnswer {
            groups,
            next: NextPage { next_page_token },
        })
    }
}

/// Groups leaks by (host, pid, comm, cmdline, kind), most leaks first.
pub fn group(leaks: Vec<Leak>, now: DateTime<Utc>) -> Vec<LeakGroup> {
    type Key = (
        String,
        Option<u32>,
        Option<String>,
        Option<String>,
        &'static str,
    );
    let mut by: BTreeMap<Key, Vec<Leak>> = BTreeMap::new();
    for l in leaks {
        let h = &l.holder;
        let key = (
            h.host.clone(),
            h.pid,
            h.comm.clone(),
            h.cmdline.clone(),
            l.kind,
        );
        by.entry(key).or_default().push(l);
    }
    let mut out: Vec<LeakGroup> = by
        .into_iter()
        .map(|((host, pid, comm, cmdline, kind), ls)| {
            let oldest = ls.iter().map(|l| l.holder.since).min().unwrap_or(now);
            let newest = ls.iter().map(|l| l.holder.since).max().unwrap_or(now);
            let open = ls.iter().filter(|l| l.until.is_none()).count() as i64;
            let ended = (open == 0)
                .then(|| ls.iter().filter_map(|l| l.until).max())
                .flatten();
            let span_h = ((ended.unwrap_or(now) - oldest).num_seconds() as f64 / 3600.0).max(1.0);
            let mut peers: BTreeMap<String, i64> = BTreeMap::new();
            for p in ls.iter().filter_map(|l| l.peer.as_ref()) {
                *peers.entry(p.host.clone()).or_default() += 1;
            }
            let mut peers: Vec<PeerCount> = peers
                .into_iter()
                .map(|(host, count)| PeerCount { host, count })
                .collect();
            peers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.host.cmp(&b.host)));
            let count = ls.len() as i64;
            LeakGroup {
                host,
                pid,
                comm,
                cmdline,
                kind,
                count,
                open,
                oldest,
                newest,
                ended,
                growth_per_hour: (count as f64 / span_h * 100.0).round() / 100.0,
                peers,
                hint: hint(kind),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.open
            .cmp(&a.open)
            .then(b.count.cmp(&a.count))
            .then_with(|| a.host.cmp(&b.host))
            .then(a.pid.cmp(&b.pid))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::leaks::Side;
    use chrono::TimeZone;

    fn leak(host: &str, pid: u32, since_min: i64, until: Option<i64>, peer: Option<&str>) -> Leak {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("t0");
        let side = |h: &str| Side {
            host: h.into(),
            netns: 1,
            pid: Some(pid),
            comm: Some("srv".into()),
            cmdline: Some("srv --port 80".into()),
            fd: Some(3),
            state: "CLOSE_WAIT",
            local: "10.0.0.1:80".into(),
            remote: "10.0.0.2:4000".into(),
            since: t0 + chrono::Duration::minutes(since_min),
            age_s: 60,
            rx_queue: 0,
            until: until.map(|m| t0 + chrono::Duration::minutes(m)),
        };
        Leak {
            kind: "close_wait",
            confidence: "exact",
            holder: side(host),
            peer: peer.map(side),
            until: until.map(|m| t0 + chrono::Duration::minutes(m)),
            hint: hint("close_wait"),
        }
    }

    #[test]
    fn groups_count_open_and_ended_leaks_with_growth_and_peers() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("t0");
        let now = t0 + chrono::Duration::hours(4);
        let g = group(
            vec![
                leak("a", 10, 0, None, Some("b")),
                leak("a", 10, 60, None, Some("c")),
                leak("a", 10, 120, None, Some("b")),
                leak("a", 10, 180, Some(200), None),
                leak("d", 7, 0, Some(30), Some("b")),
            ],
            now,
        );
        assert_eq!(g.len(), 2);
        let a = &g[0];
        assert_eq!(
            (a.host.as_str(), a.count, a.open, a.ended),
            ("a", 4, 3, None)
        );
        assert_eq!(a.oldest, t0);
        assert_eq!(a.newest, t0 + chrono::Duration::minutes(180));
        assert_eq!(a.growth_per_hour, 1.0, "4 leaks over 4 hours");
        assert_eq!(
            a.peers,
            vec![
                PeerCount {
                    host: "b".into(),
                    count: 2
                },
                PeerCount {
                    host: "c".into(),
                    count: 1
                }
            ]
        );
        let d = &g[1];
        assert_eq!((d.count, d.open), (1, 0));
        assert_eq!(d.ended, Some(t0 + chrono::Duration::minutes(30)));
        assert_eq!(
            d.growth_per_hour, 1.0,
            "spans under an hour count as an hour"
        );
    }
}

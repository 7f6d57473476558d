//! The grouped leak view: leaks of one kind held by one process on one host
//! (`by=process`, the default) or by one service on any host (`by=service`), with how
//! many, the oldest, growth per hour and the peers involved. Ended groups stay, with
//! the time the last one ended.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{GroupsPage, Leak, LeakGroup, PeerCount};
use finwait_vocab::{GroupBy, LeakKind};

use super::leaks::{self, LeakQuery};
use super::{Context, PageReq, Params, QueryError, Question};

/// Parameters the grouped view accepts.
pub const PARAMS: &[&str] = &[
    "since",
    "min_age",
    "host",
    "process",
    "service",
    "by",
    "limit",
    "page_token",
];

/// Leaks grouped over at most this many verdicts.
const MAX_LEAKS: i64 = 200_000;

/// The grouped view of a leak query.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupsQuery {
    /// Which leaks (its page is ignored).
    pub leaks: LeakQuery,
    /// Group by service (across hosts) instead of by process on a host.
    pub by_service: bool,
    /// The page of groups.
    pub page: PageReq,
}

impl Question for GroupsQuery {
    const NAME: &'static str = "leak_groups";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = GroupsPage;

    /// Reads and checks the parameters.
    fn parse(p: &Params, ctx: &Context) -> Result<GroupsQuery, QueryError> {
        let mut leaks = LeakQuery::parse(p, ctx)?;
        let page = leaks.page;
        leaks.page = PageReq {
            offset: 0,
            limit: MAX_LEAKS,
        };
        let by_service = p.parsed::<GroupBy>("by")? == Some(GroupBy::Service);
        Ok(GroupsQuery {
            leaks,
            by_service,
            page,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_leak_groups", skip_all, fields(host = ?self.leaks.host))]
    async fn run(&self, ctx: &Context) -> Result<GroupsPage, QueryError> {
        let all = leaks::leaks(&ctx.pool, &self.leaks).await?;
        if all.len() as i64 > MAX_LEAKS {
            tracing::warn!(max = MAX_LEAKS, "grouping only the oldest leaks");
        }
        let (groups, next_page_token) = self.page.slice(group(all, self.by_service, Utc::now()));
        Ok(GroupsPage {
            groups,
            next_page_token,
        })
    }
}

/// A group's key: host, pid, comm and cmdline are `None` when grouped by service.
type Key = (
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<String>,
    Option<String>,
    LeakKind,
);

/// Groups leaks by (host, pid, comm, cmdline, kind), or by (service, kind) across
/// hosts; most open leaks first.
pub fn group(leaks: Vec<Leak>, by_service: bool, now: DateTime<Utc>) -> Vec<LeakGroup> {
    let mut by: BTreeMap<Key, Vec<Leak>> = BTreeMap::new();
    for l in leaks {
        let h = &l.holder;
        let key = if by_service {
            (None, h.service.clone(), None, None, None, l.kind)
        } else {
            (
                Some(h.host.clone()),
                h.service.clone(),
                h.pid,
                h.comm.clone(),
                h.cmdline.clone(),
                l.kind,
            )
        };
        by.entry(key).or_default().push(l);
    }
    let mut out: Vec<LeakGroup> = by
        .into_iter()
        .map(|((host, service, pid, comm, cmdline, kind), ls)| {
            let oldest = ls.iter().map(|l| l.holder.since).min().unwrap_or(now);
            let newest = ls.iter().map(|l| l.holder.since).max().unwrap_or(now);
            let open = ls.iter().filter(|l| l.until.is_none()).count() as i64;
            let ended = (open == 0)
                .then(|| ls.iter().filter_map(|l| l.until).max())
                .flatten();
            let span_h = ((ended.unwrap_or(now) - oldest).num_seconds() as f64 / 3600.0).max(1.0);
            let mut peers: BTreeMap<(String, Option<String>), i64> = BTreeMap::new();
            for p in ls.iter().filter_map(|l| l.peer.as_ref()) {
                *peers
                    .entry((p.host.clone(), p.service.clone()))
                    .or_default() += 1;
            }
            let mut peers: Vec<PeerCount> = peers
                .into_iter()
                .map(|((host, service), count)| PeerCount {
                    host,
                    service,
                    count,
                })
                .collect();
            peers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.host.cmp(&b.host)));
            let hosts: BTreeSet<&str> = ls.iter().map(|l| l.holder.host.as_str()).collect();
            let count = ls.len() as i64;
            LeakGroup {
                hosts: hosts.into_iter().map(str::to_owned).collect(),
                host,
                service,
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
                hint: kind.hint().to_owned(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.open
            .cmp(&a.open)
            .then(b.count.cmp(&a.count))
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.service.cmp(&b.service))
            .then(a.pid.cmp(&b.pid))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use finwait_vocab::answer::Side;
    use finwait_vocab::{Confidence, TcpState};

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
            service: Some(format!("{h}-svc.service")),
            container: None,
            state: TcpState::CloseWait,
            local: "10.0.0.1:80".into(),
            remote: "10.0.0.2:4000".into(),
            since: t0 + chrono::Duration::minutes(since_min),
            age_s: 60,
            rx_queue: 0,
            until: until.map(|m| t0 + chrono::Duration::minutes(m)),
        };
        Leak {
            kind: LeakKind::CloseWait,
            confidence: Confidence::Exact,
            holder: side(host),
            peer: peer.map(side),
            until: until.map(|m| t0 + chrono::Duration::minutes(m)),
            hint: LeakKind::CloseWait.hint().to_owned(),
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
            false,
            now,
        );
        assert_eq!(g.len(), 2);
        let a = &g[0];
        assert_eq!(
            (a.host.as_deref(), a.count, a.open, a.ended),
            (Some("a"), 4, 3, None)
        );
        assert_eq!(a.oldest, t0);
        assert_eq!(a.newest, t0 + chrono::Duration::minutes(180));
        assert_eq!(a.growth_per_hour, 1.0, "4 leaks over 4 hours");
        assert_eq!(
            a.peers,
            vec![
                PeerCount {
                    host: "b".into(),
                    service: Some("b-svc.service".into()),
                    count: 2
                },
                PeerCount {
                    host: "c".into(),
                    service: Some("c-svc.service".into()),
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

    #[test]
    fn groups_by_service_span_hosts() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("t0");
        let mut l1 = leak("a", 10, 0, None, Some("b"));
        let mut l2 = leak("d", 7, 0, None, Some("b"));
        l1.holder.service = Some("billing.service".into());
        l2.holder.service = Some("billing.service".into());
        let g = group(vec![l1, l2], true, t0 + chrono::Duration::hours(2));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].service.as_deref(), Some("billing.service"));
        assert_eq!((g[0].host.as_deref(), g[0].pid), (None, None));
        assert_eq!(g[0].hosts, ["a", "d"]);
        assert_eq!(g[0].count, 2);
    }
}

//! The fleet overview: hosts reporting and silent, open leaks and their trend, the
//! top leaking services and processes, a hosts × states table that puts problems
//! first, TIME_WAIT pressure, and hosts whose agent cannot see everything.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use chrono::Utc;
use finwait_vocab::TcpState;
use finwait_vocab::answer::{Host, LeakGroup};

use super::view::{self, Time};
use super::{DashState, Layout, PageResult, render};
use crate::query::Params;
use crate::query::groups::group;
use crate::query::hosts::HostsQuery;
use crate::query::leaks::LeakQuery;
use crate::query::{MAX_LIMIT, PageReq, Question};

/// Past this many hosts the table shows only problems unless asked for all.
const PROBLEMS_ONLY_PAST: usize = 30;
/// Rows shown at most (problems first), so the page stays light on a large fleet: a
/// thousand silent hosts are a count and the worst hundred, not a thousand rows.
const MAX_ROWS: usize = 100;
/// Rows shown at most when all hosts are asked for.
const MAX_ROWS_ALL: usize = 2000;
/// Rows in the top-leakers tables.
const TOP: usize = 10;
/// The states the hosts table has columns for, in this order.
const COLUMNS: [TcpState; 7] = [
    TcpState::Established,
    TcpState::CloseWait,
    TcpState::FinWait2,
    TcpState::LastAck,
    TcpState::TimeWait,
    TcpState::SynRecv,
    TcpState::Listen,
];

/// One row of the hosts table.
struct HostRow {
    name: String,
    link: String,
    reporting: bool,
    last_seen: Option<Time>,
    counts: Vec<(String, bool)>,
    open_leaks: usize,
    coverage: &'static str,
    pressure: String,
    problem: bool,
}

/// One row of a top-leakers table.
struct TopRow {
    name: String,
    link: String,
    hosts: String,
    open: i64,
    count: i64,
    growth: String,
    oldest: String,
    kind: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    layout: Layout,
    hosts_total: usize,
    reporting: usize,
    silent: usize,
    open_leaks: usize,
    ended_leaks: usize,
    partial: usize,
    since: Time,
    state_names: Vec<&'static str>,
    rows: Vec<HostRow>,
    hidden: usize,
    problems_only: bool,
    toggle_link: String,
    services: Vec<TopRow>,
    processes: Vec<TopRow>,
    pressure: Vec<(String, String, String, String)>,
    coverage: Vec<(String, String, Vec<String>)>,
}

fn top(groups: Vec<LeakGroup>, by_service: bool) -> Vec<TopRow> {
    let now = Utc::now();
    groups
        .into_iter()
        .filter(|g| g.open > 0)
        .take(TOP)
        .map(|g| {
            let (name, link) = if by_service {
                let n = g.service.clone().unwrap_or_else(|| "(unknown)".into());
                (n, view::service_link(g.service.as_deref()))
            } else {
                let host = g.host.clone().unwrap_or_default();
                let who = match (&g.comm, g.pid) {
                    (Some(c), Some(p)) => format!("{c} (pid {p}) on {host}"),
                    _ => format!("(no process) on {host}"),
                };
                let link = view::link(
                    "/leaks",
                    &[
                        ("host", &host),
                        ("process", g.comm.as_deref().unwrap_or("")),
                    ],
                );
                (who, link)
            };
            TopRow {
                name,
                link,
                hosts: g.hosts.join(", "),
                open: g.open,
                count: g.count,
                growth: format!("{:.1}/h", g.growth_per_hour),
                oldest: view::age((now - g.oldest).num_seconds()),
                kind: g.kind.name(),
            }
        })
        .collect()
}

fn row(h: &Host, open_leaks: usize) -> HostRow {
    let counts: Vec<(String, bool)> = COLUMNS
        .iter()
        .map(|st| {
            let n = h.states.get(st).copied().unwrap_or(0);
            let alarm = *st == TcpState::CloseWait && n > 0;
            (n.to_string(), alarm)
        })
        .collect();
    let coverage = match &h.coverage {
        None => "n/a",
        Some(c) if c.complete => "ok",
        Some(_) => "partial",
    };
    let pressure = h
        .time_wait_pressure
        .as_ref()
        .map(|p| format!("{:.0}% to {}", p.ratio * 100.0, p.remote))
        .unwrap_or_default();
    // A brief CLOSE_WAIT is shown in red but is not a problem by itself: a leak is
    // one that lasts (the open-leak count).
    let problem =
        !h.reporting || open_leaks > 0 || coverage == "partial" || h.time_wait_pressure.is_some();
    HostRow {
        name: h.hostname.clone(),
        link: view::host_link(&h.hostname),
        reporting: h.reporting,
        last_seen: h.last_seen.map(Time::of),
        counts,
        open_leaks,
        coverage,
        pressure,
        problem,
    }
}

/// `GET /`.
pub async fn page(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let q = Params::pairs(query.as_deref())?;
    let all_page = PageReq {
        offset: 0,
        limit: MAX_LIMIT,
    };
    let since = Utc::now() - chrono::Duration::hours(24);
    let hosts_q = HostsQuery {
        host: None,
        page: all_page,
    };
    let leaks_q = LeakQuery::since(&s.ctx, since);
    let (hosts, leaks) = tokio::join!(hosts_q.run(&s.ctx), leaks_q.run(&s.ctx));
    let (hosts, leaks) = (hosts?, leaks?);

    let mut open_by_host: HashMap<&str, usize> = HashMap::new();
    for l in leaks.leaks.iter().filter(|l| l.until.is_none()) {
        *open_by_host.entry(l.holder.host.as_str()).or_default() += 1;
    }
    let open_leaks = open_by_host.values().sum();
    let mut rows: Vec<HostRow> = hosts
        .hosts
        .iter()
        .map(|h| {
            row(
                h,
                open_by_host.get(h.hostname.as_str()).copied().unwrap_or(0),
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        b.problem
            .cmp(&a.problem)
            .then(b.open_leaks.cmp(&a.open_leaks))
            .then_with(|| a.name.cmp(&b.name))
    });
    let problems_only = match q.get("problems").map(String::as_str) {
        Some("0") => false,
        Some(_) => true,
        None => rows.len() > PROBLEMS_ONLY_PAST,
    };
    let total = rows.len();
    if problems_only {
        rows.retain(|r| r.problem);
    }
    rows.truncate(if problems_only {
        MAX_ROWS
    } else {
        MAX_ROWS_ALL
    });
    let hidden = total - rows.len();
    let coverage = hosts
        .hosts
        .iter()
        .filter_map(|h| {
            let c = h.coverage.as_ref().filter(|c| !c.complete)?;
            Some((
                h.hostname.clone(),
                view::host_link(&h.hostname),
                c.problems.clone(),
            ))
        })
        .collect::<Vec<_>>();
    let reporting = hosts.hosts.iter().filter(|h| h.reporting).count();
    let page = Overview {
        layout: Layout::new(&s, "Fleet overview", "overview"),
        hosts_total: total,
        reporting,
        silent: total - reporting,
        open_leaks,
        ended_leaks: leaks.leaks.len() - open_leaks,
        partial: coverage.len(),
        since: Time::of(since),
        state_names: COLUMNS.iter().map(|s| s.name()).collect(),
        rows,
        hidden,
        problems_only,
        toggle_link: view::link("/", &[("problems", if problems_only { "0" } else { "1" })]),
        services: top(group(leaks.leaks.clone(), true, Utc::now()), true),
        processes: top(group(leaks.leaks, false, Utc::now()), false),
        pressure: leaks
            .time_wait_pressure
            .iter()
            .map(|p| {
                (
                    p.host.clone(),
                    view::host_link(&p.host),
                    format!("{} → {}", p.local_addr, p.remote),
                    format!("{} of {} ports ({:.0}%)", p.count, p.ports, p.ratio * 100.0),
                )
            })
            .collect(),
        coverage,
    };
    render(&page)
}

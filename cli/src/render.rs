//! The tables each command prints from the collector's answer. Every text that came over
//! the network goes through [`format::cell`] (one line, no control characters), command
//! lines are cut to [`CMDLINE_WIDTH`], and an empty answer is one sentence saying what
//! was looked for. Every process is shown with its service (and container), the name
//! people think in.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::{
    Coverage, GroupsPage, HostsPage, Leak, LeakGroup, LeaksPage, Side, Socket, SocketsPage,
    TimeWaitPressure, TimelinePage, WhoPage,
};
use finwait_vocab::report::ReportsPage;
use finwait_vocab::time::format_age;

use crate::format::{self, cell, num};
use crate::table::{Align, Table};
use finwait_vocab::GroupBy;

/// Command lines longer than this are cut (with `…`).
pub const CMDLINE_WIDTH: usize = 40;

const L: Align = Align::Left;
const R: Align = Align::Right;

/// The states present, in kernel order.
fn ordered_states<'a>(present: impl IntoIterator<Item = &'a TcpState>) -> Vec<TcpState> {
    let present: BTreeSet<TcpState> = present.into_iter().copied().collect();
    present.into_iter().collect()
}

/// At most this many hosts are named in a group's HOSTS cell; `+n` counts the rest.
pub const GROUP_HOSTS: usize = 3;

fn cmdline(c: Option<&str>) -> String {
    format::truncate(&cell(c), CMDLINE_WIDTH)
}

/// `service (container)`: the container's short id is added when the service name does
/// not carry it already (it does for `docker/<id>`, not for `pod/<uid>`); `-` when
/// neither is known.
fn service(service: Option<&str>, container: Option<&str>) -> String {
    fn known(t: Option<&str>) -> Option<&str> {
        t.map(str::trim).filter(|t| !t.is_empty())
    }
    match (known(service), known(container)) {
        (Some(s), Some(c)) if !s.contains(c) => format!("{} ({})", cell(Some(s)), cell(Some(c))),
        (Some(s), _) => cell(Some(s)),
        (None, Some(c)) => format!("({})", cell(Some(c))),
        (None, None) => "-".into(),
    }
}

/// `ok`, `partial` or `n/a` (no cycle account yet, or an agent too old to send one).
fn coverage(c: Option<&Coverage>) -> &'static str {
    match c {
        None => "n/a",
        Some(c) if c.complete => "ok",
        Some(_) => "partial",
    }
}

/// `count TIME_WAIT local -> remote = ratio of ports`.
fn pressure(p: &TimeWaitPressure) -> String {
    format!(
        "{} of ports: {} TIME_WAIT {} -> {}",
        format::percent(p.ratio),
        p.count,
        cell(Some(&p.local_addr)),
        cell(Some(&p.remote))
    )
}

/// `finwait hosts`.
pub fn hosts(page: &HostsPage, now: DateTime<Utc>) -> String {
    if page.hosts.is_empty() {
        return "no hosts have reported to this collector yet\n".into();
    }
    let states = ordered_states(page.hosts.iter().flat_map(|h| h.states.keys()));
    let mut titles: Vec<String> = ["HOST", "LAST SEEN", "AGO", "AGENT", "COVERAGE"]
        .map(String::from)
        .to_vec();
    titles.extend(states.iter().map(|s| s.name().to_string()));
    titles.push("TIME_WAIT PRESSURE".into());
    let mut aligns = vec![L, L, R, L, L];
    aligns.extend(states.iter().map(|_| R));
    aligns.push(L);
    let mut t = Table::with_titles(titles, aligns);
    for h in &page.hosts {
        let mut row = vec![
            cell(Some(&h.hostname)),
            format::time_or(h.last_seen, "never"),
            h.last_seen
                .map_or_else(|| "-".into(), |t| format::ago(t, now)),
            cell(Some(&h.agent_version)),
            coverage(h.coverage.as_ref()).into(),
        ];
        row.extend(
            states
                .iter()
                .map(|s| h.states.get(s).copied().unwrap_or(0).to_string()),
        );
        row.push(
            h.time_wait_pressure
                .as_ref()
                .map_or_else(|| "-".into(), pressure),
        );
        // What the agent missed, and the fix, under the host it concerns.
        let problems = match &h.coverage {
            Some(c) if !c.complete => c
                .problems
                .iter()
                .map(|p| format!("coverage: {}", format::one_line(p.trim())))
                .collect(),
            _ => Vec::new(),
        };
        t.row_with_notes(row, problems);
    }
    t.render()
}

/// `host STATE` of a leak's peer, or `-` when none was seen.
fn peer(p: Option<&Side>) -> String {
    match p {
        None => "-".into(),
        Some(p) => {
            let ended = if p.until.is_some() { " (gone)" } else { "" };
            format!("{} {}{ended}", cell(Some(&p.host)), p.state)
        }
    }
}

fn leak_row(l: &Leak) -> Vec<String> {
    let h = &l.holder;
    vec![
        l.kind.to_string(),
        l.confidence.to_string(),
        cell(Some(&h.host)),
        num(h.pid),
        cell(h.comm.as_deref()),
        service(h.service.as_deref(), h.container.as_deref()),
        cell(Some(&h.local)),
        cell(Some(&h.remote)),
        format_age(h.age_s),
        peer(l.peer.as_ref()),
        l.peer.as_ref().map_or_else(
            || "-".into(),
            |p| service(p.service.as_deref(), p.container.as_deref()),
        ),
        format::time_or(l.until, "open"),
    ]
}

/// `finwait leaks`: one row per leak with its hint under it, then TIME_WAIT pressure.
/// `scope` completes "no leaks found …" (e.g. `since 24h ago on host a`).
pub fn leaks(page: &LeaksPage, scope: &str) -> String {
    let mut out = String::new();
    if page.leaks.is_empty() {
        out.push_str(&format!("no leaks found {scope}\n"));
    } else {
        let mut t = Table::new(&[
            ("KIND", L),
            ("CONF", L),
            ("HOST", L),
            ("PID", R),
            ("COMM", L),
            ("SERVICE", L),
            ("LOCAL", L),
            ("REMOTE", L),
            ("AGE", R),
            ("PEER", L),
            ("PEER SERVICE", L),
            ("UNTIL", L),
        ]);
        for l in &page.leaks {
            let row = leak_row(l);
            match l.hint.trim() {
                "" => t.row(row),
                hint => t.row_with_note(row, format!("hint: {}", format::one_line(hint))),
            }
        }
        out.push_str(&t.render());
    }
    if !page.time_wait_pressure.is_empty() {
        out.push_str(
            "\nTIME_WAIT pressure (not a leak: many short connections to one destination)\n",
        );
        let mut t = Table::new(&[
            ("HOST", L),
            ("LOCAL ADDR", L),
            ("REMOTE", L),
            ("TIME_WAIT", R),
            ("PORTS", R),
            ("USED", R),
            ("AT", L),
        ]);
        for p in &page.time_wait_pressure {
            t.row(vec![
                cell(Some(&p.host)),
                cell(Some(&p.local_addr)),
                cell(Some(&p.remote)),
                p.count.to_string(),
                p.ports.to_string(),
                format::percent(p.ratio),
                format::time(p.at),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `service@host(n)` per peer place (`host(n)` when its service is unknown).
fn peers(g: &LeakGroup) -> String {
    if g.peers.is_empty() {
        return "-".into();
    }
    g.peers
        .iter()
        .map(|p| {
            let host = cell(Some(&p.host));
            match p.service.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => format!("{}@{host}({})", cell(Some(s)), p.count),
                _ => format!("{host}({})", p.count),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first [`GROUP_HOSTS`] hosts, comma separated, and `+n` for the rest.
fn group_hosts(hosts: &[String]) -> String {
    if hosts.is_empty() {
        return "-".into();
    }
    let shown: Vec<String> = hosts
        .iter()
        .take(GROUP_HOSTS)
        .map(|h| cell(Some(h)))
        .collect();
    match hosts.len().saturating_sub(GROUP_HOSTS) {
        0 => shown.join(","),
        more => format!("{} +{more}", shown.join(",")),
    }
}

/// `finwait leaks --groups`: per host and process (`by` process, the default), or per
/// service across hosts.
pub fn groups(page: &GroupsPage, scope: &str, by: GroupBy) -> String {
    if page.groups.is_empty() {
        return format!("no leaks found {scope}\n");
    }
    let who: &[(&str, Align)] = match by {
        GroupBy::Process => &[("HOST", L), ("PID", R), ("COMM", L), ("SERVICE", L)],
        GroupBy::Service => &[("SERVICE", L), ("HOSTS", L)],
    };
    let mut cols = who.to_vec();
    cols.extend([
        ("KIND", L),
        ("COUNT", R),
        ("OPEN", R),
        ("GROWTH/H", R),
        ("OLDEST", L),
        ("NEWEST", L),
        ("ENDED", L),
        ("PEERS", L),
    ]);
    if by == GroupBy::Process {
        cols.push(("CMDLINE", L));
    }
    let mut t = Table::new(&cols);
    for g in &page.groups {
        let mut row = match by {
            GroupBy::Process => vec![
                cell(g.host.as_deref()),
                num(g.pid),
                cell(g.comm.as_deref()),
                cell(g.service.as_deref()),
            ],
            GroupBy::Service => vec![cell(g.service.as_deref()), group_hosts(&g.hosts)],
        };
        row.extend([
            g.kind.to_string(),
            g.count.to_string(),
            g.open.to_string(),
            if g.growth_per_hour.is_finite() {
                format!("{:.1}", g.growth_per_hour)
            } else {
                "-".into()
            },
            format::time(g.oldest),
            format::time(g.newest),
            format::time_or(g.ended, "open"),
            peers(g),
        ]);
        if by == GroupBy::Process {
            row.push(cmdline(g.cmdline.as_deref()));
        }
        match g.hint.trim() {
            "" => t.row(row),
            hint => t.row_with_note(row, format!("hint: {}", format::one_line(hint))),
        }
    }
    t.render()
}

/// `comm (+n)` when a socket has several owners.
fn comm(s: &Socket) -> String {
    let c = cell(s.comm.as_deref());
    match s.owners.len() {
        0 | 1 => c,
        n => format!("{c} (+{})", n - 1),
    }
}

/// `finwait sockets`. `filters` completes "no sockets on host a …".
pub fn sockets(page: &SocketsPage, filters: &str) -> String {
    let as_of = format::time_or(page.as_of, "now");
    let host = cell(Some(&page.host));
    if page.sockets.is_empty() {
        return format!("no sockets on host {host}{filters} as of {as_of}\n");
    }
    let netns: BTreeSet<i64> = page.sockets.iter().map(|s| s.netns).collect();
    let with_netns = netns.len() > 1;
    let mut cols = vec![
        ("STATE", L),
        ("LOCAL", L),
        ("REMOTE", L),
        ("AGE", R),
        ("UNTIL", L),
        ("RECV-Q", R),
        ("SEND-Q", R),
        ("TIMER", L),
        ("PID", R),
        ("FD", R),
        ("COMM", L),
        ("SERVICE", L),
    ];
    if with_netns {
        cols.insert(0, ("NETNS", L));
    }
    cols.push(("CMDLINE", L));
    let mut t = Table::new(&cols);
    for s in &page.sockets {
        let mut row = vec![
            s.state.to_string(),
            cell(Some(&s.local)),
            cell(Some(&s.remote)),
            format_age(s.age_s),
            format::time_or(s.until, "-"),
            s.rx_queue.to_string(),
            s.tx_queue.to_string(),
            s.timer.map_or_else(|| "-".into(), |t| t.to_string()),
            num(s.pid),
            num(s.fd),
            comm(s),
            service(s.service.as_deref(), s.container.as_deref()),
            cmdline(s.cmdline.as_deref()),
        ];
        if with_netns {
            row.insert(0, s.netns.to_string());
        }
        t.row(row);
    }
    format!("host {host} as of {as_of}\n{}", t.render())
}

/// `pid/comm`, or `-` for an unowned socket (TIME_WAIT).
fn process(s: &Socket) -> String {
    match (s.pid, s.comm.as_deref()) {
        (None, _) => "-".into(),
        (Some(pid), c) => match cell(c).as_str() {
            "-" => pid.to_string(),
            c => format!("{pid}/{c}"),
        },
    }
}

fn side_cells(s: Option<&Socket>) -> [String; 5] {
    match s {
        None => [
            "(not seen)".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        Some(s) => [
            cell(Some(&s.host)),
            s.state.to_string(),
            process(s),
            service(s.service.as_deref(), s.container.as_deref()),
            format_age(s.age_s),
        ],
    }
}

/// `finwait who`: the end holding the endpoint on the left, the other end on the right.
pub fn who(page: &WhoPage) -> String {
    let endpoint = cell(Some(&page.endpoint));
    let as_of = format::time_or(page.as_of, "now");
    if page.connections.is_empty() {
        return format!("no connection to or from {endpoint} seen as of {as_of}\n");
    }
    let mut t = Table::new(&[
        ("HOST", L),
        ("STATE", L),
        ("PROCESS", L),
        ("SERVICE", L),
        ("AGE", R),
        ("OTHER END", L),
        ("PEER HOST", L),
        ("PEER STATE", L),
        ("PEER PROCESS", L),
        ("PEER SERVICE", L),
        ("PEER AGE", R),
    ]);
    for c in &page.connections {
        let other = match (&c.local, &c.remote) {
            (Some(l), _) => cell(Some(&l.remote)),
            (None, Some(r)) => cell(Some(&r.local)),
            (None, None) => "-".into(),
        };
        let mut row: Vec<String> = side_cells(c.local.as_ref()).into();
        row.push(other);
        row.extend(side_cells(c.remote.as_ref()));
        t.row(row);
    }
    format!(
        "{endpoint} as of {as_of}: this end | other end\n{}",
        t.render()
    )
}

/// `finwait timeline`: one row per point, one column per state seen in any point.
pub fn timeline(page: &TimelinePage) -> String {
    let host = cell(Some(&page.host));
    if page.points.is_empty() {
        return format!("no socket counts for host {host} in that period\n");
    }
    let states = ordered_states(page.points.iter().flat_map(|p| p.states.keys()));
    let mut titles = vec!["TIME".to_string()];
    titles.extend(states.iter().map(|s| s.name().to_string()));
    let mut aligns = vec![L];
    aligns.extend(states.iter().map(|_| R));
    let mut t = Table::with_titles(titles, aligns);
    for p in &page.points {
        let mut row = vec![format::time(p.t)];
        // A bucket without any count had no report: `-`, not a fleet of zeros.
        row.extend(states.iter().map(|s| match p.states.get(s) {
            Some(n) => n.to_string(),
            None if p.states.is_empty() => "-".into(),
            None => "0".into(),
        }));
        t.row(row);
    }
    format!(
        "host {host}, peak sockets per state every {}\n{}",
        format_age(page.step_s),
        t.render()
    )
}

/// `finwait report list`.
pub fn reports(page: &ReportsPage) -> String {
    if page.reports.is_empty() {
        return "no reports stored yet (schedules build them; `finwait report run` builds one now)\n".into();
    }
    let mut t = Table::new(&[
        ("ID", R),
        ("SCHEDULE", L),
        ("WINDOW", L),
        ("NEW", R),
        ("RESOLVED", R),
        ("OPEN", R),
        ("HOSTS", R),
        ("DELIVERY", L),
    ]);
    for r in &page.reports {
        let mut delivery: Vec<String> = r
            .deliveries
            .iter()
            .map(|(d, s)| format!("{d} {s}"))
            .collect();
        if r.baseline {
            delivery.insert(0, "baseline".into());
        }
        t.row(vec![
            r.id.to_string(),
            cell(Some(&r.schedule)),
            format!(
                "{} → {}",
                format::time(r.window.start),
                format::time(r.window.end)
            ),
            r.now.new.to_string(),
            r.now.resolved.to_string(),
            r.now.open_at_end.to_string(),
            r.now.hosts_affected.to_string(),
            if delivery.is_empty() {
                "-".into()
            } else {
                delivery.join(", ")
            },
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests;

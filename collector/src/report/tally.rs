//! The report's arithmetic on leak lifetimes: pure, so every number is tested on
//! hand-made lifetimes. The definitions (new, ongoing, resolved, open at end,
//! socket-hours) are in [`finwait_vocab::report`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Duration;
use finwait_vocab::LeakKind;
use finwait_vocab::answer::PeerCount;
use finwait_vocab::report::{Culprit, FixTimes, Link, Tally, Window};

use crate::query::leaks::LeakLife;

/// What one leak is to one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InWindow {
    /// Became a leak inside the window.
    pub new: bool,
    /// Ended inside the window.
    pub resolved: bool,
    /// Microseconds its socket spent in its state inside the window.
    pub micros: i64,
}

/// The leak's part in `w`, or None when it was no leak during `w`. The lifetime was
/// read as of the report's end (`until`), so one that ended later looks open then;
/// `w` may be the previous window, which ends earlier, so both ends are clipped here.
pub fn in_window(l: &LeakLife, w: Window, threshold: Duration) -> Option<InWindow> {
    let since = l.leak.holder.since;
    let became = since + threshold;
    let ended = l.leak.until.filter(|e| *e < w.end);
    let last = l.last_seen.min(w.end);
    if became >= w.end || last < w.start || ended.is_some_and(|e| e < w.start) {
        return None;
    }
    // A lifetime that outlived `w` but whose last sighting falls short of `became`
    // within it (clipped) is not a leak yet.
    if ended.is_none() && l.last_seen < became {
        return None;
    }
    let from = since.max(w.start);
    let to = ended.unwrap_or(last).min(w.end);
    Some(InWindow {
        new: became >= w.start,
        resolved: ended.is_some(),
        micros: (to - from).num_microseconds().unwrap_or(0).max(0),
    })
}

/// Counts of `leaks` in `w`.
pub fn tally<'a>(
    leaks: impl IntoIterator<Item = &'a LeakLife>,
    w: Window,
    threshold: Duration,
) -> Tally {
    let mut t = Tally::default();
    let mut hosts = BTreeSet::new();
    let mut micros = 0i64;
    for l in leaks {
        let Some(part) = in_window(l, w, threshold) else {
            continue;
        };
        if part.new {
            t.new += 1;
        } else {
            t.ongoing += 1;
        }
        if part.resolved {
            t.resolved += 1;
        } else {
            t.open_at_end += 1;
        }
        micros += part.micros;
        hosts.insert(l.leak.holder.host.as_str());
    }
    t.socket_hours = micros as f64 / 3.6e9;
    t.hosts_affected = hosts.len() as i64;
    t
}

/// Time to fix (first seen → ended) of the leaks resolved in `w`.
pub fn fix_times<'a>(
    leaks: impl IntoIterator<Item = &'a LeakLife>,
    w: Window,
    threshold: Duration,
) -> FixTimes {
    let mut secs: Vec<i64> = leaks
        .into_iter()
        .filter(|l| in_window(l, w, threshold).is_some_and(|p| p.resolved))
        .filter_map(|l| {
            l.leak
                .until
                .map(|e| (e - l.leak.holder.since).num_seconds())
        })
        .collect();
    secs.sort_unstable();
    let rank = |q: f64| -> i64 {
        if secs.is_empty() {
            return 0;
        }
        // Nearest rank: the smallest value with at least q of them at or below it.
        let k = ((q * secs.len() as f64).ceil() as usize).clamp(1, secs.len());
        secs[k - 1]
    };
    FixTimes {
        resolved: secs.len() as i64,
        median_s: rank(0.5),
        p90_s: rank(0.9),
        max_s: secs.last().copied().unwrap_or(0),
    }
}

/// How a leak is filed into culprits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// By service (or command name without one), across hosts.
    Service,
    /// By host and command name.
    Process,
}

/// The name a leak is filed under: its service, else its command name.
pub fn culprit_name(l: &LeakLife) -> String {
    let h = &l.leak.holder;
    h.service
        .clone()
        .or_else(|| h.comm.clone())
        .unwrap_or_else(|| "(unowned)".to_owned())
}

/// The culprits of `leaks`: those with leaks in `now` ranked by them (most first),
/// then those that leaked only in `before` (fixed or gone), each list cut at `top`.
/// Links are filled in by the caller.
pub fn culprits(
    leaks: &[LeakLife],
    by: By,
    now: Window,
    before: Window,
    threshold: Duration,
    top: usize,
) -> Vec<Culprit> {
    let mut groups: BTreeMap<(String, Option<String>), Vec<&LeakLife>> = BTreeMap::new();
    for l in leaks {
        let host = match by {
            By::Service => None,
            By::Process => Some(l.leak.holder.host.clone()),
        };
        let name = match by {
            By::Service => culprit_name(l),
            By::Process => l
                .leak
                .holder
                .comm
                .clone()
                .unwrap_or_else(|| "(unowned)".to_owned()),
        };
        groups.entry((name, host)).or_default().push(l);
    }
    let hours = (now.seconds() as f64 / 3600.0).max(1.0 / 3600.0);
    let mut out: Vec<Culprit> = groups
        .into_iter()
        .filter_map(|((name, host), ls)| {
            let t_now = tally(ls.iter().copied(), now, threshold);
            let t_before = tally(ls.iter().copied(), before, threshold);
            if t_now.total() == 0 && t_before.total() == 0 {
                return None;
            }
            let in_now: Vec<&LeakLife> = ls
                .iter()
                .copied()
                .filter(|l| in_window(l, now, threshold).is_some())
                .collect();
            let hosts: BTreeSet<&str> =
                in_now.iter().map(|l| l.leak.holder.host.as_str()).collect();
            let mut kinds: HashMap<LeakKind, usize> = HashMap::new();
            let mut comms: HashMap<&str, usize> = HashMap::new();
            let mut peers: HashMap<(String, Option<String>), i64> = HashMap::new();
            for l in ls.iter().copied() {
                *kinds.entry(l.leak.kind).or_default() += 1;
                if let Some(c) = l.leak.holder.comm.as_deref() {
                    *comms.entry(c).or_default() += 1;
                }
            }
            for l in &in_now {
                if let Some(p) = &l.leak.peer {
                    *peers
                        .entry((p.host.clone(), p.service.clone()))
                        .or_default() += 1;
                }
            }
            let mut kinds: Vec<(LeakKind, usize)> = kinds.into_iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.name().cmp(b.0.name())));
            let comm = comms
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map(|(c, _)| c.to_owned());
            let mut peers: Vec<PeerCount> = peers
                .into_iter()
                .map(|((host, service), count)| PeerCount {
                    host,
                    service,
                    count,
                })
                .collect();
            peers.sort_by(|a, b| b.count.cmp(&a.count).then(a.host.cmp(&b.host)));
            peers.truncate(10);
            let fixed_at = (t_now.open_at_end == 0 && t_now.resolved > 0)
                .then(|| in_now.iter().filter_map(|l| l.leak.until).max())
                .flatten();
            Some(Culprit {
                name,
                host,
                comm,
                kinds: kinds.into_iter().map(|(k, _)| k).collect(),
                now: t_now,
                before: t_before,
                growth_per_hour: t_now.new as f64 / hours,
                growth_per_day: t_now.new as f64 / hours * 24.0,
                hosts: hosts.into_iter().map(str::to_owned).collect(),
                peers,
                fixed_at,
                link: Link::default(),
            })
        })
        .collect();
    let rank = |c: &Culprit| (c.now.total(), c.before.total());
    out.sort_by(|a, b| {
        rank(b)
            .cmp(&rank(a))
            .then(b.now.socket_hours.total_cmp(&a.now.socket_hours))
            .then(a.name.cmp(&b.name))
            .then(a.host.cmp(&b.host))
    });
    let (mut active, gone): (Vec<Culprit>, Vec<Culprit>) =
        out.into_iter().partition(|c| c.now.total() > 0);
    active.truncate(top);
    active.extend(gone.into_iter().take(top));
    active
}

/// Leaks open at `w`'s end, oldest first, at most `top`.
pub fn oldest_open(
    leaks: &[LeakLife],
    w: Window,
    threshold: Duration,
    top: usize,
) -> Vec<&LeakLife> {
    let mut open: Vec<&LeakLife> = leaks
        .iter()
        .filter(|l| in_window(l, w, threshold).is_some_and(|p| !p.resolved))
        .collect();
    open.sort_by(|a, b| {
        a.leak
            .holder
            .since
            .cmp(&b.leak.holder.since)
            .then(a.leak.holder.host.cmp(&b.leak.holder.host))
            .then(a.leak.holder.local.cmp(&b.leak.holder.local))
    });
    open.truncate(top);
    open
}

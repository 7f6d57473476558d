//! Trend reports: what leaked in a window, what got fixed, who is getting worse.
//!
//! [`build`] answers one window with one [`Report`] document, the source of every
//! rendering ([`render`]); the same function serves scheduled reports
//! ([`scheduler`]), `finwait report run` and the API. Leaks are read with the leak
//! query as of the window's end ([`LeakQuery::until`]), so a report built today for
//! last week says what last week's report said; the arithmetic is in [`tally`].
//! Reports and their deliveries are stored ([`store`]) and delivered to directories
//! and webhooks ([`deliver`]).

pub mod deliver;
pub mod render;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod tally;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use finwait_vocab::TcpState;
use finwait_vocab::report::{
    BlindHost, Culprit, End, HostPeaks, Link, OpenLeak, Peaks, Report, ReportCoverage, ReportScope,
    SilentHost, Window,
};
use sqlx::Row;

use crate::model::CycleAccount;
use crate::query::leaks::{self, LeakLife, LeakQuery};
use crate::query::{Context, PageReq, QueryError};
use tally::By;

/// How long one report's queries may run (their transaction's statement timeout,
/// instead of the query API's per-question one).
pub const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What to report on.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The schedule's name, or `adhoc`.
    pub schedule: String,
    /// The window.
    pub window: Window,
    /// Days are cut at midnight here.
    pub tz: Tz,
    /// Only these hostnames (empty: all).
    pub hosts: Vec<String>,
    /// Only these services (empty: all).
    pub services: Vec<String>,
}

/// Where report links point.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The dashboard's public base URL (`https://finwait.example:7070`); without it
    /// page links are paths on the collector.
    pub base: Option<String>,
}

impl Links {
    fn page(&self, path: &str, params: &[(&str, &str)]) -> Option<String> {
        let rel = crate::dashboard::view::link(path, params);
        Some(match &self.base {
            Some(b) => format!("{}{rel}", b.trim_end_matches('/')),
            None => rel,
        })
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Quotes `s` for a POSIX shell when it needs it.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Builds the report of `spec`; `baseline` when it is the schedule's first.
#[tracing::instrument(name = "report_build", skip_all, fields(schedule = %spec.schedule, start = %spec.window.start, end = %spec.window.end))]
pub async fn build(
    ctx: &Context,
    links: &Links,
    spec: &Spec,
    baseline: bool,
) -> Result<Report, QueryError> {
    let started = std::time::Instant::now();
    let w = spec.window;
    let prev = w.previous();
    let threshold = Duration::milliseconds((ctx.leak_threshold_s * 1000.0) as i64);
    let q = LeakQuery {
        until: Some(w.end),
        page: PageReq {
            offset: 0,
            limit: Report::MAX_LEAKS as i64,
        },
        ..LeakQuery::since(ctx, prev.start)
    };
    // One read-only transaction with the build's own statement timeout: a week of a
    // fleet takes longer than an on-call question is allowed to.
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        BUILD_TIMEOUT.as_millis()
    )))
    .execute(&mut *tx)
    .await?;
    let mut lives = leaks::lives(&mut *tx, &q).await?;
    let truncated = lives.len() > Report::MAX_LEAKS;
    lives.truncate(Report::MAX_LEAKS);
    lives.retain(|l| spec.admits(l));

    let now = tally::tally(&lives, w, threshold);
    let before = tally::tally(&lives, prev, threshold);
    let since = rfc3339(prev.start);
    let mut services = tally::culprits(&lives, By::Service, w, prev, threshold, Report::TOP);
    for c in &mut services {
        c.link = service_link(links, c, &since);
    }
    let mut processes = tally::culprits(&lives, By::Process, w, prev, threshold, Report::TOP);
    for c in &mut processes {
        c.link = process_link(links, c, &since);
    }
    let oldest_open = tally::oldest_open(&lives, w, threshold, Report::TOP)
        .into_iter()
        .map(|l| open_leak(links, l, w.end))
        .collect();
    let time_to_fix = tally::fix_times(&lives, w, threshold);

    let host_filter = (!spec.hosts.is_empty()).then_some(spec.hosts.as_slice());
    let peaks = peaks(&mut tx, spec, host_filter).await?;
    let mut time_wait =
        leaks::time_wait_pressure(&mut *tx, w.start, Some(w.end), None, 10_000).await?;
    time_wait.retain(|p| host_filter.is_none_or(|h| h.contains(&p.host)));
    time_wait.truncate(Report::TOP);
    let coverage = coverage(&mut tx, w, host_filter).await?;
    tx.commit().await?;

    let changed = baseline
        || now.new > 0
        || now.resolved > 0
        || services.iter().any(|c| c.now.total() != c.before.total());
    let report = Report {
        id: None,
        scope: ReportScope {
            schedule: spec.schedule.clone(),
            window: w,
            previous: prev,
            time_zone: spec.tz.name().to_owned(),
            hosts: spec.hosts.clone(),
            services: spec.services.clone(),
            leak_threshold_s: ctx.leak_threshold_s,
        },
        generated_at: Utc::now(),
        baseline,
        changed,
        now,
        before,
        services,
        processes,
        oldest_open,
        time_to_fix,
        peaks,
        time_wait,
        coverage,
        truncated,
        link: Link {
            page: links.page("/leaks", &[("since", &rfc3339(w.start))]),
            cli: format!(
                "finwait report run --since {} --window {}s",
                rfc3339(w.start),
                w.seconds()
            ),
        },
    };
    tracing::info!(
        leaks = lives.len(),
        new = now.new,
        resolved = now.resolved,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "report built"
    );
    Ok(report)
}

impl Spec {
    fn admits(&self, l: &LeakLife) -> bool {
        let h = &l.leak.holder;
        (self.hosts.is_empty() || self.hosts.contains(&h.host))
            && (self.services.is_empty()
                || h.service
                    .as_ref()
                    .is_some_and(|s| self.services.contains(s)))
    }
}

fn service_link(links: &Links, c: &Culprit, since: &str) -> Link {
    let by_service = c.comm.as_deref() != Some(c.name.as_str()) && c.name != "(unowned)";
    if by_service {
        Link {
            page: links.page("/service", &[("name", &c.name), ("since", since)]),
            cli: format!("finwait leaks --service {} --since {since}", sh(&c.name)),
        }
    } else {
        let comm = c.comm.clone().unwrap_or_default();
        Link {
            page: links.page("/leaks", &[("process", &comm), ("since", since)]),
            cli: format!("finwait leaks --process {} --since {since}", sh(&comm)),
        }
    }
}

fn process_link(links: &Links, c: &Culprit, since: &str) -> Link {
    let host = c.host.clone().unwrap_or_default();
    match c.comm.as_deref() {
        Some(comm) => Link {
            page: links.page(
                "/leaks",
                &[("host", &host), ("process", comm), ("since", since)],
            ),
            cli: format!(
                "finwait leaks --host {} --process {} --since {since}",
                sh(&host),
                sh(comm)
            ),
        },
        None => Link {
            page: links.page("/leaks", &[("host", &host), ("since", since)]),
            cli: format!("finwait leaks --host {} --since {since}", sh(&host)),
        },
    }
}

fn end_of(s: &finwait_vocab::answer::Side) -> End {
    End {
        host: s.host.clone(),
        state: s.state,
        local: s.local.clone(),
        remote: s.remote.clone(),
        service: s.service.clone(),
        comm: s.comm.clone(),
        pid: s.pid,
    }
}

fn open_leak(links: &Links, l: &LeakLife, end: DateTime<Utc>) -> OpenLeak {
    let h = &l.leak.holder;
    let since = h.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    OpenLeak {
        kind: l.leak.kind,
        holder: end_of(h),
        peer: l.leak.peer.as_ref().map(end_of),
        since: h.since,
        age_s: (end - h.since).num_seconds(),
        link: Link {
            page: links.page(
                "/leak",
                &[
                    ("host", &h.host),
                    ("netns", &h.netns.to_string()),
                    ("local", &h.local),
                    ("remote", &h.remote),
                    ("since", &since),
                ],
            ),
            cli: format!("finwait who {}", sh(&h.local)),
        },
    }
}

/// Per-state daily peaks per host.
async fn peaks(
    tx: &mut sqlx::PgConnection,
    spec: &Spec,
    hosts: Option<&[String]>,
) -> Result<Peaks, QueryError> {
    let w = spec.window;
    let rows = sqlx::query(include_str!("../sql/report_peaks.sql"))
        .bind(w.start)
        .bind(w.end)
        .bind(spec.tz.name())
        .bind(hosts)
        .fetch_all(&mut *tx)
        .await?;
    let first = w.start.with_timezone(&spec.tz).date_naive();
    let last = (w.end - Duration::microseconds(1))
        .with_timezone(&spec.tz)
        .date_naive();
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let index: HashMap<NaiveDate, usize> = days.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    let mut by_host: BTreeMap<String, BTreeMap<TcpState, Vec<i64>>> = BTreeMap::new();
    for row in &rows {
        let host: String = row.try_get("hostname")?;
        let day: NaiveDate = row.try_get("day")?;
        let state: i16 = row.try_get("state")?;
        let peak: i64 = row.try_get("peak")?;
        let (Some(&i), Some(state)) = (index.get(&day), TcpState::from_number(state)) else {
            continue;
        };
        by_host
            .entry(host)
            .or_default()
            .entry(state)
            .or_insert_with(|| vec![0; days.len()])[i] = peak;
    }
    let top = |m: &BTreeMap<TcpState, Vec<i64>>, s: TcpState| {
        m.get(&s).and_then(|v| v.iter().max().copied()).unwrap_or(0)
    };
    let mut hosts: Vec<HostPeaks> = by_host
        .into_iter()
        .map(|(host, states)| HostPeaks { host, states })
        .collect();
    hosts.sort_by(|a, b| {
        (
            top(&b.states, TcpState::CloseWait),
            top(&b.states, TcpState::TimeWait),
        )
            .cmp(&(
                top(&a.states, TcpState::CloseWait),
                top(&a.states, TcpState::TimeWait),
            ))
            .then(a.host.cmp(&b.host))
    });
    let hosts_omitted = hosts.len().saturating_sub(Peaks::HOSTS) as i64;
    hosts.truncate(Peaks::HOSTS);
    Ok(Peaks {
        days,
        hosts,
        hosts_omitted,
    })
}

/// Hosts that went silent inside the window, and hosts whose agent is blind to part
/// of their table.
async fn coverage(
    tx: &mut sqlx::PgConnection,
    w: Window,
    hosts: Option<&[String]>,
) -> Result<ReportCoverage, QueryError> {
    let rows = sqlx::query(
        "SELECT hostname, last_report, account, account_at, \
                last_report < $1 - GREATEST(sample_interval_ms * interval '3 milliseconds', \
                                            interval '60 seconds') AS silent_at_end \
         FROM hosts \
         WHERE first_seen < $1 AND ($2::text[] IS NULL OR hostname = ANY($2)) \
         ORDER BY hostname",
    )
    .bind(w.end)
    .bind(hosts)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = ReportCoverage {
        hosts: rows.len() as i64,
        ..ReportCoverage::default()
    };
    for row in &rows {
        let host: String = row.try_get("hostname")?;
        let last: Option<DateTime<Utc>> = row.try_get("last_report")?;
        let silent: Option<bool> = row.try_get("silent_at_end")?;
        if let (Some(last), Some(true)) = (last, silent)
            && last >= w.start
        {
            out.silent.push(SilentHost {
                host: host.clone(),
                last_seen: last,
            });
        }
        let account: Option<sqlx::types::Json<CycleAccount>> = row.try_get("account")?;
        let at: Option<DateTime<Utc>> = row.try_get("account_at")?;
        if let (Some(a), Some(at)) = (account, at) {
            let c = crate::query::coverage::coverage(&a.0, at);
            if !c.complete {
                out.blind.push(BlindHost {
                    host,
                    problems: c.problems,
                });
            }
        }
    }
    Ok(out)
}

//! The trend report: one JSON document per window, the source of every rendering
//! (HTML, Markdown, CSV) and of what the API, the CLI and webhooks carry.
//!
//! A *leak* here is a holder lifetime the leak query reports (a CLOSE_WAIT, a
//! half-closed FIN_WAIT2 or a stuck LAST_ACK) that lasted at least the threshold. It
//! *becomes* a leak once it has lasted the threshold (`since + threshold`) and stops
//! being one when it ends. Against a window `[start, end)`:
//! - **new**: became a leak inside the window;
//! - **ongoing**: became a leak before the window and was still there at its start;
//! - **resolved**: ended inside the window (a new leak can be resolved too);
//! - **open at end**: still there at the window's end;
//! - **socket-hours**: the hours each leak's socket spent in its state inside the
//!   window (from when it was first seen, not from when it crossed the threshold).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::answer::{PeerCount, TimeWaitPressure};
use crate::{LeakKind, TcpState};

/// A time window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First instant inside.
    pub start: DateTime<Utc>,
    /// First instant after.
    pub end: DateTime<Utc>,
}

impl Window {
    /// Its length in seconds.
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).num_seconds()
    }

    /// The window of the same length just before this one.
    pub fn previous(&self) -> Window {
        Window {
            start: self.start - (self.end - self.start),
            end: self.start,
        }
    }
}

/// What a report covers and how it was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportScope {
    /// The schedule's name (`daily`, `weekly`, …), or `adhoc` for one built on demand.
    pub schedule: String,
    /// The window reported on.
    pub window: Window,
    /// The window it is compared with: the same length, just before.
    pub previous: Window,
    /// IANA time zone of the schedule: days (peaks) are cut at its midnight.
    pub time_zone: String,
    /// Only these hostnames (empty: every host).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only these services (empty: every service).
    #[serde(default)]
    pub services: Vec<String>,
    /// A holder is a leak once it has lasted this long, seconds.
    pub leak_threshold_s: f64,
}

/// The leak counts of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Leaks that became leaks inside the window.
    pub new: i64,
    /// Leaks older than the window, still there at its start.
    pub ongoing: i64,
    /// Leaks that ended inside the window.
    pub resolved: i64,
    /// Leaks still there at the window's end.
    pub open_at_end: i64,
    /// Hours leaked sockets spent in their state inside the window.
    pub socket_hours: f64,
    /// Hosts holding at least one leak inside the window.
    pub hosts_affected: i64,
}

impl Tally {
    /// Leaks present at some point of the window.
    pub fn total(&self) -> i64 {
        self.new + self.ongoing
    }
}

/// Where to look next: a dashboard page and the CLI command that shows the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The dashboard page (absolute when the collector knows its public URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The `finwait` command line.
    pub cli: String,
}

/// A service or a process, ranked by its leaks in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    /// The service (a systemd unit, a pod, a container), or, without one, the
    /// process's command name; `(unowned)` when no process held the sockets.
    pub name: String,
    /// The host, for a process row (processes are counted per host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The command name (the most frequent one, for a service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The kinds of leak it holds, most frequent first.
    pub kinds: Vec<LeakKind>,
    /// Its counts in the window.
    pub now: Tally,
    /// Its counts in the previous window.
    pub before: Tally,
    /// New leaks per hour of the window.
    pub growth_per_hour: f64,
    /// New leaks per day of the window.
    pub growth_per_day: f64,
    /// Hosts it leaked on.
    pub hosts: Vec<String>,
    /// The other ends: hosts (and services) holding the peers, most first.
    pub peers: Vec<PeerCount>,
    /// When its last leak ended, if none is open at the window's end and one ended
    /// inside it: the day it was fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_at: Option<DateTime<Utc>>,
    /// Where to look.
    pub link: Link,
}

/// One end of an open leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Hostname.
    pub host: String,
    /// Its state.
    pub state: TcpState,
    /// Local endpoint.
    pub local: String,
    /// Remote endpoint.
    pub remote: String,
    /// Service, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Command name of the first owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// A leak still open at the window's end, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLeak {
    /// Its kind.
    pub kind: LeakKind,
    /// The end that holds it.
    pub holder: End,
    /// The other end, when seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<End>,
    /// First seen in its state.
    pub since: DateTime<Utc>,
    /// Its age at the window's end, seconds.
    pub age_s: i64,
    /// Where to look.
    pub link: Link,
}

/// Time to fix (first seen → ended) of the leaks resolved in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FixTimes {
    /// Leaks resolved.
    pub resolved: i64,
    /// Median, seconds.
    pub median_s: i64,
    /// 90th percentile (nearest rank), seconds.
    pub p90_s: i64,
    /// Longest, seconds.
    pub max_s: i64,
}

/// One host's daily per-state peaks (sum over its namespaces, highest sample of the
/// day), one value per day of [`Peaks::days`] (0 when the host sent nothing that day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPeaks {
    /// Hostname.
    pub host: String,
    /// State → daily peaks.
    pub states: BTreeMap<TcpState, Vec<i64>>,
}

/// Per-state daily peaks per host: the hosts with the highest CLOSE_WAIT (then
/// TIME_WAIT) peak, at most [`Peaks::HOSTS`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peaks {
    /// The days, in the schedule's time zone.
    pub days: Vec<NaiveDate>,
    /// The hosts shown.
    pub hosts: Vec<HostPeaks>,
    /// Hosts with counts that were left out.
    pub hosts_omitted: i64,
}

impl Peaks {
    /// At most this many hosts are shown.
    pub const HOSTS: usize = 25;
}

/// A host that stopped reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentHost {
    /// Hostname.
    pub host: String,
    /// Its last report.
    pub last_seen: DateTime<Utc>,
}

/// A host whose agent could not see everything, with why and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindHost {
    /// Hostname.
    pub host: String,
    /// One sentence per problem, each with its fix.
    pub problems: Vec<String>,
}

/// What the report could not see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportCoverage {
    /// Hosts known to the collector (after the filters).
    pub hosts: i64,
    /// Hosts that went silent inside the window (last report in it, none since).
    pub silent: Vec<SilentHost>,
    /// Hosts whose latest self-account lists problems.
    pub blind: Vec<BlindHost>,
}

/// The trend report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Stored id, once stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// What it covers.
    pub scope: ReportScope,
    /// When it was built.
    pub generated_at: DateTime<Utc>,
    /// The schedule's first report: it sets the baseline, so every leak it finds is
    /// reported as open rather than as new.
    pub baseline: bool,
    /// Something changed against the previous window (new or resolved leaks, or a
    /// culprit whose count moved); a report with `only_changed` is not delivered
    /// when this is false.
    pub changed: bool,
    /// The window's counts.
    pub now: Tally,
    /// The previous window's counts.
    pub before: Tally,
    /// Services by leaks in the window, most first (at most [`Report::TOP`]).
    pub services: Vec<Culprit>,
    /// Processes (per host) by leaks in the window, most first (at most [`Report::TOP`]).
    pub processes: Vec<Culprit>,
    /// The oldest leaks open at the window's end (at most [`Report::TOP`]).
    pub oldest_open: Vec<OpenLeak>,
    /// Time to fix of the leaks resolved in the window.
    pub time_to_fix: FixTimes,
    /// Per-state daily peaks per host.
    pub peaks: Peaks,
    /// TIME_WAIT towards one destination above half of the host's ephemeral port
    /// range at some point of the window (its peak, and the last time it was that
    /// high), worst first (at most [`Report::TOP`]).
    pub time_wait: Vec<TimeWaitPressure>,
    /// What could not be seen.
    pub coverage: ReportCoverage,
    /// More leaks than one report reads ([`Report::MAX_LEAKS`]) overlapped the two
    /// windows: the counts are a lower bound.
    pub truncated: bool,
    /// Where to look at the whole picture.
    pub link: Link,
}

impl Report {
    /// Rows in each ranked list.
    pub const TOP: usize = 20;
    /// Leak lifetimes one report reads at most.
    pub const MAX_LEAKS: usize = 200_000;
}

/// A stored report in a list: enough to choose one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// Its id.
    pub id: i64,
    /// The schedule's name.
    pub schedule: String,
    /// The window.
    pub window: Window,
    /// When it was built.
    pub generated_at: DateTime<Utc>,
    /// It set the baseline.
    pub baseline: bool,
    /// Something changed.
    pub changed: bool,
    /// The window's counts.
    pub now: Tally,
    /// Delivery per destination: `delivered`, `pending`, `failed` or `skipped`.
    #[serde(default)]
    pub deliveries: BTreeMap<String, String>,
}

/// A page of stored reports, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportsPage {
    /// The reports.
    pub reports: Vec<ReportEntry>,
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// How a report is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// The document itself.
    Json,
    /// Self-contained HTML: inline styles, bar charts made of table cells, so mail
    /// clients that drop SVG and scripts show it too; prints on A4.
    Html,
    /// Markdown (GitHub flavour tables).
    Markdown,
    /// One row per leaking service and process.
    Csv,
    /// A short plain-text summary for chat webhooks.
    Text,
}

impl ReportFormat {
    /// Every format, in the order help lists them.
    pub const ALL: [ReportFormat; 5] = [
        ReportFormat::Json,
        ReportFormat::Html,
        ReportFormat::Markdown,
        ReportFormat::Csv,
        ReportFormat::Text,
    ];

    /// Its word.
    pub fn name(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
            ReportFormat::Markdown => "markdown",
            ReportFormat::Csv => "csv",
            ReportFormat::Text => "text",
        }
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
            ReportFormat::Markdown => "md",
            ReportFormat::Csv => "csv",
            ReportFormat::Text => "txt",
        }
    }

    /// HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Json => "application/json",
            ReportFormat::Html => "text/html; charset=utf-8",
            ReportFormat::Markdown => "text/markdown; charset=utf-8",
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Text => "text/plain; charset=utf-8",
        }
    }
}

impl std::str::FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(ReportFormat::Json),
            "html" => Ok(ReportFormat::Html),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            "csv" => Ok(ReportFormat::Csv),
            "text" | "txt" | "chat" => Ok(ReportFormat::Text),
            _ => Err(format!(
                "{s:?} is not a report format (json, html, markdown, csv, text)"
            )),
        }
    }
}

impl std::fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_nonsense_is_named() {
        for f in ReportFormat::ALL {
            assert_eq!(f.name().parse::<ReportFormat>(), Ok(f));
        }
        assert_eq!("md".parse::<ReportFormat>(), Ok(ReportFormat::Markdown));
        let e = "pdf".parse::<ReportFormat>().expect_err("not a format");
        assert!(e.contains("\"pdf\"") && e.contains("markdown"), "{e}");
    }

    #[test]
    fn the_previous_window_has_the_same_length_and_touches() {
        let end = DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let w = Window {
            start: end - chrono::Duration::days(7),
            end,
        };
        let p = w.previous();
        assert_eq!(p.end, w.start);
        assert_eq!(p.seconds(), w.seconds());
        assert_eq!(w.seconds(), 7 * 86_400);
    }
}

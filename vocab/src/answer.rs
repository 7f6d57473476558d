//! The query API's answers (`/api/v1/...`), as the collector writes them and the CLI
//! reads them: one set of types for both sides.
//!
//! Times are RFC 3339 in UTC; `null` means absent. Fields added later carry
//! `#[serde(default)]`, so a CLI reads an older collector's answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Confidence, LeakKind, TcpState, TimerKind};

/// One process holding a socket through one descriptor, with the service it belongs
/// to (named from its cgroup by the collector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Descriptor number.
    pub fd: u32,
    /// Command name.
    pub comm: String,
    /// Command line.
    pub cmdline: String,
    /// The service: a systemd unit (`nginx.service`), a Kubernetes pod, or a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The container's short id, when the process runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A socket lifetime in one state, as stored (`sockets`, `who`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Socket {
    /// Hostname.
    pub host: String,
    /// Network namespace inode.
    pub netns: i64,
    /// TCP state.
    pub state: TcpState,
    /// Local `addr:port`, IPv6 as `[addr]:port`.
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
    /// The first holder's service, else the namespace's (a container's socket that no
    /// process holds any more still belongs to the container).
    #[serde(default)]
    pub service: Option<String>,
    /// The first holder's container, else the namespace's.
    #[serde(default)]
    pub container: Option<String>,
    /// Every holder.
    pub owners: Vec<Owner>,
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
    /// Pending kernel timer; null when none.
    pub timer: Option<TimerKind>,
    /// When it left this state; null while it lasts.
    pub until: Option<DateTime<Utc>>,
}

/// A host's ephemeral port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// Lowest port.
    pub low: i32,
    /// Highest port.
    pub high: i32,
}

/// TIME_WAIT towards one destination filling much of a host's ephemeral port range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeWaitPressure {
    /// Hostname.
    pub host: String,
    /// Local address of the TIME_WAIT sockets.
    pub local_addr: String,
    /// Their destination `addr:port`.
    pub remote: String,
    /// Peak TIME_WAIT count towards it.
    pub count: i64,
    /// Size of the host's ephemeral port range.
    pub ports: i64,
    /// `count / ports`.
    pub ratio: f64,
    /// Last time it was this high.
    pub at: DateTime<Utc>,
}

/// A namespace an agent could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSkip {
    /// Namespace inode.
    pub netns: i64,
    /// Why.
    pub reason: String,
}

/// What a host's agent could and could not see in its last cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// When that cycle was read.
    pub at: DateTime<Utc>,
    /// True when nothing was missed: every process readable, every namespace read,
    /// no batch dropped.
    pub complete: bool,
    /// What was missed and how to fix it, one sentence each; empty when complete.
    pub problems: Vec<String>,
    /// Where the table came from: `netlink` or `proc` (no cookies, no timers).
    pub source: String,
    /// Processes whose descriptors were looked at.
    pub processes_scanned: i64,
    /// Processes whose descriptors could not be read (their sockets have no owner).
    pub processes_unreadable: i64,
    /// Processes that exited while being scanned.
    pub processes_vanished: i64,
    /// Sockets with an inode and no owner found.
    pub sockets_without_owner: i64,
    /// Network namespaces read.
    pub namespaces_read: i64,
    /// Network namespaces not read, and why.
    pub namespaces_skipped: Vec<NamespaceSkip>,
    /// Capabilities the agent lacks for a complete view (`CAP_SYS_PTRACE`, ...).
    pub capabilities_missing: Vec<String>,
    /// The agent's uid.
    pub agent_uid: Option<i64>,
    /// Milliseconds spent reading socket tables.
    pub dump_ms: f64,
    /// Milliseconds spent finding owners.
    pub owner_scan_ms: f64,
    /// Batches the agent dropped from its full buffer since it started.
    pub batches_dropped: i64,
}

/// One host (`hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Hostname.
    pub hostname: String,
    /// Machine id.
    pub machine_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Taken-at time of its last stored report; null before the first.
    pub last_seen: Option<DateTime<Utc>>,
    /// True while its last report is younger than three sampling intervals (at least a
    /// minute); a silent host's table is as of `last_seen`.
    #[serde(default)]
    pub reporting: bool,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Per-state socket counts at the last report.
    pub states: BTreeMap<TcpState, i64>,
    /// Ephemeral port range.
    pub ephemeral_ports: PortRange,
    /// The worst TIME_WAIT destination at the last report, when it fills much of the
    /// ephemeral range.
    pub time_wait_pressure: Option<TimeWaitPressure>,
    /// What its agent could see in its last cycle; null before the first.
    #[serde(default)]
    pub coverage: Option<Coverage>,
}

/// `GET /api/v1/hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostsPage {
    /// Hosts by name.
    pub hosts: Vec<Host>,
    /// Pass as `page_token` for the next page; null on the last.
    pub next_page_token: Option<String>,
}

/// `GET /api/v1/sockets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketsPage {
    /// Hostname.
    pub host: String,
    /// Taken-at time of the report the answer is rebuilt from.
    pub as_of: Option<DateTime<Utc>>,
    /// Sockets.
    pub sockets: Vec<Socket>,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// One end of a leaking connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Its service, else the namespace's.
    #[serde(default)]
    pub service: Option<String>,
    /// Its container, else the namespace's.
    #[serde(default)]
    pub container: Option<String>,
    /// TCP state.
    pub state: TcpState,
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
    /// When it left this state; null while it lasts.
    pub until: Option<DateTime<Utc>>,
}

/// A leak verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leak {
    /// What kind of leak.
    pub kind: LeakKind,
    /// How the peer was found.
    pub confidence: Confidence,
    /// The socket whose process is at fault.
    pub holder: Side,
    /// The other end, when seen.
    pub peer: Option<Side>,
    /// When the leak ended (the holder closed or exited); null while it lasts.
    pub until: Option<DateTime<Utc>>,
    /// One line on what it means and what fixes it.
    pub hint: String,
}

/// `GET /api/v1/leaks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaksPage {
    /// The leaks, oldest first.
    pub leaks: Vec<Leak>,
    /// TIME_WAIT pressure in the same window, worst first (not paged).
    pub time_wait_pressure: Vec<TimeWaitPressure>,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// How many of a group's leaks have their peer on one host and service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCount {
    /// Peer hostname.
    pub host: String,
    /// Peer service, when known.
    #[serde(default)]
    pub service: Option<String>,
    /// Leaks with their peer there.
    pub count: i64,
}

/// Leaks of one kind held by one process on one host (`by=process`), or by one
/// service on any host (`by=service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakGroup {
    /// Hostname (grouped by process); null when grouped by service.
    pub host: Option<String>,
    /// Every host involved.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The holders' service.
    #[serde(default)]
    pub service: Option<String>,
    /// Holding pid (grouped by process; null for sockets no process holds).
    pub pid: Option<u32>,
    /// Its command name.
    pub comm: Option<String>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// The leak kind.
    pub kind: LeakKind,
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
    /// Peer hosts and services, most leaks first.
    pub peers: Vec<PeerCount>,
    /// What it means and what fixes it.
    pub hint: String,
}

/// `GET /api/v1/leaks/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupsPage {
    /// Groups, most leaks first.
    pub groups: Vec<LeakGroup>,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// Both ends of one connection, either possibly unseen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// The socket whose local endpoint is the one asked.
    pub local: Option<Socket>,
    /// The socket whose remote endpoint is the one asked.
    pub remote: Option<Socket>,
}

/// `GET /api/v1/who`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoPage {
    /// The endpoint asked.
    pub endpoint: String,
    /// The instant answered; null for now.
    pub as_of: Option<DateTime<Utc>>,
    /// Connections.
    pub connections: Vec<Connection>,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// One bucket of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Bucket start.
    pub t: DateTime<Utc>,
    /// Peak sockets per state in the bucket.
    pub states: BTreeMap<TcpState, i64>,
}

/// `GET /api/v1/timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePage {
    /// Hostname.
    pub host: String,
    /// Bucket width, seconds.
    pub step_s: i64,
    /// Buckets, oldest first.
    pub points: Vec<Point>,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// The fleet in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPoint {
    /// The minute.
    pub t: DateTime<Utc>,
    /// Sockets per state over reporting hosts (their last reports).
    pub states: BTreeMap<TcpState, i64>,
    /// Hosts reporting.
    pub hosts_reporting: i64,
    /// Hosts silent.
    pub hosts_silent: i64,
    /// CLOSE_WAITs open longer than the leak threshold.
    pub open_leaks: i64,
}

/// `GET /api/v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPage {
    /// Minutes, oldest first (one point per step, the last minute of each).
    pub points: Vec<FleetPoint>,
    /// Step between points, seconds.
    pub step_s: i64,
    /// Next page.
    pub next_page_token: Option<String>,
}

/// The body of every error answer: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error: a stable code and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `InvalidArgument`, `NotFound`, `Unauthenticated`, `Unavailable`, ...
    #[serde(default)]
    pub code: String,
    /// For people; starts with the parameter's name when one is at fault.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_maps_serialise_by_name_in_kernel_order() {
        let p = Point {
            t: DateTime::<Utc>::from_timestamp(0, 0).expect("time"),
            states: [(TcpState::CloseWait, 3), (TcpState::Established, 5)]
                .into_iter()
                .collect(),
        };
        let json = serde_json::to_string(&p).expect("serialise");
        assert_eq!(
            json,
            r#"{"t":"1970-01-01T00:00:00Z","states":{"ESTABLISHED":5,"CLOSE_WAIT":3}}"#
        );
        assert_eq!(serde_json::from_str::<Point>(&json).expect("read back"), p);
    }
}

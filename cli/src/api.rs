//! The collector's JSON answers, as the contract shapes them (`/api/v1/...`).
//!
//! Deserialization is lenient on purpose: a field the collector does not send (yet)
//! takes its default and unknown fields are ignored, so a CLI and a collector a version
//! apart still work. Timestamps stay RFC 3339 strings until they are formatted.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A page of a list endpoint.
pub trait Page: DeserializeOwned {
    /// The endpoint path under the server URL.
    const PATH: &'static str;
    /// The key of the list that pages split (`leaks`, `sockets`, …).
    const LIST: &'static str;
    /// The token of the next page; `None` on the last.
    fn next_page_token(&self) -> Option<&str>;
    /// Appends a later page's items; the next page token becomes the later one's.
    fn append(&mut self, later: Self);
}

macro_rules! page {
    ($ty:ty, $path:literal, $list:ident) => {
        impl Page for $ty {
            const PATH: &'static str = $path;
            const LIST: &'static str = stringify!($list);
            fn next_page_token(&self) -> Option<&str> {
                self.next_page_token.as_deref().filter(|t| !t.is_empty())
            }
            fn append(&mut self, later: Self) {
                self.$list.extend(later.$list);
                self.next_page_token = later.next_page_token;
            }
        }
    };
}

/// One owner of a socket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: Option<String>,
    /// Command line.
    pub cmdline: Option<String>,
    /// Descriptor number.
    pub fd: Option<u32>,
}

/// A socket (sockets and who).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Socket {
    /// Hostname.
    pub host: String,
    /// Network namespace inode.
    pub netns: u64,
    /// TCP state name.
    pub state: String,
    /// Local `addr:port`.
    pub local: String,
    /// Remote `addr:port`.
    pub remote: String,
    /// First owner's pid.
    pub pid: Option<u32>,
    /// First owner's command name.
    pub comm: Option<String>,
    /// First owner's command line.
    pub cmdline: Option<String>,
    /// First owner's descriptor.
    pub fd: Option<u32>,
    /// Every owner.
    pub owners: Vec<Owner>,
    /// When it entered this state.
    pub since: String,
    /// Seconds in this state.
    pub age_s: f64,
    /// Unread bytes.
    pub rx_queue: u64,
    /// Unsent bytes.
    pub tx_queue: u64,
    /// Socket inode (0 for TIME_WAIT).
    pub inode: u64,
    /// Owning uid.
    pub uid: u32,
    /// Kernel timer.
    pub timer: String,
    /// When it left this state; null while in it.
    pub until: Option<String>,
}

/// Ephemeral port range of a host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PortRange {
    /// Lowest port.
    pub low: u32,
    /// Highest port.
    pub high: u32,
}

/// Many TIME_WAIT from one local address to one remote endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pressure {
    /// Hostname (in leaks' list; absent inside a host).
    pub host: Option<String>,
    /// Local address.
    pub local_addr: String,
    /// Remote `addr:port`.
    pub remote: String,
    /// TIME_WAIT sockets.
    pub count: u64,
    /// Ephemeral ports available.
    pub ports: u64,
    /// `count / ports`.
    pub ratio: f64,
    /// When it was seen (in leaks' list).
    pub at: Option<String>,
}

/// One host of `GET /api/v1/hosts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Host {
    /// Hostname.
    pub hostname: String,
    /// Machine id.
    pub machine_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Last report; null when none yet.
    pub last_seen: Option<String>,
    /// Current sockets per state.
    pub states: BTreeMap<String, u64>,
    /// Ephemeral port range.
    pub ephemeral_ports: Option<PortRange>,
    /// Worst TIME_WAIT pressure, if any.
    pub time_wait_pressure: Option<Pressure>,
}

/// `GET /api/v1/hosts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostsPage {
    /// Hosts.
    pub hosts: Vec<Host>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(HostsPage, "/api/v1/hosts", hosts);

/// `GET /api/v1/sockets`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SocketsPage {
    /// Hostname.
    pub host: String,
    /// The report the answer is rebuilt from.
    pub as_of: Option<String>,
    /// Sockets.
    pub sockets: Vec<Socket>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(SocketsPage, "/api/v1/sockets", sockets);

/// One end of a leaking connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Side {
    /// Hostname.
    pub host: String,
    /// Network namespace inode.
    pub netns: u64,
    /// Holding process.
    pub pid: Option<u32>,
    /// Its command name.
    pub comm: Option<String>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// Its descriptor.
    pub fd: Option<u32>,
    /// TCP state.
    pub state: String,
    /// Local `addr:port`.
    pub local: String,
    /// Remote `addr:port`.
    pub remote: String,
    /// When it entered this state.
    pub since: String,
    /// Seconds in this state.
    pub age_s: f64,
    /// Unread bytes.
    pub rx_queue: u64,
    /// When it left this state.
    pub until: Option<String>,
}

/// A leak verdict.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Leak {
    /// `close_wait`, `half_closed_wait`, `last_ack_stuck`.
    pub kind: String,
    /// `exact`, `nat`, `one_sided`.
    pub confidence: String,
    /// The socket whose process is at fault.
    pub holder: Side,
    /// The other end, when seen.
    pub peer: Option<Side>,
    /// When the leak ended; null while it lasts.
    pub until: Option<String>,
    /// One line on what it means and what fixes it.
    pub hint: String,
}

/// `GET /api/v1/leaks`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LeaksPage {
    /// Leaks.
    pub leaks: Vec<Leak>,
    /// TIME_WAIT pressure warnings (not paged: the first page's are kept).
    pub time_wait_pressure: Vec<Pressure>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(LeaksPage, "/api/v1/leaks", leaks);

/// A peer host of a leak group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PeerCount {
    /// Hostname.
    pub host: String,
    /// Leaks with a peer there.
    pub count: u64,
}

/// Leaks of one process and kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Group {
    /// Hostname.
    pub host: String,
    /// Process id.
    pub pid: Option<u32>,
    /// Command name.
    pub comm: Option<String>,
    /// Command line.
    pub cmdline: Option<String>,
    /// Leak kind.
    pub kind: String,
    /// Leaks in the group.
    pub count: u64,
    /// Of which still open.
    pub open: u64,
    /// Oldest leak's start.
    pub oldest: String,
    /// Newest leak's start.
    pub newest: String,
    /// When the last one ended; null while any is open.
    pub ended: Option<String>,
    /// New leaks per hour.
    pub growth_per_hour: f64,
    /// Peer hosts.
    pub peers: Vec<PeerCount>,
    /// One line on what to do.
    pub hint: String,
}

/// `GET /api/v1/leaks/groups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupsPage {
    /// Groups.
    pub groups: Vec<Group>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(GroupsPage, "/api/v1/leaks/groups", groups);

/// Both ends of one connection, either possibly unseen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connection {
    /// The socket whose local endpoint is the one asked.
    pub local: Option<Socket>,
    /// The socket whose remote endpoint is the one asked.
    pub remote: Option<Socket>,
}

/// `GET /api/v1/who`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WhoPage {
    /// The endpoint asked.
    pub endpoint: String,
    /// The instant answered; null for now.
    pub as_of: Option<String>,
    /// Connections.
    pub connections: Vec<Connection>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(WhoPage, "/api/v1/who", connections);

/// One bucket of a timeline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Point {
    /// Bucket start.
    pub t: String,
    /// Peak sockets per state in the bucket.
    pub states: BTreeMap<String, u64>,
}

/// `GET /api/v1/timeline`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TimelinePage {
    /// Hostname.
    pub host: String,
    /// Bucket width, seconds.
    pub step_s: f64,
    /// Buckets.
    pub points: Vec<Point>,
    /// Next page.
    pub next_page_token: Option<String>,
}
page!(TimelinePage, "/api/v1/timeline", points);

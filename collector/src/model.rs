//! The collector's domain types: what a validated agent message says, with every
//! value already in the range its column accepts. Built only by [`crate::validate`].

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// Who an agent says it is (from Hello), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHello {
    /// Kernel hostname.
    pub hostname: String,
    /// /etc/machine-id or override.
    pub machine_id: String,
    /// Boot id: changes on every boot.
    pub boot_id: String,
    /// Operator labels, sorted.
    pub labels: Vec<(String, String)>,
    /// Agent version string.
    pub agent_version: String,
    /// Ephemeral port range.
    pub ephemeral: (u16, u16),
    /// tcp_fin_timeout in seconds.
    pub fin_timeout_s: u32,
    /// Sampling interval in milliseconds.
    pub sample_interval_ms: u32,
    /// The agent's epoch.
    pub epoch: u64,
    /// The agent process's random instance id.
    pub instance_id: String,
}

/// One holder of a socket, process details inlined (sanitised), with the service
/// named from its cgroup: stored as is in the `owners` JSON column and answered as is.
pub type OwnerRecord = finwait_vocab::answer::Owner;

/// One socket, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRecord {
    /// Network namespace inode.
    pub netns: i64,
    /// Identity within (host, netns): the cookie, or a hash of tuple and inode.
    pub sock_key: i64,
    /// Kernel cookie (bits of the u64).
    pub cookie: Option<i64>,
    /// Kernel state number 1..=11.
    pub state: i16,
    /// Local address.
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// Socket inode.
    pub inode: i64,
    /// Owning uid.
    pub uid: i64,
    /// Receive queue.
    pub rx_queue: i64,
    /// Send queue.
    pub tx_queue: i64,
    /// Timer kind, 0 for none.
    pub timer: i16,
    /// Holders, sorted by (pid, fd).
    pub owners: Vec<OwnerRecord>,
}

impl SocketRecord {
    /// True when a stored row needs rewriting for this record.
    pub fn same_tracked(&self, other: &SocketRecord) -> bool {
        self.state == other.state
            && self.inode == other.inode
            && self.uid == other.uid
            && self.timer == other.timer
            && self.owners == other.owners
            && self.local_addr == other.local_addr
            && self.local_port == other.local_port
            && self.remote_addr == other.remote_addr
            && self.remote_port == other.remote_port
    }
}

/// Identity of a socket within a host.
pub type SocketId = (i64, i64);

/// The socket payload of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Every tracked socket.
    Full(Vec<SocketRecord>),
    /// Changes since the previous batch.
    Delta {
        /// New sockets.
        added: Vec<SocketRecord>,
        /// Vanished sockets.
        removed: Vec<SocketId>,
        /// Changed sockets (new record).
        changed: Vec<SocketRecord>,
    },
}

/// A per-state count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    /// Namespace.
    pub netns: i64,
    /// State number.
    pub state: i16,
    /// Count.
    pub count: i32,
}

/// A TIME_WAIT group count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWaitCount {
    /// Namespace.
    pub netns: i64,
    /// Local address.
    pub local_addr: IpAddr,
    /// Remote address.
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// Count.
    pub count: i32,
}

/// A network namespace an agent read, with the container that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// Namespace inode.
    pub netns: i64,
    /// The agent's own namespace.
    pub is_host: bool,
    /// Cgroup path of a process inside it (sanitised; empty for the host's).
    pub cgroup: String,
    /// Service named from that cgroup.
    pub service: Option<String>,
    /// Container short id named from that cgroup.
    pub container: Option<String>,
}

/// The agent's account of one cycle, stored per batch and shown as a host's coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CycleAccount {
    /// `netlink` or `proc`.
    pub source: String,
    /// Microseconds reading tables.
    pub dump_us: u64,
    /// Microseconds finding owners.
    pub owner_scan_us: u64,
    /// Sockets read.
    pub sockets: u64,
    /// Processes looked at.
    pub processes_scanned: u32,
    /// Processes whose descriptors could not be read.
    pub processes_unreadable: u32,
    /// Processes that exited mid-scan.
    pub processes_vanished: u32,
    /// Sockets with an inode and no owner.
    pub sockets_without_owner: u64,
    /// Namespaces read.
    pub namespaces_read: u32,
    /// Namespaces skipped: (inode, reason).
    pub namespaces_skipped: Vec<(i64, String)>,
    /// Batches the agent dropped since it started.
    pub batches_dropped: u64,
    /// Capabilities the agent lacks.
    pub capabilities_missing: Vec<String>,
    /// The agent's effective uid.
    pub agent_uid: Option<u32>,
}

/// One validated batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Agent epoch.
    pub epoch: i64,
    /// Sequence number within the epoch.
    pub seq: i64,
    /// When the agent read the table.
    pub taken_at: DateTime<Utc>,
    /// Sockets.
    pub payload: Payload,
    /// Per-state counts.
    pub counts: Vec<StateCount>,
    /// TIME_WAIT summaries.
    pub time_wait: Vec<TimeWaitCount>,
    /// The namespaces read this cycle.
    pub namespaces: Vec<NamespaceRecord>,
    /// How the cycle went; `None` when the agent sent no account.
    pub account: Option<CycleAccount>,
}

impl Batch {
    /// Number of socket records carried.
    pub fn socket_count(&self) -> usize {
        match &self.payload {
            Payload::Full(s) => s.len(),
            Payload::Delta {
                added,
                removed,
                changed,
            } => added.len() + removed.len() + changed.len(),
        }
    }
}

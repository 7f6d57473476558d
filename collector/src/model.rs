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

/// One holder of a socket, process details inlined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnerRecord {
    /// Process id.
    pub pid: u32,
    /// Descriptor.
    pub fd: u32,
    /// Command name (sanitised).
    pub comm: String,
    /// Command line (sanitised).
    pub cmdline: String,
}

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

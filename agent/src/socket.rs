//! Domain types for one TCP socket as the agent sees it, independent of where it was
//! read from (netlink or /proc) and of the wire format.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

pub use finwait_vocab::{TcpState, TimerKind};

/// A pending timer on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Timer {
    /// Which timer.
    pub kind: TimerKind,
    /// Milliseconds until it fires, at the time of the read.
    pub expires_ms: u32,
    /// Retransmissions (or probes) so far.
    pub retransmits: u8,
}

/// A process that holds at least one socket. Shared by all its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Process {
    /// Process id in the agent's pid namespace.
    pub pid: u32,
    /// Start time in clock ticks since boot: tells a reused pid apart.
    #[serde(skip)]
    pub start_ticks: u64,
    /// Command name (at most 15 bytes, from /proc/PID/stat).
    pub comm: String,
    /// Command line, arguments joined by spaces, at most [`CMDLINE_MAX`] bytes.
    pub cmdline: String,
    /// Its cgroup path (see [`crate::netns::parse_cgroup`]): names its service.
    pub cgroup: String,
    /// The hostname it sees when not the host's (a container's; a pod's name), else "".
    pub hostname: String,
}

/// The longest command line kept, in bytes; longer ones end in `...`.
pub const CMDLINE_MAX: usize = 256;

/// One descriptor of one process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The process.
    pub process: Arc<Process>,
    /// The descriptor number.
    pub fd: u32,
}

impl Owner {
    /// The owner's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }
}

/// One TCP socket, as read in one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Network namespace inode.
    pub netns: u64,
    /// Kernel socket cookie; `None` when read from /proc.
    pub cookie: Option<u64>,
    /// TCP state.
    pub state: TcpState,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (unspecified for listeners).
    pub remote: SocketAddr,
    /// Socket inode; 0 for TIME_WAIT and orphaned FIN_WAIT2 mini-sockets.
    pub inode: u64,
    /// Owning uid.
    pub uid: u32,
    /// Receive queue (unread bytes, or accept backlog for a listener).
    pub rx_queue: u32,
    /// Send queue (unacknowledged bytes, or backlog limit for a listener).
    pub tx_queue: u32,
    /// Pending timer, if any (netlink only).
    pub timer: Option<Timer>,
    /// Every (process, fd) holding the socket, sorted by (pid, fd). Shared: the
    /// sockets of a cycle hold the owner scan's lists, so a cycle neither copies nor
    /// frees one per socket.
    pub owners: Arc<[Owner]>,
}

impl Socket {
    /// The identity of this socket across cycles.
    pub fn key(&self) -> SocketKey {
        match self.cookie {
            Some(cookie) => SocketKey::Cookie {
                netns: self.netns,
                cookie,
            },
            None => SocketKey::Tuple {
                netns: self.netns,
                local: self.local,
                remote: self.remote,
                inode: self.inode,
            },
        }
    }

    /// True when the fields the delta engine tracks are equal. Sampled gauges (queues,
    /// timer expiry, retransmit count) are deliberately not tracked: they change every
    /// cycle and would turn every delta into a full table.
    pub fn same_tracked(&self, other: &Socket) -> bool {
        self.state == other.state
            && self.local == other.local
            && self.remote == other.remote
            && self.inode == other.inode
            && self.uid == other.uid
            && self.timer.map(|t| t.kind) == other.timer.map(|t| t.kind)
            && (Arc::ptr_eq(&self.owners, &other.owners)
                || (self.owners.len() == other.owners.len()
                    && self
                        .owners
                        .iter()
                        .zip(other.owners.iter())
                        .all(|(a, b)| a.fd == b.fd && a.process == b.process)))
    }

    /// True for an IPv6 socket.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.local.ip(), IpAddr::V6(_))
    }
}

/// The identity of a socket across cycles: the kernel cookie within its namespace,
/// or, where /proc gives no cookie, the tuple plus inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketKey {
    /// Identity from netlink.
    Cookie {
        /// Network namespace inode.
        netns: u64,
        /// Kernel socket cookie.
        cookie: u64,
    },
    /// Identity from /proc (no cookie): the inode separates SO_REUSEPORT listeners.
    Tuple {
        /// Network namespace inode.
        netns: u64,
        /// Local endpoint.
        local: SocketAddr,
        /// Remote endpoint.
        remote: SocketAddr,
        /// Socket inode (0 for TIME_WAIT).
        inode: u64,
    },
}

//! Domain types for one TCP socket as the agent sees it, independent of where it was
//! read from (netlink or /proc) and of the wire format.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

/// A TCP state, numbered as the kernel numbers it (`include/net/tcp_states.h`).
///
/// The kernel's `TCP_NEW_SYN_RECV` (request sockets) is reported as [`TcpState::SynRecv`],
/// as `ss` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum TcpState {
    /// Data flows both ways.
    Established = 1,
    /// Our SYN is out, no answer yet.
    SynSent = 2,
    /// Peer's SYN received, SYN-ACK sent.
    SynRecv = 3,
    /// We closed; our FIN is unacknowledged.
    FinWait1 = 4,
    /// We closed, the peer acknowledged, the peer has not closed.
    FinWait2 = 5,
    /// Both closed; waiting 2*MSL.
    TimeWait = 6,
    /// Closed (unconnected, bound sockets).
    Close = 7,
    /// The peer closed; the local application has not.
    CloseWait = 8,
    /// We closed after the peer; our FIN is unacknowledged.
    LastAck = 9,
    /// Listening.
    Listen = 10,
    /// Simultaneous close.
    Closing = 11,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// Bitmask of every state for an INET_DIAG request (bits 1..=12, 12 being
    /// `TCP_NEW_SYN_RECV`).
    pub const ALL_KERNEL_MASK: u32 = 0x1ffe;

    /// Maps the kernel's state number; `TCP_NEW_SYN_RECV` (12) becomes `SynRecv`.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 | 12 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => return None,
        })
    }

    /// The kernel's number for this state.
    pub fn as_kernel(self) -> u8 {
        self as u8
    }

    /// Dense index 0..11, for per-state counters.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// The canonical name, e.g. `CLOSE_WAIT`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// The word `ss` uses in its State column (`ESTAB`, `CLOSE-WAIT`, `FIN-WAIT-2` ...).
    pub fn ss_column(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynRecv => "SYN-RECV",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Close => "UNCONN",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::LastAck => "LAST-ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// Parses the state words `ss` accepts in filters (`close-wait`, `fin-wait-2`,
    /// `established`, `syn-sent` ...), the `ss` column words and the canonical names,
    /// case-insensitively. `-` and `_` are interchangeable.
    pub fn parse_word(word: &str) -> Option<TcpState> {
        let w = word.trim().to_ascii_lowercase().replace('_', "-");
        Some(match w.as_str() {
            "established" | "estab" => TcpState::Established,
            "syn-sent" => TcpState::SynSent,
            "syn-recv" | "syn-received" => TcpState::SynRecv,
            "fin-wait-1" | "fin-wait1" => TcpState::FinWait1,
            "fin-wait-2" | "fin-wait2" => TcpState::FinWait2,
            "time-wait" => TcpState::TimeWait,
            "close" | "closed" | "unconn" => TcpState::Close,
            "close-wait" => TcpState::CloseWait,
            "last-ack" => TcpState::LastAck,
            "listen" | "listening" => TcpState::Listen,
            "closing" => TcpState::Closing,
            _ => return None,
        })
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kernel timer is pending on a socket (`idiag_timer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Retransmission timer (`on` in `ss`).
    Retransmit,
    /// Keepalive timer; also the FIN_WAIT2 timer of an orphaned full socket.
    Keepalive,
    /// TIME_WAIT timer; also the timer of an orphaned FIN_WAIT2 mini-socket.
    TimeWait,
    /// Zero-window probe timer (`persist` in `ss`).
    Probe,
}

impl TimerKind {
    /// Maps `idiag_timer`; 0 (no timer) and unknown values give `None`.
    pub fn from_kernel(n: u8) -> Option<TimerKind> {
        match n {
            1 => Some(TimerKind::Retransmit),
            2 => Some(TimerKind::Keepalive),
            3 => Some(TimerKind::TimeWait),
            4 => Some(TimerKind::Probe),
            _ => None,
        }
    }

    /// The word `ss` prints in `timer:(WORD,...)`.
    pub fn ss_word(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::TimeWait => "timewait",
            TimerKind::Probe => "persist",
        }
    }
}

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
    /// Every (process, fd) holding the socket, sorted by (pid, fd).
    pub owners: Vec<Owner>,
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
            && self.owners.len() == other.owners.len()
            && self
                .owners
                .iter()
                .zip(&other.owners)
                .all(|(a, b)| a.fd == b.fd && a.process == b.process)
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

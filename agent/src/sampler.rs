//! One sampling cycle: read every namespace's TCP table (netlink, or /proc as the
//! fallback), attribute sockets to processes, and account for what it cost and what
//! could not be read.
//!
//! Kernel reads are blocking; async callers run [`TableSource::sample`] on a blocking
//! thread. The [`TableSource`] trait lets the pipeline run on a recorded table in tests.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::socket::{Socket, TcpState};

/// A network namespace in use by at least one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace inode (`net:[INODE]`).
    pub inode: u64,
    /// A process inside it, used to enter it or read its `/proc/PID/net`.
    pub pid: u32,
    /// The cgroup path of that process: which container uses it, if any.
    pub container_hint: String,
    /// True for the agent's own namespace.
    pub is_host: bool,
}

/// Where socket tables are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// netlink sock_diag, falling back to /proc when netlink is refused.
    #[default]
    Auto,
    /// netlink sock_diag only.
    Netlink,
    /// /proc/net/tcp{,6} only (no cookies, no timers).
    Proc,
}

/// The reader actually used in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableReader {
    /// netlink sock_diag.
    Netlink,
    /// /proc/net/tcp{,6}.
    Proc,
}

/// How the sampler reads.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Table source.
    pub source: SourceMode,
    /// Read every network namespace in use, not only the agent's own.
    pub all_netns: bool,
    /// Attribute sockets to processes.
    pub owners: bool,
    /// Threads for the owner scan (0 = one per core).
    pub owner_threads: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            source: SourceMode::Auto,
            all_netns: false,
            owners: true,
            owner_threads: 0,
        }
    }
}

/// The agent's account of one cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CycleStats {
    /// Reader used (`None` only before the first read).
    pub reader: Option<TableReader>,
    /// Wall-clock microseconds of the whole cycle.
    pub cycle_us: u64,
    /// Microseconds spent reading tables.
    pub dump_us: u64,
    /// Microseconds spent finding owners (the descriptor listing overlaps the table
    /// dump, so `dump_us + owner_scan_us` can exceed `cycle_us`).
    pub owner_scan_us: u64,
    /// Sockets read, every state.
    pub sockets: u64,
    /// Sockets per state, indexed by [`TcpState::index`].
    #[serde(serialize_with = "per_state_map")]
    pub per_state: [u32; 11],
    /// Sockets with an inode but no owner found.
    pub sockets_without_owner: u64,
    /// Owner scan details.
    #[serde(flatten)]
    pub owner_scan: OwnerScanCounts,
    /// Namespaces read.
    pub namespaces_read: u32,
    /// Namespaces not read, with the reason.
    pub namespaces_skipped: Vec<(u64, String)>,
    /// Processes whose namespace link could not be read.
    pub namespace_links_unreadable: u32,
    /// Capabilities the agent lacks for a complete view.
    pub capabilities_missing: Vec<String>,
    /// The agent's effective uid (`None` for recorded tables).
    pub agent_uid: Option<u32>,
    /// Batches dropped from the run mode's full buffer since start (set by the sender
    /// side before encoding; 0 in snapshots).
    pub batches_dropped: u64,
}

/// Serialises per-state counts as `{"LISTEN": 3, ...}`, non-zero states only.
fn per_state_map<S: serde::Serializer>(counts: &[u32; 11], ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = ser.serialize_map(None)?;
    for st in TcpState::ALL {
        let n = counts[st.index()];
        if n > 0 {
            m.serialize_entry(st.name(), &n)?;
        }
    }
    m.end()
}

/// What the owner scan did in one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OwnerScanCounts {
    /// Processes listed.
    pub processes_scanned: u32,
    /// Processes that could not be read.
    pub processes_unreadable: u32,
    /// Processes that exited mid-scan.
    pub processes_vanished: u32,
    /// Descriptor links read.
    pub fd_links_read: u64,
    /// Whether a full re-read was needed.
    pub full_rescan: bool,
}

/// One cycle's result.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the read started.
    pub taken_at: SystemTime,
    /// Every socket, every state, in kernel order per namespace and family.
    pub sockets: Vec<Socket>,
    /// The namespaces read (or skipped).
    pub namespaces: Vec<Namespace>,
    /// How the cycle went.
    pub stats: CycleStats,
}

impl Sample {
    /// Sockets per (namespace, state).
    pub fn state_counts(&self) -> BTreeMap<(u64, TcpState), u32> {
        let mut m = BTreeMap::new();
        for s in &self.sockets {
            *m.entry((s.netns, s.state)).or_insert(0) += 1;
        }
        m
    }
}

/// Why a cycle produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// This OS has no netlink sock_diag or /proc/net.
    #[error("socket collection needs Linux (netlink sock_diag or /proc/net/tcp)")]
    Unsupported,
    /// netlink was required and failed.
    #[error("netlink sock_diag failed in the agent's namespace: {0}")]
    Netlink(String),
    /// /proc was used and failed.
    #[error("{0}")]
    ProcNet(String),
    /// The agent's own namespace could not be identified.
    #[error("cannot read the agent's own network namespace: {0}")]
    OwnNamespace(#[source] std::io::Error),
}

/// Anything that yields samples: the kernel, or a recording in tests.
pub trait TableSource: Send {
    /// Reads one cycle.
    fn sample(&mut self) -> Result<Sample, SampleError>;
}

//! Domain types to the wire (finwait.v1). The agent only ever encodes; the collector
//! validates what it decodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::UNIX_EPOCH;

use finwait_proto::v1 as pb;

use crate::delta::{Delta, TimeWaitGroup};
use crate::sampler::{CycleStats, Sample, TableReader};
use crate::socket::{Socket, SocketKey, TcpState, TimerKind};

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn endpoint(a: SocketAddr) -> Option<pb::Endpoint> {
    Some(pb::Endpoint {
        addr: addr_bytes(a.ip()),
        port: u32::from(a.port()),
    })
}

fn timer_kind(k: TimerKind) -> pb::TimerKind {
    match k {
        TimerKind::Retransmit => pb::TimerKind::Retransmit,
        TimerKind::Keepalive => pb::TimerKind::Keepalive,
        TimerKind::TimeWait => pb::TimerKind::TimeWait,
        TimerKind::Probe => pb::TimerKind::Probe,
    }
}

/// Encodes one socket, recording its owners' processes in `processes`.
pub fn socket(s: &Socket, processes: &mut BTreeMap<u32, pb::Process>) -> pb::Socket {
    for o in &s.owners {
        processes.entry(o.pid()).or_insert_with(|| pb::Process {
            pid: o.pid(),
            start_ticks: o.process.start_ticks,
            comm: o.process.comm.clone(),
            cmdline: o.process.cmdline.clone(),
            cgroup: o.process.cgroup.clone(),
            hostname: o.process.hostname.clone(),
        });
    }
    pb::Socket {
        netns: s.netns,
        cookie: s.cookie,
        state: i32::from(s.state.as_kernel()),
        local: endpoint(s.local),
        remote: endpoint(s.remote),
        inode: s.inode,
        uid: s.uid,
        rx_queue: s.rx_queue,
        tx_queue: s.tx_queue,
        timer: s.timer.map(|t| pb::Timer {
            kind: timer_kind(t.kind) as i32,
            expires_ms: t.expires_ms,
            retransmits: u32::from(t.retransmits),
        }),
        owners: s
            .owners
            .iter()
            .map(|o| pb::Owner {
                pid: o.pid(),
                fd: o.fd,
            })
            .collect(),
    }
}

/// Encodes a socket identity.
pub fn key(k: &SocketKey) -> pb::SocketKey {
    match *k {
        SocketKey::Cookie { netns, cookie } => pb::SocketKey {
            netns,
            cookie: Some(cookie),
            ..Default::default()
        },
        SocketKey::Tuple {
            netns,
            local,
            remote,
            inode,
        } => pb::SocketKey {
            netns,
            cookie: None,
            local: endpoint(local),
            remote: endpoint(remote),
            inode,
        },
    }
}

/// The socket part of a batch.
pub enum Sockets<'a> {
    /// Every tracked socket.
    Full(Vec<&'a Socket>),
    /// Changes.
    Delta(&'a Delta),
}

fn stats(s: &CycleStats) -> pb::CycleStats {
    pb::CycleStats {
        source: match s.reader {
            Some(TableReader::Netlink) => pb::TableSource::Netlink as i32,
            Some(TableReader::Proc) => pb::TableSource::Proc as i32,
            None => pb::TableSource::Unspecified as i32,
        },
        dump_us: s.dump_us,
        owner_scan_us: s.owner_scan_us,
        sockets: s.sockets,
        processes_scanned: s.owner_scan.processes_scanned,
        processes_unreadable: s.owner_scan.processes_unreadable,
        processes_vanished: s.owner_scan.processes_vanished,
        fd_links_read: s.owner_scan.fd_links_read,
        namespaces_read: s.namespaces_read,
        namespaces_skipped: s
            .namespaces_skipped
            .iter()
            .map(|(netns, reason)| pb::NamespaceSkip {
                netns: *netns,
                reason: reason.clone(),
            })
            .collect(),
        sockets_without_owner: s.sockets_without_owner,
        batches_dropped: s.batches_dropped,
        capabilities_missing: s.capabilities_missing.clone(),
        agent_uid: s.agent_uid,
    }
}

/// Builds a batch from one cycle's sample and its socket payload.
pub fn batch(
    epoch: u64,
    seq: u64,
    sample: &Sample,
    sockets: Sockets<'_>,
    time_wait: &[(TimeWaitGroup, u32)],
    state_counts: &BTreeMap<(u64, TcpState), u32>,
) -> pb::Batch {
    let mut processes = BTreeMap::new();
    let payload = match sockets {
        Sockets::Full(list) => pb::batch::Payload::Full(pb::FullTable {
            sockets: list
                .into_iter()
                .map(|s| socket(s, &mut processes))
                .collect(),
        }),
        Sockets::Delta(d) => pb::batch::Payload::Delta(pb::Delta {
            added: d.added.iter().map(|s| socket(s, &mut processes)).collect(),
            removed: d.removed.iter().map(key).collect(),
            changed: d
                .changed
                .iter()
                .map(|s| socket(s, &mut processes))
                .collect(),
        }),
    };
    pb::Batch {
        epoch,
        seq,
        taken_at_ms: sample
            .taken_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        payload: Some(payload),
        counts: state_counts
            .iter()
            .map(|(&(netns, state), &count)| pb::StateCount {
                netns,
                state: i32::from(state.as_kernel()),
                count,
            })
            .collect(),
        time_wait: time_wait
            .iter()
            .map(|(g, count)| pb::TimeWaitGroup {
                netns: g.netns,
                local_addr: addr_bytes(g.local),
                remote_addr: addr_bytes(g.remote),
                remote_port: u32::from(g.remote_port),
                count: *count,
            })
            .collect(),
        processes: processes.into_values().collect(),
        namespaces: sample
            .namespaces
            .iter()
            .map(|n| pb::Namespace {
                inode: n.inode,
                container_hint: n.container_hint.clone(),
                is_host: n.is_host,
            })
            .collect(),
        stats: Some(stats(&sample.stats)),
    }
}

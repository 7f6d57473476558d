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
    for o in s.owners.iter() {
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
        chunk: 0,
        more_chunks: false,
    }
}

/// Sockets per chunk of a full table: real sockets with timers and owners encode to
/// about 115 bytes each (measured on `finwait-sockpop bulk`), so about 1.2 MB, far
/// below the collector's message limit (8 MiB by default): a host with a million
/// sockets never needs one giant message.
pub const CHUNK_SOCKETS: usize = 10_000;

/// Splits a full table of more than `per_chunk` sockets into chunks with the batch's
/// epoch and seq, numbered from 0 (`more_chunks` on all but the last). Chunk 0 keeps
/// the counts, TIME_WAIT summary, namespaces and stats; each chunk carries the
/// processes its own sockets reference. Anything else is returned as one message.
pub fn chunks(mut batch: pb::Batch, per_chunk: usize) -> Vec<pb::Batch> {
    let per_chunk = per_chunk.max(1);
    let sockets = match &mut batch.payload {
        Some(pb::batch::Payload::Full(f)) if f.sockets.len() > per_chunk => {
            std::mem::take(&mut f.sockets)
        }
        _ => return vec![batch],
    };
    let processes: BTreeMap<u32, pb::Process> = std::mem::take(&mut batch.processes)
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
    let n = sockets.len().div_ceil(per_chunk);
    let mut out = Vec::with_capacity(n);
    let mut rest = sockets.into_iter();
    for i in 0..n {
        let part: Vec<pb::Socket> = rest.by_ref().take(per_chunk).collect();
        let pids: std::collections::BTreeSet<u32> = part
            .iter()
            .flat_map(|s| s.owners.iter().map(|o| o.pid))
            .collect();
        let mut chunk = if i == 0 {
            std::mem::take(&mut batch)
        } else {
            pb::Batch {
                epoch: batch.epoch,
                seq: batch.seq,
                taken_at_ms: batch.taken_at_ms,
                ..Default::default()
            }
        };
        if i == 0 {
            // Later chunks copy these from `batch`, which chunk 0 just emptied.
            batch.epoch = chunk.epoch;
            batch.seq = chunk.seq;
            batch.taken_at_ms = chunk.taken_at_ms;
        }
        chunk.chunk = i as u32;
        chunk.more_chunks = i + 1 < n;
        chunk.processes = pids
            .iter()
            .filter_map(|p| processes.get(p).cloned())
            .collect();
        chunk.payload = Some(pb::batch::Payload::Full(pb::FullTable { sockets: part }));
        out.push(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(pid: u32) -> pb::Socket {
        pb::Socket {
            owners: vec![pb::Owner { pid, fd: 3 }],
            ..Default::default()
        }
    }

    #[test]
    fn a_large_full_table_is_split_into_numbered_chunks_with_their_own_processes() {
        let b = pb::Batch {
            epoch: 5,
            seq: 7,
            taken_at_ms: 99,
            payload: Some(pb::batch::Payload::Full(pb::FullTable {
                sockets: vec![sock(1), sock(1), sock(2), sock(3), sock(3)],
            })),
            processes: (1..=3)
                .map(|pid| pb::Process {
                    pid,
                    ..Default::default()
                })
                .collect(),
            counts: vec![pb::StateCount::default()],
            stats: Some(pb::CycleStats::default()),
            ..Default::default()
        };
        let parts = chunks(b, 2);
        assert_eq!(parts.len(), 3);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(
                (p.epoch, p.seq, p.taken_at_ms, p.chunk),
                (5, 7, 99, i as u32)
            );
            assert_eq!(p.more_chunks, i < 2);
            assert_eq!(p.counts.is_empty(), i > 0, "counts only in chunk 0");
            assert_eq!(p.stats.is_some(), i == 0, "stats only in chunk 0");
        }
        let pids = |p: &pb::Batch| p.processes.iter().map(|x| x.pid).collect::<Vec<_>>();
        assert_eq!(pids(&parts[0]), vec![1]);
        assert_eq!(pids(&parts[1]), vec![2, 3]);
        assert_eq!(pids(&parts[2]), vec![3]);
        let small = pb::Batch {
            payload: Some(pb::batch::Payload::Full(pb::FullTable {
                sockets: vec![sock(1)],
            })),
            ..Default::default()
        };
        assert_eq!(
            chunks(small.clone(), 2),
            vec![small],
            "small tables stay whole"
        );
    }
}

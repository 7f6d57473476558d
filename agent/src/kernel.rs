//! The kernel-backed [`TableSource`]: netlink sock_diag per namespace (or /proc as the
//! fallback), then the owner scan. Linux only.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::fasthash::{IntMap, IntSet};
use crate::netlink::{DiagSocket, Family, NetlinkError};
use crate::netns;
use crate::owners::{OwnerScanStats, OwnerScanner};
use crate::procnet::{self, ProcNetError};
use crate::sampler::{
    CycleStats, Namespace, OwnerScanCounts, Sample, SampleError, SamplerConfig, SourceMode,
    TableReader, TableSource,
};
use crate::socket::Socket;

impl From<OwnerScanStats> for OwnerScanCounts {
    fn from(s: OwnerScanStats) -> Self {
        OwnerScanCounts {
            processes_scanned: s.processes_scanned,
            processes_unreadable: s.processes_unreadable,
            processes_vanished: s.processes_vanished,
            fd_links_read: s.links_read,
            full_rescan: s.full_rescan,
        }
    }
}

/// The real thing: reads the kernel every cycle, keeping caches between cycles.
#[derive(Debug)]
pub struct KernelSampler {
    /// How to read.
    config: SamplerConfig,
    /// Table reading state.
    tables: Tables,
    /// Owner cache.
    owners: OwnerScanner,
    /// Sockets seen last cycle, to size this cycle's vector once.
    last_len: usize,
    /// Capabilities lacking for a complete view (read once: they do not change).
    missing_caps: Vec<String>,
    /// Our effective uid.
    uid: u32,
}

/// Reads socket tables; separate from the owner scan so both can run at once.
#[derive(Debug)]
struct Tables {
    /// The /proc mount.
    proc_root: String,
    /// The configured source.
    source: SourceMode,
    /// The agent's own namespace inode.
    own_ns: u64,
    /// Resolved reader (Auto becomes Proc for good once netlink is refused).
    reader: TableReader,
    /// One sock_diag socket per namespace, opened once.
    diag: IntMap<u64, DiagSocket>,
    /// Opens a sock_diag socket in the agent's own namespace. A field so that a test
    /// can make the kernel's refusal happen, which it cannot cause for real.
    open_own: fn() -> Result<DiagSocket, NetlinkError>,
}

impl KernelSampler {
    /// Prepares a sampler; fails only when the own namespace cannot be identified.
    pub fn new(config: SamplerConfig) -> Result<KernelSampler, SampleError> {
        let proc_root = "/proc".to_owned();
        let own_ns = netns::ns_inode(&proc_root, "self").map_err(SampleError::OwnNamespace)?;
        let reader = match config.source {
            SourceMode::Proc => TableReader::Proc,
            _ => TableReader::Netlink,
        };
        Ok(KernelSampler {
            owners: OwnerScanner::new(config.owner_threads),
            tables: Tables {
                proc_root,
                source: config.source,
                own_ns,
                reader,
                diag: IntMap::default(),
                open_own: DiagSocket::open,
            },
            missing_caps: crate::privilege::missing_here(config.all_netns),
            uid: rustix::process::geteuid().as_raw(),
            config,
            last_len: 0,
        })
    }

    /// The agent's own namespace inode.
    pub fn own_namespace(&self) -> u64 {
        self.tables.own_ns
    }
}

impl Tables {
    fn read_netlink(&mut self, ns: &Namespace, out: &mut Vec<Socket>) -> Result<(), String> {
        if !self.diag.contains_key(&ns.inode) {
            let sock = if ns.is_host {
                (self.open_own)().map_err(|e| e.to_string())?
            } else {
                netns::open_diag_in(&self.proc_root, ns.pid)?
            };
            self.diag.insert(ns.inode, sock);
        }
        let Some(sock) = self.diag.get_mut(&ns.inode) else {
            return Err("netlink socket missing".to_owned());
        };
        let inode = ns.inode;
        for fam in [Family::V4, Family::V6] {
            let res = sock.dump(fam, &mut |m| {
                if let Some(s) = m.to_socket(inode) {
                    out.push(s);
                }
            });
            match res {
                Ok(()) => {}
                // A kernel without IPv6 answers the AF_INET6 dump with an error.
                Err(NetlinkError::Kernel(_)) if fam == Family::V6 => {}
                Err(e) => {
                    self.diag.remove(&inode);
                    return Err(e.to_string());
                }
            }
        }
        Ok(())
    }

    fn read_proc(&self, ns: &Namespace, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        let dir = if ns.is_host {
            format!("{}/self/net", self.proc_root)
        } else {
            format!("{}/{}/net", self.proc_root, ns.pid)
        };
        procnet::read_dir_tables(Path::new(&dir), ns.inode, out)
    }

    /// Reads every namespace's table into `sockets`, recording skips in `stats`.
    fn read_all(
        &mut self,
        namespaces: &[Namespace],
        sockets: &mut Vec<Socket>,
        stats: &mut CycleStats,
    ) -> Result<(), SampleError> {
        let live: IntSet<u64> = namespaces.iter().map(|n| n.inode).collect();
        self.diag.retain(|ns, _| live.contains(ns));
        for ns in namespaces {
            let before = sockets.len();
            let res = match self.reader {
                TableReader::Netlink => match self.read_netlink(ns, sockets) {
                    Ok(()) => Ok(()),
                    Err(why) if ns.is_host && self.source == SourceMode::Auto => {
                        tracing::warn!(error = %why, "netlink sock_diag refused; falling back to /proc/net/tcp");
                        self.reader = TableReader::Proc;
                        sockets.truncate(before);
                        self.read_proc(ns, sockets).map_err(|e| e.to_string())
                    }
                    Err(why) if ns.is_host => return Err(SampleError::Netlink(why)),
                    Err(why) => Err(why),
                },
                TableReader::Proc => match self.read_proc(ns, sockets) {
                    Ok(()) => Ok(()),
                    Err(e) if ns.is_host => return Err(SampleError::ProcNet(e.to_string())),
                    Err(e) => Err(e.to_string()),
                },
            };
            match res {
                Ok(()) => stats.namespaces_read += 1,
                Err(why) => {
                    sockets.truncate(before);
                    tracing::debug!(netns = ns.inode, reason = %why, "namespace skipped");
                    stats.namespaces_skipped.push((ns.inode, why));
                }
            }
        }
        stats.reader = Some(self.reader);
        Ok(())
    }
}

impl TableSource for KernelSampler {
    #[tracing::instrument(level = "debug", skip_all, err)]
    fn sample(&mut self) -> Result<Sample, SampleError> {
        let taken_at = SystemTime::now();
        let mut stats = CycleStats {
            capabilities_missing: self.missing_caps.clone(),
            agent_uid: Some(self.uid),
            ..CycleStats::default()
        };
        let t0 = Instant::now();
        let own_ns = self.tables.own_ns;
        let namespaces = if self.config.all_netns {
            let (list, unreadable) = netns::discover(&self.tables.proc_root, own_ns);
            stats.namespace_links_unreadable = unreadable;
            list
        } else {
            vec![Namespace {
                inode: own_ns,
                pid: std::process::id(),
                container_hint: String::new(),
                is_host: true,
            }]
        };

        let mut sockets = Vec::with_capacity(self.last_len + self.last_len / 8);
        let (tables, owners) = (&mut self.tables, &self.owners);
        // The table dump and the listing of every process's descriptors are
        // independent kernel work: when a listing is due anyway, do them at once.
        let eager = self.config.owners && owners.listing_due();
        let (read, listing) = if eager {
            std::thread::scope(|s| {
                let lister = s.spawn(|| {
                    let t = Instant::now();
                    (owners.list(), t.elapsed())
                });
                let read = tables.read_all(&namespaces, &mut sockets, &mut stats);
                (read, lister.join().ok())
            })
        } else {
            (tables.read_all(&namespaces, &mut sockets, &mut stats), None)
        };
        read?;
        stats.dump_us = t0.elapsed().as_micros() as u64;
        stats.sockets = sockets.len() as u64;
        self.last_len = sockets.len();

        if self.config.owners {
            let t1 = Instant::now();
            let inodes: IntSet<u64> = sockets
                .iter()
                .map(|s| s.inode)
                .filter(|&i| i != 0)
                .collect();
            // Otherwise a listing is needed only for a socket inode the last one did
            // not see; without one, its owners stand (see `owners`).
            let listing = match listing {
                Some(l) => Some(l),
                None if self.owners.needs_listing(&inodes) => {
                    let t = Instant::now();
                    Some((self.owners.list(), t.elapsed()))
                }
                None => None,
            };
            let (scan, list_time) = match listing {
                Some((listing, list_time)) => (self.owners.resolve(listing, &inodes), list_time),
                None => (self.owners.reuse(), Duration::ZERO),
            };
            let map = self.owners.owners();
            for s in sockets.iter_mut().filter(|s| s.inode != 0) {
                match map.get(&s.inode) {
                    Some(owners) => s.owners = Arc::clone(owners),
                    None => stats.sockets_without_owner += 1,
                }
            }
            stats.owner_scan = scan.into();
            // An eager listing overlapped the dump; count it once, plus the resolution.
            stats.owner_scan_us = if eager {
                (list_time + t1.elapsed()).as_micros() as u64
            } else {
                t1.elapsed().as_micros() as u64
            };
        }
        for s in &sockets {
            stats.per_state[s.state.index()] += 1;
        }
        stats.cycle_us = t0.elapsed().as_micros() as u64;
        tracing::debug!(
            sockets = stats.sockets,
            cycle_us = stats.cycle_us,
            dump_us = stats.dump_us,
            owner_scan_us = stats.owner_scan_us,
            links = stats.owner_scan.fd_links_read,
            "cycle sampled"
        );
        Ok(Sample {
            taken_at,
            sockets,
            namespaces,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<DiagSocket, NetlinkError> {
        Err(NetlinkError::Unavailable(
            std::io::Error::from_raw_os_error(1),
        ))
    }

    fn own_listener_seen(sample: &Sample, port: u16) -> bool {
        sample
            .sockets
            .iter()
            .any(|s| s.local.port() == port && s.state == crate::socket::TcpState::Listen)
    }

    #[test]
    fn auto_falls_back_to_proc_when_netlink_is_refused_and_stays_there() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = l.local_addr().expect("local addr").port();
        let mut sampler = KernelSampler::new(SamplerConfig::default()).expect("sampler");
        sampler.tables.open_own = refused;
        let first = sampler.sample().expect("fallback sample");
        assert_eq!(first.stats.reader, Some(TableReader::Proc));
        assert!(
            own_listener_seen(&first, port),
            "the /proc path still sees our listener"
        );
        assert!(first.sockets.iter().all(|s| s.cookie.is_none()));
        let second = sampler.sample().expect("second sample");
        assert_eq!(
            second.stats.reader,
            Some(TableReader::Proc),
            "no retry storm on netlink"
        );
    }

    #[test]
    fn netlink_only_mode_reports_the_refusal() {
        let config = SamplerConfig {
            source: SourceMode::Netlink,
            ..SamplerConfig::default()
        };
        let mut sampler = KernelSampler::new(config).expect("sampler");
        sampler.tables.open_own = refused;
        let e = sampler.sample().expect_err("netlink-only must fail");
        assert!(matches!(e, SampleError::Netlink(_)), "{e}");
    }

    #[test]
    fn per_state_counts_add_up_to_the_socket_count() {
        let _l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut sampler = KernelSampler::new(SamplerConfig::default()).expect("sampler");
        let s = sampler.sample().expect("sample");
        assert_eq!(
            s.stats.per_state.iter().map(|&n| u64::from(n)).sum::<u64>(),
            s.stats.sockets
        );
        assert!(s.stats.per_state[crate::socket::TcpState::Listen.index()] >= 1);
    }
}

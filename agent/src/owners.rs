//! Attributes sockets to processes by reading `/proc/PID/fd/*` links
//! (`socket:[INODE]`), as `ss -p` and `lsof` do, with a cache across cycles.
//!
//! Cost model: listing a process's descriptors (getdents) is cheap; reading each link
//! costs a few microseconds of kernel time and dominates at scale. So the cache keeps
//! each process's fd → inode map (keyed by pid and start time, so a reused pid starts
//! afresh) and a steady-state cycle reads only links it has not seen: new descriptors,
//! and descriptors whose cached socket left the table (their number may have been
//! reused). If a socket that is new this cycle is still unowned after that, the cache
//! may be stale in a way it cannot see (a descriptor number reused by another file
//! between cycles), so every link is read again once; inodes still unowned after a
//! full read are remembered and do not trigger another.
//!
//! Listing every process's descriptors (getdents on `/proc/PID/fd`, which the kernel
//! answers with a dentry lookup per descriptor) costs about as much as the table dump
//! itself, so a cycle whose table holds no socket inode the last listing did not see
//! reuses that listing's owners ([`OwnerScanner::needs_listing`]): a new socket always
//! gets its owners in the cycle it first appears, and a full listing still happens at
//! least every [`LIST_EVERY`] cycles, which bounds how long an owner change of a socket
//! already in the table (a descriptor passed to, inherited by or closed in another
//! process while the socket lives on) can go unseen.
//!
//! Link reads are spread over worker threads (one per core by default): the kernel
//! work per link is the floor, and it parallelises.
//!
//! A process the cache does not know (every process, on a cold start) has all its
//! links read with the listing itself, so that they overlap the table dump when the
//! listing does. Its descriptors are then not listed with getdents but probed: the
//! links of `0..N` are read, N being the count of open descriptors the kernel gives as
//! the size of `/proc/PID/fd` (Linux 6.2 and later). When the numbers that answer are
//! fewer than N (a table with holes), the directory is listed after all and only the
//! descriptors the probe missed are read; with a size of 0 (older kernels) it is
//! listed first, as for a known process.

use std::ffi::CStr;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{Mode, OFlags, RawDir};

use crate::decimal::{self, DecimalBuf};
use crate::fasthash::{IntMap, IntSet};
use crate::socket::{CMDLINE_MAX, Owner, Process};

/// A full listing happens at least once in this many cycles (one minute at the default
/// 10 s interval), however quiet the table.
pub const LIST_EVERY: u32 = 6;

/// Work below this many links is done on the calling thread.
const PARALLEL_MIN_LINKS: usize = 2048;
/// Links per work item handed to a thread.
const CHUNK: usize = 512;

/// One cycle's account of the owner scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerScanStats {
    /// Processes whose descriptors were listed.
    pub processes_scanned: u32,
    /// Processes whose descriptors could not be read (permission).
    pub processes_unreadable: u32,
    /// Processes that exited mid-scan.
    pub processes_vanished: u32,
    /// Descriptor links read (the cache avoids most in steady state).
    pub links_read: u64,
    /// Whether a full re-read was needed to find a new socket's owner.
    pub full_rescan: bool,
}

/// Everything the cache knows about one live process.
#[derive(Debug)]
struct ProcEntry {
    /// Shared with every [`Owner`] of this process.
    process: Arc<Process>,
    /// fd → socket inode, 0 for descriptors that are not sockets.
    fds: IntMap<u32, u64>,
    /// Cycle number in which the process was last seen, to evict dead ones.
    seen: u64,
    /// Its links cannot be read (ptrace access denied): counted, not retried until
    /// the pid belongs to another process.
    denied: bool,
}

/// The owner map of one cycle: inode → holders, each list sorted by (pid, fd), shared
/// with the sockets that carry it.
pub type OwnerMap = IntMap<u64, Arc<[Owner]>>;

/// What listing one process gave (phase one of a scan).
#[derive(Debug)]
enum Listed {
    /// Its open descriptor numbers.
    Fds {
        /// Start time, to tell a reused pid apart.
        start_ticks: u64,
        /// Command name.
        comm: String,
        /// Descriptor numbers.
        fds: Vec<u32>,
        /// Its links were all read with the listing (a process the cache did not
        /// know): the results are in [`Listing::links`], nothing is left to read.
        prefetched: bool,
        /// `fds` are not listed yet but the candidates `0..N`, N being the count of
        /// open descriptors the kernel reports (see [`OwnerScanner::list`]).
        probe: bool,
        /// Command line and cgroup hint, read with the listing for a process the cache
        /// did not know (in parallel, and overlapping the dump when the listing does).
        details: Option<(String, String)>,
    },
    /// Known to be unreadable (same process as before).
    Denied,
    /// Listing refused.
    Unreadable,
    /// Gone mid-scan.
    Vanished,
}

/// Phase one of a scan: every process and its descriptor numbers, and the links of the
/// processes the cache did not know (all of them on a cold start). Taking it needs only
/// shared access, so it can run while the socket tables are dumped.
#[derive(Debug)]
pub struct Listing {
    /// Per process, what listing gave.
    procs: Vec<(u32, Listed)>,
    /// Links read with the listing, per process (a process may come in several chunks).
    links: Vec<(u32, Links)>,
    /// How many links those are.
    links_read: u64,
}

/// Finds the processes holding socket inodes; keeps its cache between calls.
#[derive(Debug)]
pub struct OwnerScanner {
    /// The /proc mount to read.
    proc_root: String,
    /// Worker threads for listing and link reads.
    threads: usize,
    /// Per-pid cache.
    procs: IntMap<u32, ProcEntry>,
    /// Socket inodes of the previous cycle's table: descriptors pointing at one that
    /// left the table are read again.
    prev_inodes: IntSet<u64>,
    /// Inodes left unowned after a full read; they do not trigger another.
    known_unowned: IntSet<u64>,
    /// Listing counter (cycles that listed descriptors).
    cycle: u64,
    /// Cycles since the last listing.
    since_listing: u32,
    /// The last listing's owners, by inode, reused by cycles that need no listing.
    last_owners: OwnerMap,
    /// Processes listed and unreadable in the last listing, reported again by cycles
    /// that reuse it (the owners they carry come from it).
    last_counts: (u32, u32),
    /// Hostnames of the UTS namespaces processes run in.
    uts: crate::uts::UtsNames,
}

/// A batch of links to read for one process.
struct Work {
    pid: u32,
    fds: Vec<u32>,
}

/// Runs `f` over `items` on up to `threads` scoped threads, largest-first order kept,
/// and returns the results in no particular order.
fn parallel<T: Sync, R: Send>(threads: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        out.push(f(item));
                    }
                    out
                })
            })
            .collect();
        // A worker can only panic on a bug; its share is then missing, which the
        // unowned-socket count shows.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl OwnerScanner {
    /// A scanner over `/proc` using `threads` workers (0 = one per core).
    pub fn new(threads: usize) -> OwnerScanner {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        OwnerScanner {
            proc_root: "/proc".to_owned(),
            threads,
            procs: IntMap::default(),
            prev_inodes: IntSet::default(),
            known_unowned: IntSet::default(),
            cycle: 0,
            since_listing: 0,
            last_owners: OwnerMap::default(),
            last_counts: (0, 0),
            uts: crate::uts::UtsNames::new("/proc"),
        }
    }

    /// Lists and resolves in one go: the holders of every inode in `inodes`.
    pub fn scan(&mut self, inodes: &IntSet<u64>) -> (OwnerMap, OwnerScanStats) {
        let listing = self.list();
        let stats = self.resolve(listing, inodes);
        (self.last_owners.clone(), stats)
    }

    /// True when the next cycle must list descriptors whatever its table holds: the
    /// first cycle, and every [`LIST_EVERY`]th. Known before the table is read, so the
    /// listing can overlap the dump.
    pub fn listing_due(&self) -> bool {
        self.cycle == 0 || self.since_listing + 1 >= LIST_EVERY
    }

    /// True when this cycle's table (`inodes`, its non-zero inodes) needs a listing: it
    /// is due, or the table holds a socket inode the last listing did not see (and that
    /// a full read did not already find unowned).
    pub fn needs_listing(&self, inodes: &IntSet<u64>) -> bool {
        self.listing_due()
            || inodes
                .iter()
                .any(|i| !self.prev_inodes.contains(i) && !self.known_unowned.contains(i))
    }

    /// A cycle without a listing: the last listing's owners stand (every inode in the
    /// table was in it), and its process counts are reported again.
    pub fn reuse(&mut self) -> OwnerScanStats {
        self.since_listing += 1;
        OwnerScanStats {
            processes_scanned: self.last_counts.0,
            processes_unreadable: self.last_counts.1,
            ..OwnerScanStats::default()
        }
    }

    /// The owners found by the last listing, by inode (see [`OwnerScanner::resolve`]).
    pub fn owners(&self) -> &OwnerMap {
        &self.last_owners
    }

    /// Phase one: every process's descriptor numbers, listed in parallel.
    pub fn list(&self) -> Listing {
        let mut pids: Vec<u32> = match std::fs::read_dir(&self.proc_root) {
            Ok(dir) => dir
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect(),
            Err(_) => Vec::new(),
        };
        // Largest first, so that no thread is left with a big process at the end.
        pids.sort_unstable_by_key(|p| {
            std::cmp::Reverse(self.procs.get(p).map_or(0, |e| e.fds.len()))
        });
        let root = self.proc_root.as_str();
        let mut procs = parallel(self.threads, &pids, |&pid| (pid, self.list_one(root, pid)));
        // A process the cache does not know has every link to read: read them now, so
        // that on a cold start they overlap the table dump rather than follow it.
        let fresh: Vec<(u32, &[u32])> = procs
            .iter()
            .filter_map(|(pid, listed)| match listed {
                Listed::Fds {
                    fds,
                    prefetched: true,
                    ..
                } => Some((*pid, fds.as_slice())),
                _ => None,
            })
            .collect();
        let (chunks, _) = self.read_chunks(&fresh);
        drop(fresh);
        // Per process, its chunks' links (None once one was refused).
        let mut by_pid: IntMap<u32, Option<Vec<LinkRead>>> = IntMap::default();
        for (pid, links) in chunks {
            let slot = by_pid.entry(pid).or_insert_with(|| Some(Vec::new()));
            match (links, slot.as_mut()) {
                (Links::Read(read), Some(all)) => all.extend(read),
                _ => *slot = None,
            }
        }
        let mut links = Vec::new();
        let mut links_read = 0;
        for (pid, listed) in &mut procs {
            let Listed::Fds {
                fds,
                prefetched: true,
                probe,
                ..
            } = listed
            else {
                continue;
            };
            let read = match by_pid.remove(pid) {
                Some(Some(read)) => read,
                // No descriptors, no chunks.
                None => Vec::new(),
                Some(None) => {
                    links_read += fds.len() as u64;
                    links.push((*pid, Links::Denied));
                    continue;
                }
            };
            if *probe {
                match settle_probe(root, *pid, fds.len(), read) {
                    Ok((listed_fds, result)) => {
                        *fds = listed_fds;
                        *probe = false;
                        links_read += fds.len() as u64;
                        links.push((*pid, result));
                    }
                    Err(gone) => *listed = gone,
                }
                continue;
            }
            links_read += fds.len() as u64;
            links.push((*pid, Links::Read(read)));
        }
        Listing {
            procs,
            links,
            links_read,
        }
    }

    fn list_one(&self, root: &str, pid: u32) -> Listed {
        let Some((start_ticks, comm)) = read_stat(root, pid) else {
            return Listed::Vanished;
        };
        let cached = self.procs.get(&pid);
        if cached.is_some_and(|e| e.denied && e.process.start_ticks == start_ticks) {
            return Listed::Denied;
        }
        let fresh = cached.is_none_or(|e| e.process.start_ticks != start_ticks);
        let details = fresh.then(|| {
            (
                read_cmdline(root, pid),
                crate::netns::cgroup_hint(root, pid),
            )
        });
        let dir = match open_fd_dir(root, pid) {
            Ok(dir) => dir,
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => return Listed::Unreadable,
            Err(_) => return Listed::Vanished,
        };
        // A process the cache does not know has every link read anyway, and its
        // descriptors are mostly 0..N: reading the links of 0..N, N being the count of
        // open descriptors the kernel reports as the directory's size (Linux 6.2 and
        // later; 0 before), lists them too, without getdents.
        if fresh
            && let Ok(st) = rustix::fs::fstat(&dir)
            && let Ok(n) = u32::try_from(st.st_size)
            && n > 0
        {
            return Listed::Fds {
                start_ticks,
                comm,
                fds: (0..n).collect(),
                prefetched: true,
                probe: true,
                details,
            };
        }
        match list_dir(&dir) {
            Ok(fds) => Listed::Fds {
                start_ticks,
                comm,
                fds,
                prefetched: fresh,
                probe: false,
                details,
            },
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Listed::Unreadable,
            Err(_) => Listed::Vanished,
        }
    }

    /// Phase two: updates the cache from `listing`, reads the links it must, and finds
    /// the holders of every inode in `inodes` (the table's non-zero inodes), which
    /// [`OwnerScanner::owners`] then returns.
    pub fn resolve(&mut self, listing: Listing, inodes: &IntSet<u64>) -> OwnerScanStats {
        self.cycle += 1;
        self.since_listing = 0;
        let mut stats = OwnerScanStats::default();
        let gone: IntSet<u64> = self
            .prev_inodes
            .iter()
            .filter(|i| !inodes.contains(i))
            .copied()
            .collect();

        let mut work = self.merge_listing(listing, &gone, &mut stats);
        self.read_links(&mut work, &mut stats);
        let mut owners = self.owner_map(inodes);

        let new_unowned = inodes
            .iter()
            .any(|i| !owners.contains_key(i) && !self.known_unowned.contains(i));
        if new_unowned {
            stats.full_rescan = true;
            let mut all: Vec<Work> = self
                .procs
                .iter()
                .map(|(&pid, e)| Work {
                    pid,
                    fds: e.fds.keys().copied().collect(),
                })
                .collect();
            self.read_links(&mut all, &mut stats);
            owners = self.owner_map(inodes);
            self.known_unowned = inodes
                .iter()
                .filter(|i| !owners.contains_key(i))
                .copied()
                .collect();
        } else {
            self.known_unowned.retain(|i| inodes.contains(i));
        }
        self.prev_inodes.clone_from(inodes);
        self.last_owners = owners;
        self.last_counts = (stats.processes_scanned, stats.processes_unreadable);
        stats
    }

    /// Brings the cache up to date with a listing and returns the links to read.
    fn merge_listing(
        &mut self,
        listing: Listing,
        gone: &IntSet<u64>,
        stats: &mut OwnerScanStats,
    ) -> Vec<Work> {
        let mut work = Vec::new();
        for (pid, listed) in listing.procs {
            let (start_ticks, comm, fds, prefetched, details) = match listed {
                Listed::Fds {
                    start_ticks,
                    comm,
                    fds,
                    prefetched,
                    details,
                    ..
                } => (start_ticks, comm, fds, prefetched, details),
                Listed::Denied => {
                    if let Some(e) = self.procs.get_mut(&pid) {
                        e.seen = self.cycle;
                    }
                    stats.processes_unreadable += 1;
                    continue;
                }
                Listed::Unreadable => {
                    stats.processes_unreadable += 1;
                    continue;
                }
                Listed::Vanished => {
                    stats.processes_vanished += 1;
                    continue;
                }
            };
            stats.processes_scanned += 1;
            let fresh = self
                .procs
                .get(&pid)
                .is_none_or(|e| e.process.start_ticks != start_ticks);
            if fresh {
                let (cmdline, cgroup) = details.unwrap_or_else(|| {
                    (
                        read_cmdline(&self.proc_root, pid),
                        crate::netns::cgroup_hint(&self.proc_root, pid),
                    )
                });
                let hostname = self.uts.hostname_of(&self.proc_root, pid);
                self.procs.insert(
                    pid,
                    ProcEntry {
                        process: Arc::new(Process {
                            pid,
                            start_ticks,
                            comm,
                            cmdline,
                            cgroup,
                            hostname,
                        }),
                        fds: IntMap::default(),
                        seen: 0,
                        denied: false,
                    },
                );
            }
            let Some(entry) = self.procs.get_mut(&pid) else {
                continue;
            };
            entry.seen = self.cycle;
            // Listed descriptors already cached are kept unless their socket left the
            // table; cached ones no longer listed are dropped.
            let mut cached_listed = 0;
            let mut todo = Vec::new();
            for &fd in &fds {
                match entry.fds.get(&fd) {
                    Some(inode) => {
                        cached_listed += 1;
                        if gone.contains(inode) {
                            todo.push(fd);
                        }
                    }
                    None => todo.push(fd),
                }
            }
            if cached_listed != entry.fds.len() {
                let keep: IntSet<u32> = fds.iter().copied().collect();
                entry.fds.retain(|fd, _| keep.contains(fd));
            }
            if !todo.is_empty() && !prefetched {
                work.push(Work { pid, fds: todo });
            }
        }
        let cycle = self.cycle;
        self.procs.retain(|_, e| e.seen == cycle);
        stats.links_read += listing.links_read;
        self.apply_links(listing.links, stats);
        work
    }

    /// Reads the links in `work` (in parallel when there are many) into the cache.
    fn read_links(&mut self, work: &mut Vec<Work>, stats: &mut OwnerScanStats) {
        let items: Vec<(u32, &[u32])> = work.iter().map(|w| (w.pid, w.fds.as_slice())).collect();
        let (results, read) = self.read_chunks(&items);
        stats.links_read += read;
        self.apply_links(results, stats);
        work.clear();
    }

    /// Reads the links of `work` (pid, descriptors), in parallel when there are many;
    /// returns the results per chunk and how many links were read.
    fn read_chunks(&self, work: &[(u32, &[u32])]) -> (Vec<(u32, Links)>, u64) {
        // Split big processes into chunks so threads share them evenly, and deal the
        // chunks out round-robin over processes: two threads reading one process's
        // descriptors at once contend on its task lock (fget_task), two reading
        // different processes do not.
        let mut items: Vec<(u32, &[u32])> = Vec::new();
        let mut chunks: Vec<(u32, std::slice::Chunks<'_, u32>)> = work
            .iter()
            .map(|&(pid, fds)| (pid, fds.chunks(CHUNK)))
            .collect();
        while !chunks.is_empty() {
            chunks.retain_mut(|(pid, it)| match it.next() {
                Some(c) => {
                    items.push((*pid, c));
                    true
                }
                None => false,
            });
        }
        let total: usize = items.iter().map(|(_, c)| c.len()).sum();
        let root = self.proc_root.as_str();
        let threads = if total < PARALLEL_MIN_LINKS {
            1
        } else {
            self.threads
        };
        let results = parallel(threads, &items, |&(pid, fds)| {
            (pid, read_chunk(root, pid, fds))
        });
        (results, total as u64)
    }

    /// Puts links read (per chunk) into the cache; a refusal marks the process denied.
    fn apply_links(&mut self, results: Vec<(u32, Links)>, stats: &mut OwnerScanStats) {
        for (pid, links) in results {
            if let Some(entry) = self.procs.get_mut(&pid) {
                let Links::Read(links) = links else {
                    if !entry.denied {
                        entry.denied = true;
                        entry.fds.clear();
                        stats.processes_unreadable += 1;
                    }
                    continue;
                };
                if entry.fds.is_empty() {
                    // A new process: sized once rather than grown link by link.
                    entry.fds.reserve(links.len());
                }
                for (fd, inode) in links {
                    match inode {
                        Some(inode) => {
                            entry.fds.insert(fd, inode);
                        }
                        None => {
                            entry.fds.remove(&fd);
                        }
                    }
                }
            }
        }
    }

    /// Builds inode → owners for the wanted inodes from the cache.
    /// Lists equal to the last listing's are that list again (shared, not copied), so
    /// an unchanged socket compares equal by pointer.
    ///
    /// The holders are gathered in one vector and sorted, so that each inode's are
    /// adjacent and in (pid, fd) order: one allocation per inode (its shared list)
    /// rather than a growing vector per inode and a copy of it.
    fn owner_map(&self, inodes: &IntSet<u64>) -> OwnerMap {
        let mut held: Vec<(u64, u32, u32, &Arc<Process>)> = Vec::with_capacity(inodes.len());
        for entry in self.procs.values() {
            for (&fd, &inode) in &entry.fds {
                if inode != 0 && inodes.contains(&inode) {
                    held.push((inode, entry.process.pid, fd, &entry.process));
                }
            }
        }
        held.sort_unstable_by_key(|&(inode, pid, fd, _)| (inode, pid, fd));
        let mut map = OwnerMap::with_capacity_and_hasher(held.len(), Default::default());
        for run in held.chunk_by(|a, b| a.0 == b.0) {
            let inode = run[0].0;
            let same = |prev: &[Owner]| {
                prev.len() == run.len()
                    && prev
                        .iter()
                        .zip(run)
                        .all(|(o, &(_, _, fd, process))| o.fd == fd && o.process == *process)
            };
            let shared = match self.last_owners.get(&inode) {
                Some(prev) if same(prev) => Arc::clone(prev),
                _ => run
                    .iter()
                    .map(|&(_, _, fd, process)| Owner {
                        process: Arc::clone(process),
                        fd,
                    })
                    .collect(),
            };
            map.insert(inode, shared);
        }
        map
    }
}

/// Opens `/proc/PID/fd`.
fn open_fd_dir(root: &str, pid: u32) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        format!("{root}/{pid}/fd").as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Lists the descriptor numbers in `/proc/PID/fd`.
fn list_fds(root: &str, pid: u32) -> std::io::Result<Vec<u32>> {
    list_dir(&open_fd_dir(root, pid)?)
}

/// Lists the descriptor numbers in an open `/proc/PID/fd` with raw getdents (no
/// allocation per entry).
fn list_dir(dir: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut raw = RawDir::new(dir, &mut buf);
    let mut fds = Vec::new();
    while let Some(ent) = raw.next() {
        let ent = ent?;
        if let Some(fd) = parse_fd_name(ent.file_name()) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// Parses a descriptor file name; `.` and `..` give `None`.
fn parse_fd_name(name: &CStr) -> Option<u32> {
    let b = name.to_bytes();
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    b.iter().try_fold(0u32, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u32::from(c - b'0'))
        } else {
            None
        }
    })
}

/// One descriptor's link: `Some(inode)` for a socket, `Some(0)` for another file,
/// `None` when the descriptor is gone.
type LinkRead = (u32, Option<u64>);

/// What reading one chunk of links gave.
#[derive(Debug)]
enum Links {
    /// Per descriptor read.
    Read(Vec<LinkRead>),
    /// The kernel refused (ptrace access check): the process cannot be attributed.
    Denied,
}

/// Reads the links of `fds` in `/proc/PID/fd`.
fn read_chunk(root: &str, pid: u32, fds: &[u32]) -> Links {
    let Ok(dir) = open_fd_dir(root, pid) else {
        return Links::Read(fds.iter().map(|&fd| (fd, None)).collect());
    };
    let mut buf = Vec::with_capacity(64);
    let mut name: DecimalBuf = [0; 20];
    let mut out = Vec::with_capacity(fds.len());
    for &fd in fds {
        let fd_name = decimal::format(&mut name, u64::from(fd));
        buf.clear();
        match rustix::fs::readlinkat(&dir, fd_name, std::mem::take(&mut buf)) {
            Ok(target) => {
                let inode = parse_socket_link(target.as_bytes()).unwrap_or(0);
                buf = target.into_bytes();
                out.push((fd, Some(inode)));
            }
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => return Links::Denied,
            Err(_) => out.push((fd, None)),
        }
    }
    Links::Read(out)
}

/// Settles a probe of `/proc/PID/fd`: `read` holds the links of `0..count`, count
/// being the number of open descriptors. The descriptors are the numbers that
/// answered; when they are fewer than `count` (a table with holes, or one that changed
/// meanwhile), the directory is listed after all and what the probe missed is read.
/// Gives the descriptors and their links, or what the process turned out to be.
fn settle_probe(
    root: &str,
    pid: u32,
    count: usize,
    mut read: Vec<LinkRead>,
) -> Result<(Vec<u32>, Links), Listed> {
    read.retain(|(_, inode)| inode.is_some());
    read.sort_unstable_by_key(|&(fd, _)| fd);
    if read.len() == count {
        return Ok((read.iter().map(|&(fd, _)| fd).collect(), Links::Read(read)));
    }
    let listed = list_fds(root, pid).map_err(|e| {
        if e.kind() == ErrorKind::PermissionDenied {
            Listed::Unreadable
        } else {
            Listed::Vanished
        }
    })?;
    let have: IntSet<u32> = read.iter().map(|&(fd, _)| fd).collect();
    let missing: Vec<u32> = listed
        .iter()
        .copied()
        .filter(|fd| !have.contains(fd))
        .collect();
    let keep: IntSet<u32> = listed.iter().copied().collect();
    read.retain(|(fd, _)| keep.contains(fd));
    let links = match read_chunk(root, pid, &missing) {
        Links::Read(more) => {
            read.extend(more);
            Links::Read(read)
        }
        Links::Denied => Links::Denied,
    };
    Ok((listed, links))
}

/// Parses a `socket:[12345]` link target.
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let rest = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Reads `/proc/PID/stat`: (start time in ticks, comm). `None` when the process is gone.
fn read_stat(root: &str, pid: u32) -> Option<(u64, String)> {
    let mut text = String::with_capacity(512);
    File::open(format!("{root}/{pid}/stat"))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    parse_stat(&text)
}

/// Parses the text of `/proc/PID/stat`; comm may itself contain spaces and `)`.
pub fn parse_stat(text: &str) -> Option<(u64, String)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": state is field 3; starttime is field 22.
    let start = text.get(close + 2..)?.split(' ').nth(19)?.parse().ok()?;
    Some((start, comm))
}

/// Reads `/proc/PID/cmdline`, joined by spaces and shortened to [`CMDLINE_MAX`] bytes.
fn read_cmdline(root: &str, pid: u32) -> String {
    let mut raw = Vec::with_capacity(CMDLINE_MAX + 1);
    if let Ok(f) = File::open(format!("{root}/{pid}/cmdline")) {
        // Read one byte more than kept, to know whether to mark it shortened.
        let _ = f.take(4096).read_to_end(&mut raw);
    }
    shorten_cmdline(&raw)
}

/// Joins NUL-separated arguments with spaces, replaces control characters, and
/// shortens to at most [`CMDLINE_MAX`] bytes on a character boundary (ending `...`).
pub fn shorten_cmdline(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    let text = String::from_utf8_lossy(trimmed);
    let mut out: String = text
        .chars()
        .map(|c| if c == '\0' || c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_parse_and_others_do_not() {
        assert_eq!(parse_socket_link(b"socket:[123456]"), Some(123_456));
        assert_eq!(parse_socket_link(b"pipe:[12]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[]"), None);
    }

    #[test]
    fn stat_with_tricky_comm_parses() {
        let text = "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 0";
        assert_eq!(parse_stat(text), Some((987_654, "we ird) (x".to_owned())));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn cmdline_is_joined_and_shortened_on_a_char_boundary() {
        assert_eq!(
            shorten_cmdline(b"nginx\0-g\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        let long = "é".repeat(300);
        let s = shorten_cmdline(long.as_bytes());
        assert!(s.len() <= CMDLINE_MAX && s.ends_with("..."));
        assert_eq!(shorten_cmdline(b"a\x1bb"), "a b");
    }

    #[test]
    fn fd_names_parse() {
        assert_eq!(parse_fd_name(c"17"), Some(17));
        assert_eq!(parse_fd_name(c"."), None);
        assert_eq!(parse_fd_name(c".."), None);
        assert_eq!(parse_fd_name(c"99999999999"), None);
    }

    #[test]
    fn a_quiet_table_reuses_the_listing_but_a_new_socket_and_the_sixth_cycle_list_again() {
        use std::os::fd::AsRawFd;
        let inode_of = |l: &std::net::TcpListener| {
            let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd()))
                .expect("read own fd link");
            parse_socket_link(link.to_string_lossy().as_bytes()).expect("a socket link")
        };
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut scanner = OwnerScanner::new(1);
        let mut wanted: IntSet<u64> = [inode_of(&first)].into_iter().collect();
        assert!(scanner.listing_due(), "the first cycle lists");
        let listing = scanner.list();
        scanner.resolve(listing, &wanted);
        assert!(
            !scanner.needs_listing(&wanted),
            "same table: the listing stands"
        );
        let reused = scanner.reuse();
        assert_eq!(reused.links_read, 0);
        assert!(
            reused.processes_scanned > 0,
            "the listing's counts are reported again"
        );
        assert!(scanner.owners().contains_key(&inode_of(&first)));

        // A socket the listing did not see: listed at once, and found.
        let second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        wanted.insert(inode_of(&second));
        assert!(
            scanner.needs_listing(&wanted),
            "a new inode needs a listing"
        );
        let listing = scanner.list();
        scanner.resolve(listing, &wanted);
        let owners = scanner
            .owners()
            .get(&inode_of(&second))
            .expect("new socket owned");
        assert_eq!(owners[0].fd, second.as_raw_fd() as u32);

        // However quiet the table, every LIST_EVERY-th cycle lists.
        for _ in 1..LIST_EVERY {
            assert!(!scanner.needs_listing(&wanted));
            scanner.reuse();
        }
        assert!(scanner.listing_due() && scanner.needs_listing(&wanted));
    }

    #[test]
    fn own_sockets_are_found_with_pid_and_fd() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .expect("read own fd link");
        let inode = parse_socket_link(link.to_string_lossy().as_bytes()).expect("a socket link");
        let mut scanner = OwnerScanner::new(2);
        let wanted: IntSet<u64> = [inode].into_iter().collect();
        let (map, stats) = scanner.scan(&wanted);
        let owners = map.get(&inode).expect("own listener has an owner");
        assert_eq!(owners[0].pid(), std::process::id());
        assert_eq!(owners[0].fd, listener.as_raw_fd() as u32);
        assert!(stats.links_read > 0);
        // Second cycle: nothing changed, so no link of this process is read again.
        let (map2, stats2) = scanner.scan(&wanted);
        assert_eq!(map2.get(&inode), map.get(&inode));
        assert!(!stats2.full_rescan);
        assert!(
            stats2.links_read < stats.links_read,
            "{stats2:?} vs {stats:?}"
        );
    }

    #[test]
    fn a_new_process_is_read_whole_whether_its_descriptors_are_dense_or_not() {
        use std::os::fd::AsRawFd;
        let inode_of = |fd: i32| {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("read own fd link");
            parse_socket_link(link.to_string_lossy().as_bytes()).expect("a socket link")
        };
        let low = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        // A descriptor far above the count of open ones: reading 0..count cannot find
        // it, so the probe must fall back to listing.
        let high = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let far = rustix::io::fcntl_dupfd_cloexec(&high, 4000).expect("dup to fd 4000");
        drop(high);
        let wanted: IntSet<u64> = [inode_of(low.as_raw_fd()), inode_of(far.as_raw_fd())]
            .into_iter()
            .collect();
        // A child that holds still: 0, 1, 2 and whatever it inherited.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sleep");
        // Wait (bounded) until it is sleep, not our fork, that /proc shows.
        for _ in 0..200 {
            if read_stat("/proc", child.id()).is_some_and(|(_, comm)| comm == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut scanner = OwnerScanner::new(2);
        let listing = scanner.list();
        let kid = listing.procs.iter().find(|(pid, _)| *pid == child.id());
        let kid_fds = list_fds("/proc", child.id()).expect("list the child's descriptors");
        let _ = child.kill();
        let _ = child.wait();
        match kid.map(|k| &k.1) {
            Some(Listed::Fds {
                fds,
                comm,
                prefetched,
                probe,
                ..
            }) => {
                assert_eq!(comm, "sleep");
                assert!(*prefetched && !*probe);
                assert_eq!(fds, &kid_fds, "as getdents lists them");
                assert!(fds.starts_with(&[0, 1, 2]), "{fds:?}");
            }
            other => panic!("child not listed: {other:?}"),
        }
        let own = listing
            .procs
            .iter()
            .find(|(pid, _)| *pid == std::process::id())
            .expect("own process listed");
        match &own.1 {
            Listed::Fds {
                fds,
                prefetched,
                probe,
                ..
            } => {
                assert!(*prefetched && !*probe, "read whole, probe resolved");
                assert!(fds.contains(&(far.as_raw_fd() as u32)), "{fds:?}");
                assert!(fds.windows(2).all(|w| w[0] < w[1]), "{fds:?}");
            }
            other => panic!("own process not listed: {other:?}"),
        }
        let stats = scanner.resolve(listing, &wanted);
        for (fd, inode) in [
            (low.as_raw_fd(), inode_of(low.as_raw_fd())),
            (far.as_raw_fd(), inode_of(far.as_raw_fd())),
        ] {
            let owners = scanner.owners().get(&inode).expect("socket owned");
            assert_eq!(owners[0].pid(), std::process::id());
            assert_eq!(owners[0].fd, fd as u32);
        }
        assert!(!stats.full_rescan, "{stats:?}");
        // Known now: the next listing reads none of this process's links again.
        let again = scanner.list();
        assert!(again.procs.iter().all(|(pid, l)| *pid != std::process::id()
            || matches!(
                l,
                Listed::Fds {
                    prefetched: false,
                    ..
                }
            )));
    }
}

//! A made-up host's socket table for fleets played in one process
//! ([`crate::fleet`]): M sockets in a realistic mix of states with a few owning
//! processes, of which a fraction is replaced every cycle (closed sockets gone, new
//! ones with fresh cookies). It is a [`TableSource`], so everything after it (delta,
//! encoding, outbox, stream) is the real agent's code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use crate::backoff::Jitter;
use crate::sampler::{CycleStats, Sample, SampleError, TableReader, TableSource};
use crate::socket::{Owner, Process, Socket, TcpState};

/// The host namespace's inode in every synthetic table.
const NETNS: u64 = 4_026_531_840;
/// Sockets per owning process.
const PER_PROCESS: usize = 100;
/// The state mix, one entry per 20 sockets: mostly ESTABLISHED, a few of each
/// interesting state (TIME_WAIT is summarised by the agent, not sent one by one).
const MIX: [TcpState; 20] = [
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::Established,
    TcpState::CloseWait,
    TcpState::FinWait2,
    TcpState::TimeWait,
    TcpState::TimeWait,
    TcpState::SynSent,
    TcpState::Listen,
];

/// One synthetic host.
pub struct SyntheticTable {
    host: Ipv4Addr,
    sockets: Vec<Socket>,
    processes: Vec<Arc<Process>>,
    next_cookie: u64,
    /// Sockets replaced per cycle.
    churn: usize,
    rng: Jitter,
}

impl SyntheticTable {
    /// Host number `index` (its addresses derive from it) with `sockets` sockets, of
    /// which a fraction `churn` (0..=1) is replaced every cycle.
    pub fn new(index: usize, sockets: usize, churn: f64) -> SyntheticTable {
        let host = Ipv4Addr::new(10, (index >> 16) as u8, (index >> 8) as u8, index as u8);
        let processes = (0..sockets.div_ceil(PER_PROCESS).max(1))
            .map(|k| {
                Arc::new(Process {
                    pid: 1000 + k as u32,
                    start_ticks: 1,
                    comm: "java".into(),
                    cmdline: "/usr/bin/java -Xmx4g -jar /srv/app/service.jar --port 443".into(),
                    cgroup: "/system.slice/billing.service".into(),
                    hostname: String::new(),
                })
            })
            .collect();
        let churn = ((sockets as f64) * churn.clamp(0.0, 1.0)).round() as usize;
        let mut t = SyntheticTable {
            host,
            sockets: Vec::with_capacity(sockets),
            processes,
            next_cookie: (index as u64) << 32,
            churn,
            rng: Jitter::new(),
        };
        for i in 0..sockets {
            let s = t.make(i);
            t.sockets.push(s);
        }
        t
    }

    /// A new socket for slot `i`.
    fn make(&mut self, i: usize) -> Socket {
        self.next_cookie += 1;
        let c = self.next_cookie;
        let state = MIX[(c as usize) % MIX.len()];
        let (local_port, remote) = match state {
            TcpState::Listen => (
                8000 + (c % 1000) as u16,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            ),
            TcpState::SynSent | TcpState::FinWait2 => (
                32768 + (c % 28_000) as u16,
                SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 250, (c >> 8) as u8, c as u8)),
                    5432,
                ),
            ),
            _ => (
                if c.is_multiple_of(2) { 443 } else { 5432 },
                SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 200, (c >> 16) as u8, (c >> 8) as u8)),
                    1024 + (c % 60_000) as u16,
                ),
            ),
        };
        let time_wait = state == TcpState::TimeWait;
        Socket {
            netns: NETNS,
            cookie: Some(c),
            state,
            local: SocketAddr::new(IpAddr::V4(self.host), local_port),
            remote,
            inode: if time_wait { 0 } else { 100_000 + c },
            uid: 1000,
            rx_queue: 0,
            tx_queue: 0,
            timer: None,
            owners: if time_wait {
                Arc::from([])
            } else {
                Arc::from([Owner {
                    process: Arc::clone(&self.processes[(i / PER_PROCESS) % self.processes.len()]),
                    fd: 3 + (i % PER_PROCESS) as u32,
                }])
            },
        }
    }

    /// Sockets replaced per cycle.
    pub fn churn(&self) -> usize {
        self.churn
    }
}

impl TableSource for SyntheticTable {
    fn sample(&mut self) -> Result<Sample, SampleError> {
        let n = self.sockets.len();
        if n > 0 {
            for _ in 0..self.churn {
                let i = (self.rng.below(n as u64)) as usize;
                let s = self.make(i);
                self.sockets[i] = s;
            }
        }
        let mut stats = CycleStats {
            reader: Some(TableReader::Netlink),
            sockets: n as u64,
            namespaces_read: 1,
            ..CycleStats::default()
        };
        for s in &self.sockets {
            stats.per_state[s.state.index()] += 1;
        }
        Ok(Sample {
            taken_at: SystemTime::now(),
            sockets: self.sockets.clone(),
            namespaces: Vec::new(),
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{Table, TimeWaitMode, diff};

    #[test]
    fn each_cycle_replaces_the_churn_and_keeps_the_rest() {
        let mut t = SyntheticTable::new(7, 1000, 0.01);
        let a = t.sample().expect("synthetic");
        let b = t.sample().expect("synthetic");
        assert_eq!(a.sockets.len(), 1000);
        let (ta, tb) = (
            Table::from_sockets(a.sockets, TimeWaitMode::Individual),
            Table::from_sockets(b.sockets, TimeWaitMode::Individual),
        );
        let d = diff(&ta, &tb);
        // Up to 10 replaced (a slot can be hit twice in a cycle).
        assert!((1..=10).contains(&d.added.len()), "{}", d.added.len());
        assert_eq!(d.added.len(), d.removed.len());
        assert!(d.changed.is_empty());
    }
}

//! The delta engine: what changed between two tables, and how to apply it.
//!
//! Identity is [`SocketKey`]: (namespace, cookie), or the tuple plus inode where /proc
//! gives no cookie. A socket is *changed* when a tracked field differs
//! ([`Socket::same_tracked`]); sampled gauges (queues, timer expiry) are not tracked.
//! TIME_WAIT sockets carry no owner and can number tens of thousands on a busy client,
//! so by default they leave the socket stream and are summarised per
//! (namespace, local address, remote address, remote port) every cycle.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::fasthash::IntMap;
use crate::socket::{Socket, SocketKey, TcpState};

/// How TIME_WAIT sockets are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TimeWaitMode {
    /// Counted per (namespace, local address, remote address, remote port).
    #[default]
    Summarise,
    /// Sent one by one like every other socket.
    Individual,
}

/// The sockets the delta engine tracks, by identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Sockets by key (kernel-assigned numbers: hashed with [`crate::fasthash`], as
    /// SipHash was a quarter of a steady cycle).
    pub sockets: IntMap<SocketKey, Socket>,
}

impl Table {
    /// Builds the tracked table from one cycle's sockets.
    pub fn from_sockets(sockets: impl IntoIterator<Item = Socket>, mode: TimeWaitMode) -> Table {
        let sockets = sockets.into_iter();
        // Sized once: growing a 10,000-entry map step by step cost more than filling it.
        let mut map = IntMap::with_capacity_and_hasher(sockets.size_hint().0, Default::default());
        map.extend(
            sockets
                .filter(|s| mode == TimeWaitMode::Individual || s.state != TcpState::TimeWait)
                .map(|s| (s.key(), s)),
        );
        Table { sockets: map }
    }

    /// Number of tracked sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// True when both tables hold the same keys with the same tracked fields.
    pub fn same_tracked(&self, other: &Table) -> bool {
        self.len() == other.len()
            && self
                .sockets
                .iter()
                .all(|(k, s)| other.sockets.get(k).is_some_and(|o| s.same_tracked(o)))
    }

    /// Applies a delta in place.
    pub fn apply(&mut self, delta: &Delta) {
        for k in &delta.removed {
            self.sockets.remove(k);
        }
        for s in delta.added.iter().chain(&delta.changed) {
            self.sockets.insert(s.key(), s.clone());
        }
    }
}

/// What changed between two tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Sockets that appeared.
    pub added: Vec<Socket>,
    /// Sockets that disappeared.
    pub removed: Vec<SocketKey>,
    /// Sockets whose tracked fields changed (new record).
    pub changed: Vec<Socket>,
}

impl Delta {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Computes the delta that turns `old` into `new`.
pub fn diff(old: &Table, new: &Table) -> Delta {
    let mut d = Delta::default();
    for (k, s) in &new.sockets {
        match old.sockets.get(k) {
            None => d.added.push(s.clone()),
            Some(o) if !o.same_tracked(s) => d.changed.push(s.clone()),
            Some(_) => {}
        }
    }
    // Every key of `new` was looked up in `old`: when as many matched as `old` holds,
    // nothing was removed and the second pass is skipped.
    let matched = new.sockets.len() - d.added.len();
    if matched != old.sockets.len() {
        d.removed = old
            .sockets
            .keys()
            .filter(|k| !new.sockets.contains_key(k))
            .copied()
            .collect();
    }
    d
}

/// TIME_WAIT sockets sharing (namespace, local address, remote address, remote port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeWaitGroup {
    /// Namespace inode.
    pub netns: u64,
    /// Local address.
    pub local: IpAddr,
    /// Remote address.
    pub remote: IpAddr,
    /// Remote port.
    pub remote_port: u16,
}

/// Counts TIME_WAIT sockets per group, sorted by group.
pub fn summarise_time_wait<'a>(
    sockets: impl IntoIterator<Item = &'a Socket>,
) -> Vec<(TimeWaitGroup, u32)> {
    let mut m: BTreeMap<TimeWaitGroup, u32> = BTreeMap::new();
    for s in sockets
        .into_iter()
        .filter(|s| s.state == TcpState::TimeWait)
    {
        let g = TimeWaitGroup {
            netns: s.netns,
            local: s.local.ip(),
            remote: s.remote.ip(),
            remote_port: s.remote.port(),
        };
        *m.entry(g).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::socket::{Owner, Process, Timer, TimerKind};

    fn arb_state() -> impl Strategy<Value = TcpState> {
        proptest::sample::select(TcpState::ALL.to_vec())
    }

    fn arb_socket() -> impl Strategy<Value = Socket> {
        (
            (0u64..3, proptest::option::of(0u64..40), arb_state()),
            (0u8..4, 1u16..6, 0u8..4, 0u16..6),
            (0u64..20, 0u32..3, any::<u32>(), any::<u32>()),
            proptest::option::of((1u8..5, any::<u32>())),
            proptest::collection::vec((1u32..4, 0u32..5), 0..3),
        )
            .prop_map(
                |(
                    (netns, cookie, state),
                    (la, lp, ra, rp),
                    (inode, uid, rq, wq),
                    timer,
                    owners,
                )| {
                    let mut owners: Vec<Owner> = owners
                        .into_iter()
                        .map(|(pid, fd)| Owner {
                            process: Arc::new(Process {
                                pid,
                                start_ticks: 1,
                                comm: format!("p{pid}"),
                                cmdline: format!("/bin/p{pid}"),
                                cgroup: format!("/system.slice/p{pid}.service"),
                                hostname: String::new(),
                            }),
                            fd,
                        })
                        .collect();
                    owners.sort_by_key(|o| (o.pid(), o.fd));
                    owners.dedup_by_key(|o| (o.pid(), o.fd));
                    Socket {
                        netns,
                        cookie,
                        state,
                        local: SocketAddr::from(([127, 0, 0, la], lp)),
                        remote: SocketAddr::from(([127, 0, 0, ra], rp)),
                        inode,
                        uid,
                        rx_queue: rq,
                        tx_queue: wq,
                        timer: timer.and_then(|(k, e)| {
                            TimerKind::from_kernel(k).map(|kind| Timer {
                                kind,
                                expires_ms: e,
                                retransmits: 0,
                            })
                        }),
                        owners: owners.into(),
                    }
                },
            )
    }

    fn arb_table() -> impl Strategy<Value = Vec<Socket>> {
        proptest::collection::vec(arb_socket(), 0..40)
    }

    proptest! {
        #[test]
        fn applying_the_delta_to_the_old_table_yields_the_new_one(
            old in arb_table(),
            new in arb_table(),
            individual in any::<bool>(),
        ) {
            let mode = if individual { TimeWaitMode::Individual } else { TimeWaitMode::Summarise };
            let old = Table::from_sockets(old, mode);
            let new = Table::from_sockets(new, mode);
            let d = diff(&old, &new);
            let mut rebuilt = old.clone();
            rebuilt.apply(&d);
            prop_assert!(rebuilt.same_tracked(&new));
            // Nothing is sent that did not change.
            prop_assert_eq!(diff(&new, &new), Delta::default());
            prop_assert!(d.added.len() + d.changed.len() <= new.len());
        }

        #[test]
        fn time_wait_counts_add_up(sockets in arb_table()) {
            let groups = summarise_time_wait(&sockets);
            let counted: u32 = groups.iter().map(|(_, n)| n).sum();
            let tw = sockets.iter().filter(|s| s.state == TcpState::TimeWait).count() as u32;
            prop_assert_eq!(counted, tw);
        }
    }

    #[test]
    fn a_state_change_is_a_change_but_a_queue_change_is_not() {
        let s = Socket {
            netns: 1,
            cookie: Some(9),
            state: TcpState::Established,
            local: "10.0.0.1:80".parse().expect("addr"),
            remote: "10.0.0.2:5000".parse().expect("addr"),
            inode: 5,
            uid: 0,
            rx_queue: 0,
            tx_queue: 0,
            timer: None,
            owners: Arc::default(),
        };
        let old = Table::from_sockets([s.clone()], TimeWaitMode::Summarise);
        let mut q = s.clone();
        q.rx_queue = 100;
        assert!(diff(&old, &Table::from_sockets([q], TimeWaitMode::Summarise)).is_empty());
        let mut cw = s;
        cw.state = TcpState::CloseWait;
        let d = diff(&old, &Table::from_sockets([cw], TimeWaitMode::Summarise));
        assert_eq!((d.added.len(), d.changed.len(), d.removed.len()), (0, 1, 0));
    }
}

//! What each domain word means in practice: for every TCP state, leak kind, confidence
//! and the TIME_WAIT pressure warning, what it means, who is at fault, what fixes it
//! and what does not, including the advice that is commonly given and wrong. Written
//! from how Linux closes connections (see the product design).
//!
//! The texts live here, beside the words they explain, so that `finwait explain` and
//! the collector's pages show the same explanation. An entry is keyed by the
//! vocabulary's value ([`Topic`]), never by a name of its own, so every spelling the
//! vocabulary accepts finds it. How an entry is laid out is the reader's business.

use crate::verdict::TIME_WAIT_PRESSURE;
use crate::{Confidence, LeakKind, TcpState};

/// What an entry explains, as the shared vocabulary names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A TCP state.
    State(TcpState),
    /// A leak verdict's kind.
    Kind(LeakKind),
    /// How sure a leak's pairing with its peer is.
    Confidence(Confidence),
    /// TIME_WAIT filling the ephemeral port range, reported beside leaks.
    TimeWaitPressure,
}

impl Topic {
    /// The canonical name (`CLOSE_WAIT`, `close_wait`, `nat`).
    pub fn name(self) -> &'static str {
        match self {
            Topic::State(s) => s.name(),
            Topic::Kind(k) => k.name(),
            Topic::Confidence(c) => c.name(),
            Topic::TimeWaitPressure => TIME_WAIT_PRESSURE,
        }
    }

    /// What sort of name it is, as a heading shows it.
    pub fn category(self) -> &'static str {
        match self {
            Topic::State(_) => "TCP state",
            Topic::Kind(_) => "leak verdict",
            Topic::Confidence(_) => "confidence of the peer match",
            Topic::TimeWaitPressure => "warning (not a leak)",
        }
    }

    /// Every topic `name` spells, states first: `close_wait` is a state and a verdict.
    pub fn parse(name: &str) -> Vec<Topic> {
        let mut found = Vec::new();
        found.extend(TcpState::parse(name).map(Topic::State));
        found.extend(LeakKind::parse(name).map(Topic::Kind));
        found.extend(Confidence::parse(name).map(Topic::Confidence));
        if name.trim().to_ascii_lowercase().replace('-', "_") == TIME_WAIT_PRESSURE {
            found.push(Topic::TimeWaitPressure);
        }
        found
    }
}

/// One explained name.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// What it explains.
    pub topic: Topic,
    /// What it means.
    pub means: &'static str,
    /// Which side is at fault.
    pub fault: &'static str,
    /// What fixes it.
    pub fixes: &'static str,
    /// What does not, although it is often suggested.
    pub not: &'static str,
}

/// The entry for `topic`: every topic has exactly one.
pub fn entry(topic: Topic) -> &'static Entry {
    STATES
        .iter()
        .chain(&VERDICTS)
        .find(|e| e.topic == topic)
        .expect("every topic of the vocabulary has an entry")
}

/// The entries for `name` in any spelling the vocabulary accepts: a state, a verdict
/// or both (`close_wait` is both), states first; empty when `name` is unknown.
pub fn entries_for(name: &str) -> Vec<&'static Entry> {
    Topic::parse(name).into_iter().map(entry).collect()
}

/// Every explained name, canonical spelling, comma separated (for error messages).
pub fn known_names() -> String {
    STATES
        .iter()
        .chain(&VERDICTS)
        .map(|e| e.topic.name())
        .collect::<Vec<_>>()
        .join(", ")
}

const CLOSE_WAIT_FIXES: &str = "Fix the holder's close path: close the socket when a read returns \
end-of-file or an error, on every branch (finally, defer, Drop), and make connection pools \
validate or evict connections the server has closed. Restarting the process frees the \
descriptors as a stopgap. `finwait leaks` names the process, `finwait who` the peer.";

const CLOSE_WAIT_NOT: &str = "Keepalive sysctls (net.ipv4.tcp_keepalive_time, _intvl, _probes) \
do not clear CLOSE_WAIT: at most a probe meets a reset and the kernel drops the connection \
while the process still holds the leaked descriptor. net.ipv4.tcp_fin_timeout does not apply \
(it bounds the peer's orphaned FIN_WAIT2), and restarting or fixing the peer does not help.";

const TIME_WAIT_FIXES: &str = "Reuse connections (HTTP keep-alive, connection pools) instead \
of opening one per request; widen net.ipv4.ip_local_port_range; set net.ipv4.tcp_tw_reuse=1 \
so new outgoing connections may reuse TIME_WAIT ports safely (it relies on TCP timestamps); \
spread connections over more destination addresses or ports; or let the server close first \
so that TIME_WAIT lands on it.";

const TIME_WAIT_NOT: &str = "net.ipv4.tcp_fin_timeout does not shorten TIME_WAIT: its 60 s is \
fixed in the kernel. net.ipv4.tcp_tw_recycle was removed in Linux 4.12 because it broke \
clients behind NAT. An SO_LINGER timeout of 0 avoids TIME_WAIT only by resetting the \
connection, which can throw away data in flight. It is not a leak: restarting the process \
changes nothing.";

/// The TCP states.
pub static STATES: [Entry; 11] = [
    Entry {
        topic: Topic::State(TcpState::Established),
        means: "The connection is open in both directions: the handshake completed and neither \
side has sent a FIN. Data may flow or it may sit idle; an idle connection costs a descriptor \
and a little memory.",
        fault: "Nobody, on its own. A count that only grows for one process is a leak of another \
kind: a client or pool that opens connections and never reuses or closes them, with both ends \
staying ESTABLISHED.",
        fixes: "For a growing count: bound the connection pool, give idle connections a maximum \
lifetime in the application, and close what is opened. `finwait timeline` over days tells \
growth from load.",
        not: "TCP keepalive (net.ipv4.tcp_keepalive_time) only ends connections whose peer has \
vanished; it never closes a healthy idle connection, so it does not cap a pool that leaks \
live connections.",
    },
    Entry {
        topic: Topic::State(TcpState::SynSent),
        means: "This end called connect() and sent a SYN; no SYN-ACK has come back. The kernel \
retransmits the SYN (net.ipv4.tcp_syn_retries, default 6, about two minutes) and then \
connect() fails with ETIMEDOUT.",
        fault: "The way to the server, or the server: it is down or unreachable, a firewall \
silently drops the SYN, or its listen queue is full. A pile of SYN_SENT is a client that keeps \
trying an upstream that does not answer.",
        fixes: "Check the destination (is anything listening? does a firewall drop instead of \
reject?), routing and security groups; give the client a short connect timeout and back off \
between attempts so they do not pile up.",
        not: "Raising limits on the client (somaxconn, descriptors, ephemeral ports) does \
nothing: the SYN is not being answered. Lowering tcp_syn_retries only makes the failure come \
sooner.",
    },
    Entry {
        topic: Topic::State(TcpState::SynRecv),
        means: "A listening socket received a SYN and answered SYN-ACK; the client's final ACK \
has not arrived. The SYN-ACK is retried net.ipv4.tcp_synack_retries times (default 5, about a \
minute).",
        fault: "A SYN flood or scan (clients that never complete the handshake), packet loss on \
the way back to the client, or a server whose accept queue is full: when the application \
accepts too slowly the kernel drops the final ACK (tcp_abort_on_overflow=0) and the request \
stays here.",
        fixes: "Check listen overflows (`nstat -az TcpExtListenOverflows TcpExtListenDrops`); \
make the application accept faster and raise its listen() backlog together with \
net.core.somaxconn and net.ipv4.tcp_max_syn_backlog; keep net.ipv4.tcp_syncookies=1 against \
floods.",
        not: "Raising net.core.somaxconn alone does nothing when the application passes a small \
backlog to listen() (the smaller wins). Keepalive does not apply to a connection that never \
completed its handshake.",
    },
    Entry {
        topic: Topic::State(TcpState::FinWait1),
        means: "This end closed (close() or shutdown(SHUT_WR)) and sent its FIN, which the peer \
has not acknowledged. Normally it lasts one round trip; it lingers when data is still queued \
ahead of the FIN and the peer advertises a zero window, or when the peer is gone.",
        fault: "The peer or the network: a peer that stopped reading (its receive buffer is \
full), a peer host that vanished, or a path that drops packets. The local application has \
done its part.",
        fixes: "Find out why the peer does not read or acknowledge (its receive queue in \
`finwait sockets` on the peer host). The kernel gives up on an orphaned FIN_WAIT1 after \
net.ipv4.tcp_orphan_retries retransmissions; TCP_USER_TIMEOUT on the socket bounds it too.",
        not: "net.ipv4.tcp_fin_timeout does not govern FIN_WAIT1 (it bounds orphaned \
FIN_WAIT2), and keepalive does not run on a closing socket.",
    },
    Entry {
        topic: Topic::State(TcpState::FinWait2),
        means: "This end sent a FIN and the peer acknowledged it; it now waits for the peer's \
FIN. The peer is in CLOSE_WAIT: its application has not called close(). If the local process \
already closed the socket (orphaned), the kernel drops it after net.ipv4.tcp_fin_timeout \
(default 60 s). If the process only called shutdown(SHUT_WR) and still holds the socket \
(half-closed), no timer runs: it waits as long as the peer does.",
        fault: "Usually the peer's application, which holds a CLOSE_WAIT it never closes: find \
it with `finwait who` on this socket's local endpoint, or `finwait leaks`. A half-closed \
FIN_WAIT2 held for long also means the local application waits for the peer's end-of-file \
without a deadline.",
        fixes: "Fix the peer's close path (see CLOSE_WAIT). On the local side, put a deadline \
on the read after shutdown() and close the socket when it expires.",
        not: "net.ipv4.tcp_fin_timeout only bounds an orphaned FIN_WAIT2, not one still held \
by a process; lowering it also erases the evidence of the peer's leak sooner. Keepalive \
sysctls do not make the peer close either.",
    },
    Entry {
        topic: Topic::State(TcpState::TimeWait),
        means: "The end that closed first waits twice the maximum segment lifetime (60 s on \
Linux) so that late segments of the old connection cannot be taken for a new one with the \
same addresses and ports. It has no owning process and no descriptor (inode 0).",
        fault: "Nobody: it is normal. Tens of thousands mean many short connections that this \
host closes first. It becomes a problem only when one local address to one remote \
address:port uses most of the ephemeral port range: then connect() fails with \
EADDRNOTAVAIL (TIME_WAIT pressure in `finwait hosts`).",
        fixes: TIME_WAIT_FIXES,
        not: TIME_WAIT_NOT,
    },
    Entry {
        topic: Topic::State(TcpState::Close),
        means: "No connection: a TCP socket that exists but is neither connected nor listening. \
It is seen briefly between socket() and connect() or listen(), and after a connect() failed \
or a connection was reset while the process still holds the descriptor.",
        fault: "When many linger, the owning process: it keeps sockets whose connect failed or \
that were reset, without closing them (a descriptor leak).",
        fixes: "Close the socket on every error path (failed connect, reset, timeout) in the \
owning process; `finwait sockets --host H --state CLOSE` shows which process holds them.",
        not: "No sysctl or timer ends a CLOSE socket held by a process: keepalive and \
tcp_fin_timeout do not apply; only close() or the process exiting frees it.",
    },
    Entry {
        topic: Topic::State(TcpState::CloseWait),
        means: "The peer closed its side (its FIN arrived and was acknowledged) and the local \
application has not called close(). Reads return end-of-file; the connection waits for this \
end to close, for as long as the process holds the descriptor. The peer sits in FIN_WAIT2 \
meanwhile (until its tcp_fin_timeout if it already closed its socket).",
        fault: "The local process that holds the socket: it never closed a connection its peer \
closed, typically a missing close() on an end-of-file or error path, or a pool that keeps \
connections the server closed. It is a descriptor leak.",
        fixes: CLOSE_WAIT_FIXES,
        not: CLOSE_WAIT_NOT,
    },
    Entry {
        topic: Topic::State(TcpState::LastAck),
        means: "The peer closed first, then the local application closed too and sent its FIN; \
the peer's final acknowledgement has not arrived. Normally it lasts one round trip; the \
kernel retransmits the FIN and gives up after its retries.",
        fault: "The peer or the path, not the local application: the peer host is gone or has \
forgotten the connection, or a firewall, NAT or conntrack entry expired and now drops the \
packets.",
        fixes: "Check the path to the peer (firewall and NAT idle timeouts shorter than the \
connection's idle time) and whether the peer host is alive. The sockets clear by themselves \
after the retransmissions.",
        not: "Changing the local application does not help (it already closed); \
tcp_fin_timeout and keepalive sysctls do not govern LAST_ACK.",
    },
    Entry {
        topic: Topic::State(TcpState::Listen),
        means: "A server socket waiting for connections (after listen()). For a listener the \
receive queue is the number of connections waiting to be accepted and the send queue is the \
backlog limit.",
        fault: "Nobody. A receive queue near the backlog means the application accepts too \
slowly.",
        fixes: "Nothing to fix on its own; for a full queue, accept faster or raise the \
listen() backlog (capped by net.core.somaxconn).",
        not: "It is not a connection: its count says nothing about leaks, and connection \
timeouts and keepalive do not apply to it.",
    },
    Entry {
        topic: Topic::State(TcpState::Closing),
        means: "Both ends sent a FIN at the same time (simultaneous close) and this end's FIN \
is not acknowledged yet. Rare and short; it then goes to TIME_WAIT.",
        fault: "When it lingers, the path: the peer's acknowledgement is lost or the peer \
vanished.",
        fixes: "Look for packet loss towards the peer; the kernel gives up after its \
retransmissions.",
        not: "Neither application is leaking; tcp_fin_timeout and keepalive sysctls do not \
apply.",
    },
];

/// Leak kinds, the TIME_WAIT warning, and confidences.
pub static VERDICTS: [Entry; 7] = [
    Entry {
        topic: Topic::Kind(LeakKind::CloseWait),
        means: "A socket stayed in CLOSE_WAIT longer than the leak threshold (the collector's, \
or --min-age) while a process held it: the peer closed the connection, the holder never did.",
        fault: "The holder (HOST, PID, COMM in `finwait leaks`): its process leaks the \
descriptor. The peer, when shown, is the victim: it is, or was, in FIN_WAIT2 waiting for a FIN \
that never comes.",
        fixes: CLOSE_WAIT_FIXES,
        not: CLOSE_WAIT_NOT,
    },
    Entry {
        topic: Topic::Kind(LeakKind::HalfClosedWait),
        means: "A FIN_WAIT2 still held by a process (half-closed with shutdown(SHUT_WR), so no \
timer runs) for longer than the threshold: the holder finished sending and waits for the peer \
to close its side.",
        fault: "The peer never closes its end (it is probably in CLOSE_WAIT; when that is seen \
the pair is reported once, as close_wait, with this socket as the peer), and the holder waits \
for the peer's end-of-file without a deadline.",
        fixes: "Fix the peer's close path if it leaks; in the holder, put a deadline on the \
read after shutdown() and close the socket when it expires.",
        not: "net.ipv4.tcp_fin_timeout does not apply: it only bounds orphaned FIN_WAIT2, and \
this one is still held by a process. Keepalive sysctls do not make the peer close.",
    },
    Entry {
        topic: Topic::Kind(LeakKind::LastAckStuck),
        means: "A socket stayed in LAST_ACK longer than the threshold: its process closed the \
connection after the peer did, but the peer never acknowledged the final FIN.",
        fault: "The peer or the network, not the holder: the peer host is gone, or a firewall \
or NAT dropped the connection's state and now drops its packets.",
        fixes: "Look at the path (firewall and NAT idle timeouts, conntrack) and at whether the \
peer is alive. Many stuck LAST_ACK towards one peer point at that peer or the device in \
between; the kernel clears them after its retransmissions.",
        not: "Changing the holder's code does not help (it already closed); tcp_fin_timeout \
and keepalive sysctls do not govern LAST_ACK.",
    },
    Entry {
        topic: Topic::TimeWaitPressure,
        means: "One local address holds so many TIME_WAIT sockets to one remote address:port \
that they use a large share (`ratio`) of the ephemeral port range. Near 100% new connect() \
calls to that destination fail with EADDRNOTAVAIL.",
        fault: "The client on this host, which opens and closes many short connections to the \
same destination and closes first, so TIME_WAIT lands on it.",
        fixes: TIME_WAIT_FIXES,
        not: TIME_WAIT_NOT,
    },
    Entry {
        topic: Topic::Confidence(Confidence::Exact),
        means: "The peer was found by the reversed 4-tuple: a socket on another host whose \
local endpoint is the holder's remote one and whose remote is the holder's local, at \
overlapping times. Both ends are certain.",
        fault: "As the verdict says (for close_wait, the holder); the confidence only says how \
sure the pairing is.",
        fixes: "Act on the holder; the PEER column names the other end.",
        not: "Confidence is about the pairing, not about whether there is a leak: a one_sided \
close_wait is just as much a leak.",
    },
    Entry {
        topic: Topic::Confidence(Confidence::Nat),
        means: "The peer was matched through address translation (Kubernetes Services, load \
balancers): the two ends see different addresses, so the reversed 4-tuple fails, and they \
were paired by the client's ephemeral address:port at overlapping times. Usually right, \
occasionally a coincidence.",
        fault: "As the verdict says (for close_wait, the holder).",
        fixes: "Confirm the pairing with `finwait who` on the client endpoint; act on the \
holder.",
        not: "A lower confidence does not make the holder's leak less real; only the peer \
shown may be wrong.",
    },
    Entry {
        topic: Topic::Confidence(Confidence::OneSided),
        means: "No peer socket was found: the other host runs no agent, or the peer's \
orphaned FIN_WAIT2 expired (tcp_fin_timeout, 60 s) before an agent saw it. The verdict \
rests on the holder alone.",
        fault: "The holder, for close_wait: a CLOSE_WAIT held past the threshold is a leak \
whatever the peer did.",
        fixes: "Fix the holder. To see peers, run agents on the peer hosts with a sampling \
interval well under 60 s.",
        not: "It does not mean the leak is doubtful, nor that the peer is healthy.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_of_the_vocabulary_has_exactly_one_entry() {
        let topics = TcpState::ALL
            .into_iter()
            .map(Topic::State)
            .chain(LeakKind::ALL.iter().copied().map(Topic::Kind))
            .chain(Confidence::ALL.iter().copied().map(Topic::Confidence))
            .chain([Topic::TimeWaitPressure]);
        let mut n = 0;
        for topic in topics {
            let entries = STATES.iter().chain(&VERDICTS).filter(|e| e.topic == topic);
            assert_eq!(entries.count(), 1, "{topic:?}");
            assert_eq!(entry(topic).topic, topic);
            n += 1;
        }
        assert_eq!(n, STATES.len() + VERDICTS.len());
        let kernel_order: Vec<Topic> = STATES.iter().map(|e| e.topic).collect();
        assert_eq!(kernel_order, TcpState::ALL.map(Topic::State));
    }

    #[test]
    fn every_spelling_of_a_state_finds_its_entry() {
        for (state, spellings) in crate::state::SPELLINGS {
            let name = state.name();
            for spelling in spellings.iter().map(|s| s.to_string()).chain([
                name.to_string(),
                name.to_ascii_lowercase(),
                name.replace('_', "-"),
                name.to_ascii_lowercase().replace('_', "-"),
                state.ss_column().to_string(),
            ]) {
                let states: Vec<TcpState> = entries_for(&spelling)
                    .iter()
                    .filter_map(|e| match e.topic {
                        Topic::State(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                assert_eq!(states, [state], "{spelling}");
            }
        }
    }

    #[test]
    fn every_spelling_of_a_verdict_and_confidence_finds_its_entry() {
        for topic in LeakKind::ALL
            .iter()
            .copied()
            .map(Topic::Kind)
            .chain(Confidence::ALL.iter().copied().map(Topic::Confidence))
            .chain([Topic::TimeWaitPressure])
        {
            let name = topic.name();
            for spelling in [
                name.to_string(),
                name.replace('_', "-").to_ascii_uppercase(),
            ] {
                let found: Vec<Topic> = entries_for(&spelling).iter().map(|e| e.topic).collect();
                assert!(found.contains(&topic), "{spelling}: {found:?}");
            }
        }
    }

    #[test]
    fn close_wait_is_a_state_then_a_verdict() {
        let found: Vec<Topic> = entries_for("close-wait").iter().map(|e| e.topic).collect();
        assert_eq!(
            found,
            [
                Topic::State(TcpState::CloseWait),
                Topic::Kind(LeakKind::CloseWait)
            ]
        );
        assert!(entries_for("FIN_WAIT3").is_empty());
    }

    #[test]
    fn the_common_wrong_advice_is_called_out() {
        let not = |t: Topic| entry(t).not;
        let cw = not(Topic::State(TcpState::CloseWait));
        assert!(cw.contains("tcp_keepalive_time"), "{cw}");
        assert!(cw.contains("do not clear CLOSE_WAIT"), "{cw}");
        let fw2 = not(Topic::State(TcpState::FinWait2));
        assert!(
            fw2.contains("only bounds an orphaned FIN_WAIT2, not one still held"),
            "{fw2}"
        );
        let tw = not(Topic::State(TcpState::TimeWait));
        assert!(tw.contains("does not shorten TIME_WAIT"), "{tw}");
        let half = not(Topic::Kind(LeakKind::HalfClosedWait));
        assert!(half.contains("tcp_fin_timeout does not apply"), "{half}");
    }

    #[test]
    fn known_names_are_every_canonical_name() {
        let names = known_names();
        for n in TcpState::ALL.map(TcpState::name).iter().chain(&[
            "close_wait",
            "one_sided",
            TIME_WAIT_PRESSURE,
        ]) {
            assert!(names.contains(n), "{n} missing from {names}");
        }
    }
}

//! The golden files' text form of decoded sockets: every field, one socket a line.
//! Shared by the golden tests and `examples/capture_fixtures.rs`.

use std::fmt::Write;

use finwait_agent::socket::Socket;

/// Renders sockets one per line.
pub fn render(sockets: &[Socket]) -> String {
    let mut out = String::new();
    for s in sockets {
        let _ = writeln!(
            out,
            "{} {} {} cookie={:?} inode={} uid={} rq={} wq={} timer={:?}",
            s.state,
            s.local,
            s.remote,
            s.cookie,
            s.inode,
            s.uid,
            s.rx_queue,
            s.tx_queue,
            s.timer.map(|t| (t.kind, t.expires_ms, t.retransmits)),
        );
    }
    out
}

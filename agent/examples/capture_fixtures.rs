//! Captures the golden fixtures of the parser tests from the current namespace:
//! raw netlink dump buffers (u32 little-endian length + bytes, repeated) and the
//! /proc/net/tcp{,6} text, plus the decoded form as the expected files.
//!
//! ```text
//! ip netns add cap && ip -n cap link set lo up
//! ip netns exec cap target/debug/finwait-sockpop states 127.0.0.1 ::1 &
//! ip netns exec cap cargo run -p finwait-agent --example capture_fixtures -- agent/tests/fixtures
//! ```
//! Review the expected files by eye against `ss -tanpe` before committing them.

use std::path::PathBuf;

use finwait_agent::netlink::{DiagSocket, Family, decode_buffer};
use finwait_agent::procnet;

#[path = "../tests/it/render.rs"]
mod render;

use render::render;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "agent/tests/fixtures".into()),
    );
    let mut diag = DiagSocket::open()?;
    for (fam, name) in [(Family::V4, "inet_diag_v4"), (Family::V6, "inet_diag_v6")] {
        let mut raw = Vec::new();
        let mut sockets = Vec::new();
        diag.dump_raw(fam, &mut |buf| {
            raw.extend_from_slice(&(buf.len() as u32).to_le_bytes());
            raw.extend_from_slice(buf);
            decode_buffer(buf, &mut |m| sockets.extend(m.to_socket(7)))
        })?;
        std::fs::write(dir.join(format!("{name}.bin")), raw)?;
        std::fs::write(dir.join(format!("{name}.expected")), render(&sockets))?;
    }
    for (file, name) in [("tcp", "proc_net_tcp"), ("tcp6", "proc_net_tcp6")] {
        let text = std::fs::read(format!("/proc/self/net/{file}"))?;
        let mut sockets = Vec::new();
        procnet::parse(&text[..], 7, file, &mut sockets)?;
        std::fs::write(dir.join(format!("{name}.txt")), &text)?;
        std::fs::write(dir.join(format!("{name}.expected")), render(&sockets))?;
    }
    Ok(())
}

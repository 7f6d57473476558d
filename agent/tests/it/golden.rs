//! The netlink and /proc parsers against captured bytes and text.
//!
//! The fixtures were captured from a `finwait-sockpop states 127.0.0.1 ::1` population
//! with `cargo run --example capture_fixtures` (see that file); the expected files list
//! every decoded field, one socket per line.

use finwait_agent::netlink::{Progress, decode_buffer};
use finwait_agent::procnet;

use crate::render::render;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// Splits a capture file (u32 length + buffer, repeated) into received buffers.
fn buffers(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        out.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
    out
}

#[test]
fn netlink_decoder_matches_golden_capture() {
    for (bin, expected) in [
        ("inet_diag_v4.bin", "inet_diag_v4.expected"),
        ("inet_diag_v6.bin", "inet_diag_v6.expected"),
    ] {
        let bytes = fixture(bin);
        let mut sockets = Vec::new();
        let mut done = false;
        for buf in buffers(&bytes) {
            let p = decode_buffer(buf, &mut |m| sockets.extend(m.to_socket(7)))
                .unwrap_or_else(|e| panic!("{bin}: {e}"));
            done = p == Progress::Done;
        }
        assert!(done, "{bin}: capture ends with NLMSG_DONE");
        let want = String::from_utf8(fixture(expected)).expect("utf-8");
        assert_eq!(render(&sockets), want, "{bin} decodes to {expected}");
    }
}

#[test]
fn proc_parser_matches_golden_text() {
    for (txt, expected) in [
        ("proc_net_tcp.txt", "proc_net_tcp.expected"),
        ("proc_net_tcp6.txt", "proc_net_tcp6.expected"),
    ] {
        let mut sockets = Vec::new();
        procnet::parse(&fixture(txt)[..], 7, txt, &mut sockets)
            .unwrap_or_else(|e| panic!("{txt}: {e}"));
        let want = String::from_utf8(fixture(expected)).expect("utf-8");
        assert_eq!(render(&sockets), want, "{txt} parses to {expected}");
    }
}

#[test]
fn proc_parser_rejects_garbage_with_the_file_name() {
    let mut sockets = Vec::new();
    let e = procnet::parse(&b"header\n  0: zz:zz\n"[..], 7, "bad.txt", &mut sockets)
        .expect_err("garbage");
    assert!(e.to_string().contains("bad.txt"), "{e}");
}

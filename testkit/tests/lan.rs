//! The test LAN: hosts reach each other and the router over IPv4 and IPv6, and the
//! leaky server makes real CLOSE_WAIT / FIN_WAIT2 pairs across hosts.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use finwait_testkit::{Lan, Privilege, require_root};

fn start(ns: &finwait_testkit::NetNs, args: &[&str]) -> (std::process::Child, serde_json::Value) {
    let mut c = ns
        .command(env!("CARGO_BIN_EXE_finwait-sockpop"))
        .args(["--max-seconds", "60"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sockpop");
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("manifest");
    (
        c,
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("manifest {line:?}: {e}")),
    )
}

#[test]
fn a_leaky_server_leaves_close_wait_and_its_clients_fin_wait2_across_hosts() {
    if require_root("a_leaky_server_leaves_close_wait_across_hosts") == Privilege::OptedOut {
        return;
    }
    let lan = Lan::create("lan", 2).expect("lan");
    for (addr, port) in [
        (Lan::v4(0).to_string(), "8080"),
        (format!("[{}]", Lan::v6(0)), "8081"),
    ] {
        let (mut srv, _) = start(lan.host(0), &["serve", &format!("{addr}:{port}"), "--leak"]);
        let (mut cli, m) = start(
            lan.host(1),
            &[
                "connect",
                &format!("{addr}:{port}"),
                "--count",
                "3",
                "--close",
            ],
        );
        assert_eq!(m["locals"].as_array().map(Vec::len), Some(3));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let server = lan
            .host(0)
            .output("ss", &["-tanH", "state", "close-wait"])
            .expect("ss");
        let client = lan
            .host(1)
            .output("ss", &["-tanH", "state", "fin-wait-2"])
            .expect("ss");
        assert_eq!(server.lines().count(), 3, "server CLOSE_WAIT:\n{server}");
        assert_eq!(client.lines().count(), 3, "client FIN_WAIT2:\n{client}");
        for c in [&mut srv, &mut cli] {
            drop(c.stdin.take());
            c.wait().expect("exits");
        }
    }
}

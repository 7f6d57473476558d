//! The test LAN: hosts reach each other and the router over IPv4 and IPv6, and the
//! leaky server makes real CLOSE_WAIT / FIN_WAIT2 pairs across hosts.

use finwait_testkit::{Lan, Privilege, Sockpop, require_root};

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
        let srv = Sockpop::start(
            Some(lan.host(0)),
            &["serve", &format!("{addr}:{port}"), "--leak"],
        )
        .expect("server");
        let target = format!("{addr}:{port}");
        let cli = Sockpop::start(
            Some(lan.host(1)),
            &["connect", &target, "--count", "3", "--close"],
        )
        .expect("clients");
        assert_eq!(cli.manifest["locals"].as_array().map(Vec::len), Some(3));
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
        srv.end();
        cli.end();
    }
}

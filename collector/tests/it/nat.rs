//! Leak correlation through NAT: clients reach the servers on host A through service
//! addresses (10.77.9.9 and fd77:9::9, outside the LAN) that the LAN's router rewrites
//! with nftables DNAT, as a Kubernetes Service or a load balancer does. Only the
//! destination is rewritten, so A's CLOSE_WAIT names the client's own endpoint while
//! the client's FIN_WAIT2 names the service address: the reversed tuple cannot match,
//! and the leaks API must pair them by the client endpoint alone (confidence `nat`),
//! for IPv4 and IPv6, and say nothing of a well-behaved server behind the same NAT.

use std::process::{Command, Stdio};

use finwait_testkit::{Lan, NetNs, Privilege, require_root};

use crate::correlation::{Fixture, poll, sockpop};

/// The service addresses the clients dial.
const VIP4: &str = "10.77.9.9";
const VIP6: &str = "fd77:9::9";

/// The router's rewrite: service port 80 is the leaky server on A (8080), service port
/// 90 the well-behaved one (9090); one table per family.
fn ruleset() -> String {
    let (a4, a6) = (Lan::v4(0), Lan::v6(0));
    format!(
        "table ip finwait_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP4} tcp dport 80 dnat to {a4}:8080
        ip daddr {VIP4} tcp dport 90 dnat to {a4}:9090
    }}
}}
table ip6 finwait_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip6 daddr {VIP6} tcp dport 80 dnat to [{a6}]:8080
        ip6 daddr {VIP6} tcp dport 90 dnat to [{a6}]:9090
    }}
}}
"
    )
}

/// The NAT needs `nft`; without it the test fails (it never skips) and says what to
/// install.
pub(crate) fn require_nft() {
    let out = Command::new("nft")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`nft --version` failed ({}): {}; the NAT tests need nftables \
             (apt-get install nftables)",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "the NAT tests rewrite addresses with nftables and `nft` cannot run ({e}): \
             apt-get install nftables"
        ),
    }
}

/// Runs `ip ARGS` (split on spaces) inside `ns`.
fn ip(ns: &NetNs, args: &str) {
    let argv: Vec<&str> = args.split_whitespace().collect();
    ns.output("ip", &argv)
        .unwrap_or_else(|e| panic!("ip {args} in {}: {e:#}", ns.name()));
}

fn sysctl(ns: &NetNs, key: &str, value: &str) {
    ns.sysctl(key, value)
        .unwrap_or_else(|e| panic!("{key}={value} in {}: {e:#}", ns.name()));
}

/// Turns the LAN's router into the NAT for host A (servers), host B (IPv4 client) and
/// host C (IPv6 client). DNAT only, no SNAT: A sees the clients' own endpoints, so its
/// replies must go back through the router (host routes via 10.77.0.1 / fd77::1), where
/// conntrack rewrites their source back to the service address.
fn install_nat(fx: &Fixture) {
    let lan = &fx.lan;
    let router = lan.router();
    sysctl(router, "net.ipv4.ip_forward", "1");
    sysctl(router, "net.ipv6.conf.all.forwarding", "1");
    // The router forwards back out of the interface a packet came in on, which invites
    // ICMP redirects; a host that followed one (A answering a client directly) would
    // bypass the NAT. The defaults ignore them (the test passes without these lines),
    // but a namespace inherits its IPv4 settings from the machine it runs on, so say it:
    // none sent (IPv4 has the switch), none accepted.
    sysctl(router, "net.ipv4.conf.all.send_redirects", "0");
    sysctl(router, "net.ipv4.conf.br0.send_redirects", "0");
    for i in 0..3 {
        for key in [
            "net.ipv4.conf.all.accept_redirects",
            "net.ipv4.conf.eth0.accept_redirects",
            "net.ipv6.conf.all.accept_redirects",
            "net.ipv6.conf.eth0.accept_redirects",
        ] {
            sysctl(lan.host(i), key, "0");
        }
    }
    let rules = fx.dir.join("nat.nft");
    std::fs::write(&rules, ruleset()).expect("write ruleset");
    router
        .output("nft", &["-f", rules.to_str().expect("utf-8")])
        .unwrap_or_else(|e| panic!("loading the DNAT ruleset: {e:#}"));
    // The LAN has connected routes only (no default route).
    let (b4, c6) = (Lan::v4(1), Lan::v6(2));
    ip(lan.host(1), &format!("route add {VIP4}/32 via 10.77.0.1"));
    ip(lan.host(2), &format!("-6 route add {VIP6}/128 via fd77::1"));
    ip(lan.host(0), &format!("route add {b4}/32 via 10.77.0.1"));
    ip(lan.host(0), &format!("-6 route add {c6}/128 via fd77::1"));
}

#[test]
fn close_wait_behind_dnat_is_paired_with_the_client_endpoint() {
    if require_root("close_wait_behind_dnat_is_paired_with_the_client_endpoint")
        == Privilege::OptedOut
    {
        return;
    }
    require_nft();
    let fx = Fixture::start("nat", 3);
    install_nat(&fx);
    let lan = &fx.lan;
    let (a4, a6) = (Lan::v4(0), Lan::v6(0));
    let (_leaky, lm) = sockpop(lan.host(0), &["serve", &format!("{a4}:8080"), "--leak"]);
    let (_leaky6, lm6) = sockpop(lan.host(0), &["serve", &format!("[{a6}]:8080"), "--leak"]);
    let (_good, _) = sockpop(lan.host(0), &["serve", &format!("{a4}:9090")]);
    let (_good6, _) = sockpop(lan.host(0), &["serve", &format!("[{a6}]:9090")]);

    let svc4 = |port: u16| format!("{VIP4}:{port}");
    let svc6 = |port: u16| format!("[{VIP6}]:{port}");
    let (_b1, b_leak) = sockpop(
        lan.host(1),
        &["connect", &svc4(80), "--count", "3", "--close"],
    );
    let (_b2, _) = sockpop(
        lan.host(1),
        &["connect", &svc4(90), "--count", "2", "--close"],
    );
    let (_c1, c_leak) = sockpop(
        lan.host(2),
        &["connect", &svc6(80), "--count", "2", "--close"],
    );
    let (_c2, _) = sockpop(
        lan.host(2),
        &["connect", &svc6(90), "--count", "2", "--close"],
    );

    let _agents: Vec<_> = ["host-a", "host-b", "host-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| fx.agent(i, name))
        .collect();
    let mut leaks = Vec::new();
    poll("five leaks with their peers", || {
        leaks = fx.leaks("since=10m");
        leaks.len() >= 5 && leaks.iter().all(|l| !l["peer"].is_null())
    });
    assert_eq!(leaks.len(), 5, "exactly the leaked connections: {leaks:#?}");

    let mut peers: Vec<(String, String)> = Vec::new();
    for l in &leaks {
        let v6 = l["holder"]["local"]
            .as_str()
            .is_some_and(|s| s.starts_with('['));
        let (server, service, pid) = if v6 {
            (format!("[{a6}]:8080"), svc6(80), lm6["pid"].as_u64())
        } else {
            (format!("{a4}:8080"), svc4(80), lm["pid"].as_u64())
        };
        assert_eq!(l["kind"], "close_wait", "{l:#}");
        assert_eq!(l["confidence"], "nat", "{l:#}");
        assert_eq!(l["holder"]["host"], "host-a", "{l:#}");
        assert_eq!(l["holder"]["pid"].as_u64(), pid, "holder pid: {l:#}");
        assert_eq!(l["holder"]["comm"], "finwait-sockpop", "{l:#}");
        assert_eq!(l["holder"]["state"], "CLOSE_WAIT", "{l:#}");
        // Only the leaky server, seen at its real address; the client saw the service.
        assert_eq!(l["holder"]["local"], server.as_str(), "{l:#}");
        assert_eq!(l["peer"]["state"], "FIN_WAIT2", "{l:#}");
        assert_eq!(l["peer"]["remote"], service.as_str(), "{l:#}");
        assert_eq!(l["peer"]["local"], l["holder"]["remote"], "{l:#}");
        peers.push((
            l["peer"]["host"].as_str().unwrap_or("").to_owned(),
            l["peer"]["local"].as_str().unwrap_or("").to_owned(),
        ));
    }
    peers.sort();
    let locals = |m: &serde_json::Value, host: &str| -> Vec<(String, String)> {
        m["locals"]
            .as_array()
            .expect("client locals")
            .iter()
            .map(|a| (host.to_owned(), a.as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let mut want = locals(&b_leak, "host-b");
    want.extend(locals(&c_leak, "host-c"));
    want.sort();
    assert_eq!(peers, want, "peers: B over IPv4, C over IPv6");
}

//! Same-host correlation, as on a Kubernetes node: two pod namespaces routed through
//! a node namespace, one agent with `--all-netns` in the node. A leaky server in pod A
//! is reached from pod B directly (exact) and through a Service address the node
//! DNATs (nat); each pod also runs a leaky loopback server on the same port with its
//! own clients, which must pair within their pod only. The leaky server and its
//! clients run in their own cgroups, so both ends name their service.

use std::process::Stdio;

use finwait_testkit::{Cgroup, NetNs, Privilege, TempDir, require_root, workspace_bin};
use serde_json::Value;

use crate::correlation::{Proc, loopback_collector, poll, sockpop};
use crate::support::TestDb;

/// The Service address pod B dials; the node rewrites it to pod A.
const VIP: &str = "10.78.9.9";

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pod `pod` on the node: a veth pair, `10.78.N.2/24` in the pod, `.1` on the node.
fn attach(node: &NetNs, pod: &NetNs, n: u8) {
    let port = format!("vp{n}");
    ip(&[
        "-n",
        node.name(),
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ]);
    ip(&[
        "-n",
        node.name(),
        "addr",
        "add",
        &format!("10.78.{n}.1/24"),
        "dev",
        &port,
    ]);
    ip(&["-n", node.name(), "link", "set", &port, "up"]);
    ip(&[
        "-n",
        pod.name(),
        "addr",
        "add",
        &format!("10.78.{n}.2/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", pod.name(), "link", "set", "eth0", "up"]);
    ip(&[
        "-n",
        pod.name(),
        "route",
        "add",
        "default",
        "via",
        &format!("10.78.{n}.1"),
    ]);
}

fn get(node: &NetNs, url: &str) -> Value {
    let out = node.output("curl", &["-sS", url]).expect("curl");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{url}: {e}: {out}"))
}

#[test]
fn same_host_peers_pair_across_namespaces_and_never_across_loopbacks() {
    if require_root("same_host_peers_pair_across_namespaces_and_never_across_loopbacks")
        == Privilege::OptedOut
    {
        return;
    }
    crate::nat::require_nft();
    let node = NetNs::create("same-node").expect("node");
    let (pa, pb) = (
        NetNs::create("same-pa").expect("pod a"),
        NetNs::create("same-pb").expect("pod b"),
    );
    attach(&node, &pa, 1);
    attach(&node, &pb, 2);
    node.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
    let scratch = TempDir::new("same").expect("scratch dir");
    let dir = scratch.path();
    let rules = dir.join("nat.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip finwait_same {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; \
             policy accept;\n    ip daddr {VIP} tcp dport 80 dnat to 10.78.1.2:8081\n  }}\n}}\n"
        ),
    )
    .expect("rules");
    node.output("nft", &["-f", rules.to_str().expect("utf-8")])
        .expect("DNAT ruleset");

    // Pod A: the leaky server (in its own service cgroup), one behind the Service, and
    // a leaky loopback server with local clients. Pod B: the same loopback pair, and
    // clients of A (in their own cgroup).
    let tag = std::process::id();
    let leaky_cg =
        Cgroup::create(&format!("finwait-it-{tag}.slice/leaky-{tag}.service")).expect("cgroup");
    let client_cg =
        Cgroup::create(&format!("finwait-it-{tag}.slice/client-{tag}.service")).expect("cgroup");
    let (_srv, srv) = sockpop(&pa, &["serve", "10.78.1.2:8080", "--leak"]);
    leaky_cg.add(pid(&srv)).expect("into cgroup");
    let (_natsrv, natsrv) = sockpop(&pa, &["serve", "10.78.1.2:8081", "--leak"]);
    let (_loa, loa) = sockpop(&pa, &["serve", "127.0.0.1:7000", "--leak"]);
    let (_lob, lob) = sockpop(&pb, &["serve", "127.0.0.1:7000", "--leak"]);
    let (_lca, lca) = sockpop(
        &pa,
        &["connect", "127.0.0.1:7000", "--count", "2", "--close"],
    );
    let (_lcb, lcb) = sockpop(
        &pb,
        &["connect", "127.0.0.1:7000", "--count", "2", "--close"],
    );
    let (_cli, cli) = sockpop(
        &pb,
        &["connect", "10.78.1.2:8080", "--count", "3", "--close"],
    );
    let (_natcli, natcli) = sockpop(
        &pb,
        &["connect", &format!("{VIP}:80"), "--count", "2", "--close"],
    );
    // Pod B is one service, like a pod: its closed clients' orphaned FIN_WAIT2s have no
    // process any more and are named by their namespace's service.
    for p in [&lob, &lcb, &cli, &natcli] {
        client_cg.add(pid(p)).expect("into cgroup");
    }

    // The collector (on the test binary's shared PostgreSQL) and one agent for the
    // whole node, both in the node namespace.
    let database = TestDb::create();
    let (_collector, url) = loopback_collector(
        &node,
        &[
            "--leak-threshold-seconds",
            "2",
            "--correlation-slack-seconds",
            "5",
        ],
        &database,
        dir,
    );
    let _agent = Proc::from(
        node.command(workspace_bin("finwait-agent").expect("agent"))
            .args([
                "run",
                "--all-netns",
                "--interval",
                "0.5",
                "--insecure-loopback",
            ])
            .args([
                "--collector",
                &url,
                "--hostname",
                "node",
                "--machine-id",
                "m-node",
            ])
            .arg("--spool-dir")
            .arg(dir.join("agent-spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
            .spawn()
            .expect("agent"),
    );

    // Other tests' namespaces are on this machine too and the agent sees them all:
    // look only at this test's holders.
    let ours = [pid(&srv), pid(&natsrv), pid(&loa), pid(&lob)];
    let leaks_of = |query: &str| -> Vec<Value> {
        let out = node
            .command(workspace_bin("finwait").expect("finwait CLI"))
            .args(["--server", &url, "leaks", "--json", "--since", "10m"])
            .args(query.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .expect("finwait leaks");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["leaks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| ours.contains(&l["holder"]["pid"].as_u64().map_or(0, |p| p as u32)))
            .cloned()
            .collect()
    };
    let mut leaks = Vec::new();
    poll("nine leaks with their peers", || {
        leaks = leaks_of("");
        leaks.len() >= 9 && leaks.iter().all(|l| !l["peer"].is_null())
    });
    assert_eq!(leaks.len(), 9, "every CLOSE_WAIT exactly once: {leaks:#?}");
    let mut seen = std::collections::HashSet::new();
    for l in &leaks {
        let h = &l["holder"];
        assert!(
            seen.insert((
                h["netns"].to_string(),
                h["local"].to_string(),
                h["remote"].to_string()
            )),
            "reported twice: {l:#}"
        );
    }

    let (ns_a, ns_b) = (pa.inode().expect("inode"), pb.inode().expect("inode"));
    let by = |p: &Value| -> Vec<&Value> {
        leaks
            .iter()
            .filter(|l| l["holder"]["pid"].as_u64() == Some(u64::from(pid(p))))
            .collect()
    };
    // Pod B → pod A through the node: the reversed tuple, across namespaces.
    let direct = by(&srv);
    assert_eq!(direct.len(), 3, "{direct:#?}");
    for l in &direct {
        assert_eq!(l["confidence"], "exact", "{l:#}");
        assert_eq!(l["holder"]["netns"].as_u64(), Some(ns_a), "{l:#}");
        assert_eq!(
            l["holder"]["service"],
            format!("leaky-{tag}.service"),
            "{l:#}"
        );
        assert_eq!(l["peer"]["netns"].as_u64(), Some(ns_b), "{l:#}");
        assert_eq!(l["peer"]["state"], "FIN_WAIT2", "{l:#}");
        assert_eq!(l["peer"]["local"], l["holder"]["remote"], "{l:#}");
        assert_eq!(l["peer"]["remote"], l["holder"]["local"], "{l:#}");
        assert_eq!(
            l["peer"]["service"],
            format!("client-{tag}.service"),
            "{l:#}"
        );
        assert!(locals(&cli).contains(&l["peer"]["local"].as_str().unwrap_or("").to_owned()));
    }
    // Through the node's DNAT: only the client endpoint matches.
    let natted = by(&natsrv);
    assert_eq!(natted.len(), 2, "{natted:#?}");
    for l in &natted {
        assert_eq!(l["confidence"], "nat", "{l:#}");
        assert_eq!(l["peer"]["netns"].as_u64(), Some(ns_b), "{l:#}");
        assert_eq!(l["peer"]["remote"], format!("{VIP}:80"), "{l:#}");
        assert!(locals(&natcli).contains(&l["peer"]["local"].as_str().unwrap_or("").to_owned()));
    }
    // Loopback: each pod's server pairs with its own clients, never the other pod's.
    for (server, clients, ns) in [(&loa, &lca, ns_a), (&lob, &lcb, ns_b)] {
        let ls = by(server);
        assert_eq!(ls.len(), 2, "{ls:#?}");
        for l in ls {
            assert_eq!(l["confidence"], "exact", "{l:#}");
            assert_eq!(l["holder"]["netns"].as_u64(), Some(ns), "{l:#}");
            assert_eq!(
                l["peer"]["netns"].as_u64(),
                Some(ns),
                "same pod only: {l:#}"
            );
            assert!(
                locals(clients).contains(&l["peer"]["local"].as_str().unwrap_or("").to_owned())
            );
        }
    }

    // The service filter and the grouped view count the same leaks.
    let svc = format!("leaky-{tag}.service");
    assert_eq!(leaks_of(&format!("--service {svc}")).len(), 3);
    let groups = get(
        &node,
        &format!("{url}/api/v1/leaks/groups?since=10m&by=service&service={svc}"),
    );
    let g = &groups["groups"][0];
    assert_eq!(
        (g["service"].as_str(), g["count"].as_i64()),
        (Some(svc.as_str()), Some(3)),
        "{groups:#}"
    );
    assert_eq!(
        g["peers"][0]["service"],
        format!("client-{tag}.service"),
        "{groups:#}"
    );
    // who agrees: loopback connections pair within their namespace only.
    let who = get(&node, &format!("{url}/api/v1/who?endpoint=127.0.0.1:7000"));
    let mut paired = 0;
    for c in who["connections"].as_array().into_iter().flatten() {
        if !c["local"].is_null() && !c["remote"].is_null() {
            assert_eq!(c["local"]["netns"], c["remote"]["netns"], "{c:#}");
            if [ns_a, ns_b].contains(&c["local"]["netns"].as_u64().unwrap_or(0)) {
                paired += 1;
            }
        }
    }
    assert_eq!(paired, 4, "two connections in each pod: {who:#}");
}

fn pid(manifest: &Value) -> u32 {
    manifest["pid"].as_u64().expect("pid") as u32
}

fn locals(manifest: &Value) -> Vec<String> {
    manifest["locals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

//! `--all-netns`: sockets of several namespaces in one snapshot, labelled right.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use finwait_testkit::{Cgroup, NetNs, Privilege, Sockpop, require_root, workspace_bin};

use crate::support::{agent_json, ss};

#[test]
fn all_netns_snapshot_sees_two_namespaces_with_their_labels() {
    if require_root("all_netns_snapshot_sees_two_namespaces") == Privilege::OptedOut {
        return;
    }
    let a = NetNs::create("nsa").expect("namespace a");
    let b = NetNs::create("nsb").expect("namespace b");
    let pop_a = Sockpop::start(Some(&a), &["states", "127.0.0.1"]).expect("population a");
    let pop_b = Sockpop::start(Some(&b), &["states", "::1"]).expect("population b");
    let (ia, ib) = (a.inode().expect("inode a"), b.inode().expect("inode b"));
    assert_ne!(ia, ib);

    // Run from the test's own namespace: only --all-netns can see a and b.
    let plain = agent_json(None, &[]).expect("plain snapshot");
    assert!(
        plain.iter().all(|s| s.netns != ia && s.netns != ib),
        "default reads only its own namespace"
    );
    let all = agent_json(None, &["--all-netns"]).expect("all-netns snapshot");

    for (ns, inode, pop, family) in [(&a, ia, &pop_a, "ipv4"), (&b, ib, &pop_b, "ipv6")] {
        let mine: Vec<_> = all.iter().filter(|s| s.netns == inode).collect();
        let want: BTreeSet<u64> = ss(ns).expect("ss").iter().map(|s| s.cookie).collect();
        let got: BTreeSet<u64> = mine.iter().filter_map(|s| s.cookie).collect();
        assert_eq!(
            got, want,
            "namespace {inode}: agent and ss see the same sockets"
        );
        assert!(
            mine.iter().all(|s| s.family == family),
            "namespace {inode} holds only {family}"
        );
        assert!(
            mine.iter()
                .any(|s| s.state == "CLOSE_WAIT" && s.owners.iter().any(|o| o.pid == pop.pid())),
            "namespace {inode}: CLOSE_WAIT attributed to its population"
        );
        assert!(
            mine.iter().all(|s| s.container.is_some()),
            "namespace {inode} carries a container hint"
        );
    }
}

#[test]
fn a_process_in_its_own_cgroup_and_uts_namespace_is_labelled_with_both() {
    if require_root("a_process_in_its_own_cgroup_and_uts_namespace") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("uts").expect("namespace");
    // Like a pod's container: its own hostname (the pod's name) and its own cgroup.
    let mut child = ns
        .command("unshare")
        .args([
            "--uts",
            "--",
            "sh",
            "-c",
            "hostname web-7f9c4 && exec \"$0\" \"$@\"",
        ])
        .arg(workspace_bin("finwait-sockpop").expect("sockpop"))
        .args(["serve", "127.0.0.1:7001", "--leak", "--max-seconds", "60"])
        // It runs until its standard input closes.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&line).expect("manifest json");
    let pid = manifest["pid"].as_u64().expect("pid") as u32;
    let cg =
        Cgroup::create(&format!("finwait-agent-it-{pid}.slice/web-{pid}.scope")).expect("cgroup");
    cg.add(pid).expect("into cgroup");

    let inode = ns.inode().expect("inode");
    let all = agent_json(None, &["--all-netns"]).expect("all-netns snapshot");
    let owner = all
        .iter()
        .filter(|s| s.netns == inode && s.state == "LISTEN")
        .flat_map(|s| s.owners.iter())
        .find(|o| o.pid == pid)
        .unwrap_or_else(|| panic!("the listener of {pid} in namespace {inode}: {all:#?}"));
    assert_eq!(owner.hostname, "web-7f9c4", "{owner:?}");
    assert_eq!(owner.cgroup, cg.path(), "{owner:?}");
    drop(child.stdin.take());
    let _ = child.wait();
}

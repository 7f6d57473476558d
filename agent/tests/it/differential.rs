//! The agent's table against `ss -tanpe` on a population made for real.

use std::collections::{BTreeSet, HashMap};

use finwait_testkit::{NetNs, Privilege, Sockpop, require_root};

use crate::support::{JsonSocket, agent_json, ss, ss_state, ss_timer};

fn owners_of(s: &JsonSocket) -> BTreeSet<(String, u32, u32)> {
    s.owners
        .iter()
        .map(|o| (o.comm.clone(), o.pid, o.fd))
        .collect()
}

#[test]
fn agent_table_agrees_with_ss_on_every_state_ipv4_and_ipv6() {
    if require_root("agent_table_agrees_with_ss") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("diff").expect("create namespace");
    let pop = Sockpop::start(Some(&ns), &["states", "127.0.0.1", "::1"]).expect("population");
    let agent = agent_json(Some(&ns), &[]).expect("agent snapshot");
    let ss = ss(&ns).expect("ss -tanpe");

    // Same sockets, by cookie.
    let by_cookie: HashMap<u64, &JsonSocket> = agent
        .iter()
        .map(|s| (s.cookie.expect("netlink gives cookies"), s))
        .collect();
    assert_eq!(
        agent.len(),
        ss.len(),
        "socket count: agent {} vs ss {}",
        agent.len(),
        ss.len()
    );
    for want in &ss {
        let got = by_cookie
            .get(&want.cookie)
            .unwrap_or_else(|| panic!("agent lacks ss socket {want:?}"));
        assert_eq!(ss_state(&got.state), want.state, "state of {want:?}");
        assert_eq!(got.local(), want.local, "local of {want:?}");
        assert_eq!(got.remote(), want.remote, "remote of {want:?}");
        assert_eq!(got.inode, want.inode, "inode of {want:?}");
        assert_eq!(
            (got.rx_queue, got.tx_queue),
            (want.rx_queue, want.tx_queue),
            "queues of {want:?}"
        );
        assert_eq!(owners_of(got), want.users, "owners of {want:?}");
        assert_eq!(
            got.timer.as_ref().map(|t| ss_timer(&t.kind).to_owned()),
            want.timer,
            "timer of {want:?}"
        );
    }

    // Every state the population made is there, in both families.
    for family in ["ipv4", "ipv6"] {
        let fam: Vec<&JsonSocket> = agent.iter().filter(|s| s.family == family).collect();
        let has = |pred: &dyn Fn(&JsonSocket) -> bool, what: &str| {
            assert!(
                fam.iter().any(|s| pred(s)),
                "{family}: no {what} socket in {fam:#?}"
            );
        };
        for state in [
            "LISTEN",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "TIME_WAIT",
            "SYN_SENT",
            "LAST_ACK",
        ] {
            has(&|s| s.state == state, state);
        }
        has(
            &|s| {
                s.state == "FIN_WAIT2"
                    && s.inode == 0
                    && s.timer.as_ref().is_some_and(|t| t.kind == "time_wait")
            },
            "orphaned FIN_WAIT2 (timewait timer, no inode)",
        );
        has(
            &|s| {
                s.state == "FIN_WAIT2"
                    && s.timer.is_none()
                    && s.owners.len() == 1
                    && s.owners[0].pid == pop.pid()
            },
            "half-closed FIN_WAIT2 (no timer, held by the population)",
        );
        has(
            &|s| {
                s.state == "CLOSE_WAIT"
                    && s.owners
                        .iter()
                        .any(|o| o.pid == pop.pid() && o.comm == "finwait-sockpop")
            },
            "CLOSE_WAIT held by the population",
        );
    }
    let child = pop.manifest["child_pid"]
        .as_u64()
        .expect("manifest names the child") as u32;
    let shared: Vec<&JsonSocket> = agent.iter().filter(|s| s.owners.len() == 2).collect();
    assert_eq!(shared.len(), 1, "one socket shared after fork: {shared:#?}");
    let pids: BTreeSet<u32> = shared[0].owners.iter().map(|o| o.pid).collect();
    assert_eq!(pids, [pop.pid(), child].into(), "shared socket's owners");
}

#[test]
fn proc_fallback_gives_the_same_table_apart_from_cookies_and_timers() {
    if require_root("proc_fallback_gives_the_same_table") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("fallback").expect("create namespace");
    let _pop = Sockpop::start(Some(&ns), &["states", "127.0.0.1", "::1"]).expect("population");
    let netlink = agent_json(Some(&ns), &["--source", "netlink"]).expect("netlink snapshot");
    let proc = agent_json(Some(&ns), &["--source", "proc"]).expect("proc snapshot");
    assert!(proc.iter().all(|s| s.cookie.is_none() && s.timer.is_none()));
    let key = |s: &JsonSocket| (s.local(), s.remote(), s.inode);
    let by_tuple: HashMap<_, &JsonSocket> = proc.iter().map(|s| (key(s), s)).collect();
    assert_eq!(netlink.len(), proc.len(), "same number of sockets");
    for n in &netlink {
        let p = by_tuple
            .get(&key(n))
            .unwrap_or_else(|| panic!("/proc lacks {n:?}"));
        assert_eq!(p.state, n.state, "state of {n:?}");
        assert_eq!(p.uid, n.uid, "uid of {n:?}");
        assert_eq!(p.owners, n.owners, "owners of {n:?}");
        assert_eq!(p.netns, n.netns);
        // /proc reports a listener's send queue as 0 where netlink gives the backlog limit.
        if n.state != "LISTEN" {
            assert_eq!(
                (p.rx_queue, p.tx_queue),
                (n.rx_queue, n.tx_queue),
                "queues of {n:?}"
            );
        }
    }
}

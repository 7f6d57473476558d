//! Rendering from answers shaped exactly like the API contract.

use finwait_vocab::answer::{Connection, Coverage, Host, LeakGroup, PeerCount, Point};
use finwait_vocab::{Confidence, LeakKind, TimerKind};

use super::*;
use crate::fixtures::{host, json, owned, owner, side, socket, t};
use finwait_vocab::GroupBy;

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("contract-shaped sample")
}

/// Column start of `needle` on `line` (in characters).
fn col(line: &str, needle: &str) -> usize {
    let byte = line
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"));
    line[..byte].chars().count()
}

/// The cells of a rendered line: runs of text separated by two or more spaces, with
/// their first and one-past-last character columns.
fn fields(line: &str) -> Vec<(usize, usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' ')) {
            i += 1;
        }
        out.push((start, i, chars[start..i].iter().collect()));
    }
    out
}

fn texts(line: &str) -> Vec<String> {
    fields(line).into_iter().map(|f| f.2).collect()
}

/// Left-aligned cells start where their title starts; right-aligned ones end where it ends.
fn assert_aligned(head: &str, row: &str, aligns: &[Align]) {
    let (h, r) = (fields(head), fields(row));
    assert_eq!(h.len(), aligns.len(), "{head}");
    assert_eq!(r.len(), aligns.len(), "{row}");
    for ((h, r), a) in h.iter().zip(&r).zip(aligns) {
        match a {
            Align::Left => assert_eq!(h.0, r.0, "{:?} under {:?}\n{head}\n{row}", r.2, h.2),
            Align::Right => assert_eq!(h.1, r.1, "{:?} under {:?}\n{head}\n{row}", r.2, h.2),
        }
    }
}

fn leaks_page() -> LeaksPage {
    let holder = Side {
        pid: Some(4242),
        comm: Some("srv".into()),
        cmdline: Some("/usr/bin/srv --port 8080".into()),
        fd: Some(7),
        service: Some("srv.service".into()),
        age_s: 192,
        ..side(
            "app-1",
            TcpState::CloseWait,
            "10.77.0.10:8080",
            "10.77.0.11:40000",
        )
    };
    let peer = Side {
        pid: Some(77),
        comm: Some("curl".into()),
        cmdline: Some("curl".into()),
        fd: Some(3),
        service: Some("pod/1f2e".into()),
        container: Some("3f2a9c1b2d4e".into()),
        since: t("2026-11-23T03:00:01Z"),
        age_s: 60,
        until: Some(t("2026-11-23T03:01:01Z")),
        ..side(
            "client-1",
            TcpState::FinWait2,
            "10.77.0.11:40000",
            "10.77.0.10:8080",
        )
    };
    let stuck = Side {
        service: Some("docker/3f2a9c1b2d4e".into()),
        container: Some("3f2a9c1b2d4e".into()),
        since: t("2026-11-22T23:00:00Z"),
        age_s: 7500,
        until: Some(t("2026-11-23T01:05:00Z")),
        ..side(
            "db-2",
            TcpState::LastAck,
            "[2001:db8::2]:5432",
            "[2001:db8::99]:51000",
        )
    };
    LeaksPage {
        leaks: vec![
            Leak {
                kind: LeakKind::CloseWait,
                confidence: Confidence::Exact,
                holder,
                peer: Some(peer),
                until: None,
                hint: "the holding process never called close() after its peer closed".into(),
            },
            Leak {
                kind: LeakKind::LastAckStuck,
                confidence: Confidence::OneSided,
                holder: stuck,
                peer: None,
                until: Some(t("2026-11-23T01:05:00Z")),
                hint: "our FIN is never acknowledged".into(),
            },
        ],
        time_wait_pressure: vec![TimeWaitPressure {
            host: "client-1".into(),
            local_addr: "10.0.0.1".into(),
            remote: "10.0.0.2:5432".into(),
            count: 20000,
            ports: 28232,
            ratio: 0.71,
            at: t("2026-11-23T03:10:00Z"),
        }],
        next_page_token: None,
    }
}

/// The page as the collector's JSON and back: what the CLI renders is what it reads.
fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(page: &T) -> T {
    parse(&json(page))
}

#[test]
fn leaks_table_aligns_columns_and_carries_hints() {
    let out = leaks(&through_json(&leaks_page()), "since 24h ago");
    let lines: Vec<&str> = out.lines().collect();
    let (head, first, hint, second) = (lines[0], lines[1], lines[2], lines[3]);
    assert_eq!(
        texts(head),
        [
            "KIND",
            "CONF",
            "HOST",
            "PID",
            "COMM",
            "SERVICE",
            "LOCAL",
            "REMOTE",
            "AGE",
            "PEER",
            "PEER SERVICE",
            "UNTIL"
        ]
    );
    assert_eq!(
        texts(first),
        [
            "close_wait",
            "exact",
            "app-1",
            "4242",
            "srv",
            "srv.service",
            "10.77.0.10:8080",
            "10.77.0.11:40000",
            "3m12s",
            "client-1 FIN_WAIT2 (gone)",
            "pod/1f2e (3f2a9c1b2d4e)",
            "open"
        ]
    );
    // No process and no peer: dashes, not blanks that would shift the columns; a
    // container id already in the service's name is not repeated.
    assert_eq!(
        texts(second),
        [
            "last_ack_stuck",
            "one_sided",
            "db-2",
            "-",
            "-",
            "docker/3f2a9c1b2d4e",
            "[2001:db8::2]:5432",
            "[2001:db8::99]:51000",
            "2h05m",
            "-",
            "-",
            "2026-11-23 01:05:00Z"
        ]
    );
    let aligns = [L, L, L, R, L, L, L, L, R, L, L, L];
    assert_aligned(head, first, &aligns);
    assert_aligned(head, second, &aligns);
    assert_eq!(
        hint,
        "  hint: the holding process never called close() after its peer closed"
    );
    assert_eq!(lines[4], "  hint: our FIN is never acknowledged");
    assert_eq!(lines[5], "");
    assert_eq!(
        lines[6],
        "TIME_WAIT pressure (not a leak: many short connections to one destination)"
    );
    assert_eq!(
        texts(lines[8]),
        [
            "client-1",
            "10.0.0.1",
            "10.0.0.2:5432",
            "20000",
            "28232",
            "71%",
            "2026-11-23 03:10:00Z"
        ]
    );
    assert!(
        out.lines().all(|l| l == l.trim_end()),
        "trailing spaces:\n{out}"
    );
}

#[test]
fn empty_leaks_say_what_was_searched() {
    let page = LeaksPage {
        leaks: vec![],
        time_wait_pressure: vec![],
        next_page_token: None,
    };
    assert_eq!(
        leaks(&page, "since 2h ago on host a"),
        "no leaks found since 2h ago on host a\n"
    );
}

fn group(host: &str, kind: LeakKind) -> LeakGroup {
    LeakGroup {
        host: Some(host.into()),
        hosts: vec![host.into()],
        service: None,
        pid: None,
        comm: None,
        cmdline: None,
        kind,
        count: 1,
        open: 0,
        oldest: t("2026-11-22T03:00:00Z"),
        newest: t("2026-11-22T03:00:00Z"),
        ended: None,
        growth_per_hour: 0.0,
        peers: vec![],
        hint: String::new(),
    }
}

fn peer_count(host: &str, count: i64) -> PeerCount {
    PeerCount {
        host: host.into(),
        service: None,
        count,
    }
}

#[test]
fn groups_show_counts_growth_peers_and_ended() {
    let page = GroupsPage {
        groups: vec![
            LeakGroup {
                pid: Some(4242),
                comm: Some("srv".into()),
                cmdline: Some(
                    "/usr/bin/srv --port 8080 --workers 64 --config /etc/srv/production.toml"
                        .into(),
                ),
                count: 40,
                open: 38,
                newest: t("2026-11-23T03:00:00Z"),
                service: Some("srv.service".into()),
                growth_per_hour: 3.5,
                peers: vec![
                    PeerCount {
                        service: Some("web.service".into()),
                        ..peer_count("b", 2)
                    },
                    peer_count("c", 1),
                ],
                hint: "fix the close path".into(),
                ..group("app-1", LeakKind::CloseWait)
            },
            LeakGroup {
                ended: Some(t("2026-11-22T04:00:00Z")),
                ..group("app-2", LeakKind::LastAckStuck)
            },
        ],
        next_page_token: None,
    };
    let out = groups(&through_json(&page), "since 24h ago", GroupBy::Process);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        texts(lines[0]),
        [
            "HOST", "PID", "COMM", "SERVICE", "KIND", "COUNT", "OPEN", "GROWTH/H", "OLDEST",
            "NEWEST", "ENDED", "PEERS", "CMDLINE"
        ]
    );
    assert_eq!(col(lines[1], "srv.service"), col(lines[0], "SERVICE"));
    assert!(lines[1].contains("web.service@b(2) c(1)"), "{out}");
    assert!(lines[1].contains("3.5"), "{out}");
    assert!(lines[1].contains("open"), "{out}");
    assert!(lines[1].ends_with('…'), "cmdline truncated: {out}");
    assert!(lines[2].starts_with("  hint: fix the close path"), "{out}");
    assert!(lines[3].contains("2026-11-22 04:00:00Z"), "{out}");
    assert_eq!(col(lines[3], "app-2"), 0);
    assert_eq!(
        col(lines[3], "last_ack_stuck"),
        col(lines[0], "KIND"),
        "{out}"
    );
}

#[test]
fn groups_by_service_name_the_service_and_its_hosts() {
    let page = GroupsPage {
        groups: vec![
            LeakGroup {
                host: None,
                hosts: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
                service: Some("billing.service".into()),
                count: 7,
                open: 7,
                ..group("-", LeakKind::CloseWait)
            },
            LeakGroup {
                host: None,
                hosts: vec!["a".into()],
                ..group("-", LeakKind::LastAckStuck)
            },
        ],
        next_page_token: None,
    };
    let out = groups(&through_json(&page), "since 24h ago", GroupBy::Service);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        texts(lines[0]),
        [
            "SERVICE", "HOSTS", "KIND", "COUNT", "OPEN", "GROWTH/H", "OLDEST", "NEWEST", "ENDED",
            "PEERS"
        ]
    );
    assert_eq!(
        texts(lines[1])[..4],
        ["billing.service", "a,b,c +2", "close_wait", "7"]
    );
    assert_eq!(texts(lines[2])[..3], ["-", "a", "last_ack_stuck"]);
    let aligns = [L, L, L, R, R, R, L, L, L, L];
    assert_aligned(lines[0], lines[1], &aligns);
    assert_aligned(lines[0], lines[2], &aligns);
}

/// A CLOSE_WAIT held by two processes, whose command line carries NULs.
fn socket_a() -> Socket {
    let mut s = owned(
        socket(
            "a",
            TcpState::CloseWait,
            "10.77.0.10:8080",
            "10.77.0.11:40000",
        ),
        vec![owner(123, 7, "srv", "srv"), owner(124, 7, "srv", "srv")],
    );
    s.cmdline = Some("srv\0--port\08080".into());
    s.service = Some("srv.service".into());
    s.age_s = 12;
    s
}

/// A TIME_WAIT in another namespace, ended.
fn socket_tw() -> Socket {
    Socket {
        netns: 4_026_532_000,
        age_s: 30,
        timer: Some(TimerKind::TimeWait),
        until: Some(t("2026-11-23T03:01:00Z")),
        ..socket("a", TcpState::TimeWait, "[::1]:40001", "[::1]:8080")
    }
}

fn sockets_page(sockets: Vec<Socket>) -> SocketsPage {
    SocketsPage {
        host: "a".into(),
        as_of: Some(t("2026-11-23T03:05:00Z")),
        sockets,
        next_page_token: None,
    }
}

#[test]
fn sockets_show_owners_namespaces_timers_and_safe_cmdlines() {
    let page = through_json(&sockets_page(vec![socket_a(), socket_tw()]));
    let out = sockets(&page, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "host a as of 2026-11-23 03:05:00Z");
    assert!(
        lines[1].starts_with("NETNS"),
        "two namespaces, so a NETNS column: {out}"
    );
    assert!(lines[2].contains("srv (+1)"), "{out}");
    assert_eq!(
        col(lines[2], "srv.service"),
        col(lines[1], "SERVICE"),
        "{out}"
    );
    assert!(
        lines[2].ends_with("srv --port 8080"),
        "NULs become spaces: {out}"
    );
    let timer = texts(lines[1]).iter().position(|t| t == "TIMER");
    assert_eq!(timer, Some(8), "{out}");
    assert_eq!(texts(lines[2])[8], "-", "no timer: {out}");
    assert_eq!(texts(lines[3])[8], "time_wait", "{out}");
    assert_eq!(
        col(lines[3], "[::1]:40001"),
        col(lines[1], "LOCAL"),
        "{out}"
    );
    assert!(lines[3].contains("2026-11-23 03:01:00Z"), "{out}");
}

#[test]
fn sockets_in_one_namespace_have_no_netns_column_and_empty_says_so() {
    let page = sockets_page(vec![socket_a()]);
    assert!(
        sockets(&page, "")
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("STATE"))
    );
    assert_eq!(
        sockets(&sockets_page(vec![]), " in state CLOSE_WAIT"),
        "no sockets on host a in state CLOSE_WAIT as of 2026-11-23 03:05:00Z\n"
    );
}

#[test]
fn who_puts_both_ends_side_by_side_and_marks_unseen_ones() {
    let peer = Socket {
        host: "b".into(),
        service: Some("pod/1f2e".into()),
        container: Some("3f2a9c1b2d4e".into()),
        state: TcpState::FinWait2,
        local: "10.77.0.11:40000".into(),
        remote: "10.77.0.10:8080".into(),
        ..socket_a()
    };
    let page = WhoPage {
        endpoint: "10.77.0.10:8080".into(),
        as_of: None,
        connections: vec![
            Connection {
                local: Some(socket_a()),
                remote: Some(peer.clone()),
            },
            Connection {
                local: None,
                remote: Some(peer),
            },
            Connection {
                local: Some(socket_a()),
                remote: None,
            },
        ],
        next_page_token: None,
    };
    let out = who(&through_json(&page));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "10.77.0.10:8080 as of now: this end | other end");
    let head = lines[1];
    assert_eq!(
        texts(head),
        [
            "HOST",
            "STATE",
            "PROCESS",
            "SERVICE",
            "AGE",
            "OTHER END",
            "PEER HOST",
            "PEER STATE",
            "PEER PROCESS",
            "PEER SERVICE",
            "PEER AGE"
        ]
    );
    let aligns = [L, L, L, L, R, L, L, L, L, L, R];
    let this_end = ["a", "CLOSE_WAIT", "123/srv", "srv.service", "12s"];
    let other_end = [
        "b",
        "FIN_WAIT2",
        "123/srv",
        "pod/1f2e (3f2a9c1b2d4e)",
        "12s",
    ];
    let unseen = ["(not seen)", "-", "-", "-", "-"];
    let other = ["10.77.0.11:40000"];
    for (line, expected) in [
        (lines[2], [&this_end[..], &other, &other_end].concat()),
        (lines[3], [&unseen[..], &other, &other_end].concat()),
        (lines[4], [&this_end[..], &other, &unseen].concat()),
    ] {
        assert_eq!(texts(line), expected, "{out}");
        assert_aligned(head, line, &aligns);
    }
    let empty = WhoPage {
        endpoint: "[::1]:80".into(),
        as_of: Some(t("2026-11-23T03:00:00Z")),
        connections: vec![],
        next_page_token: None,
    };
    assert_eq!(
        who(&empty),
        "no connection to or from [::1]:80 seen as of 2026-11-23 03:00:00Z\n"
    );
}

#[test]
fn timeline_has_one_column_per_state_seen_in_kernel_order() {
    let point = |at: &str, states: &[(TcpState, i64)]| Point {
        t: t(at),
        states: states.iter().copied().collect(),
    };
    let page = TimelinePage {
        host: "a".into(),
        step_s: 720,
        points: vec![
            point(
                "2026-11-23T00:00:00Z",
                &[(TcpState::TimeWait, 5), (TcpState::Established, 3)],
            ),
            point(
                "2026-11-23T00:12:00Z",
                &[(TcpState::Established, 3), (TcpState::CloseWait, 40)],
            ),
            point("2026-11-23T00:24:00Z", &[]),
        ],
        next_page_token: None,
    };
    let out = timeline(&through_json(&page));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "host a, peak sockets per state every 12m00s");
    assert_eq!(
        lines[1],
        "TIME                  ESTABLISHED  TIME_WAIT  CLOSE_WAIT"
    );
    assert_eq!(
        lines[2],
        "2026-11-23 00:00:00Z            3          5           0"
    );
    assert_eq!(
        lines[3],
        "2026-11-23 00:12:00Z            3          0          40"
    );
    assert_eq!(
        lines[4],
        "2026-11-23 00:24:00Z            -          -           -"
    );
}

fn host_with(name: &str, last_seen: Option<&str>, states: &[(TcpState, i64)]) -> Host {
    Host {
        last_seen: last_seen.map(t),
        states: states.iter().copied().collect(),
        ..host(name)
    }
}

fn coverage(problems: &[&str]) -> Coverage {
    Coverage {
        at: t("2026-11-23T03:12:05Z"),
        complete: problems.is_empty(),
        problems: problems.iter().map(|p| p.to_string()).collect(),
        source: "netlink".into(),
        processes_scanned: 200,
        processes_unreadable: 0,
        processes_vanished: 0,
        sockets_without_owner: 0,
        namespaces_read: 1,
        namespaces_skipped: vec![],
        capabilities_missing: vec![],
        agent_uid: Some(0),
        dump_ms: 1.5,
        owner_scan_ms: 4.0,
        batches_dropped: 0,
    }
}

#[test]
fn hosts_show_states_coverage_and_pressure() {
    let page = HostsPage {
        hosts: vec![
            Host {
                coverage: Some(coverage(&[])),
                time_wait_pressure: Some(TimeWaitPressure {
                    host: "a".into(),
                    local_addr: "10.0.0.1".into(),
                    remote: "10.0.0.2:5432".into(),
                    count: 20000,
                    ports: 28232,
                    ratio: 0.71,
                    at: t("2026-11-23T03:12:05Z"),
                }),
                ..host_with(
                    "a",
                    Some("2026-11-23T03:12:05Z"),
                    &[(TcpState::CloseWait, 2), (TcpState::Established, 3)],
                )
            },
            host_with("b", None, &[]),
        ],
        next_page_token: None,
    };
    let now = t("2026-11-23T03:15:17Z");
    let out = hosts(&through_json(&page), now);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "HOST  LAST SEEN               AGO  AGENT  COVERAGE  ESTABLISHED  CLOSE_WAIT  TIME_WAIT PRESSURE"
    );
    assert_eq!(
        lines[1],
        "a     2026-11-23 03:12:05Z  3m12s  0.1.0  ok                  3           2  71% of ports: 20000 TIME_WAIT 10.0.0.1 -> 10.0.0.2:5432"
    );
    assert_eq!(
        lines[2],
        "b     never                     -  0.1.0  n/a                 0           0  -"
    );
    assert_eq!(
        lines.len(),
        3,
        "complete or unknown coverage has no notes: {out}"
    );
    let empty = HostsPage {
        hosts: vec![],
        next_page_token: None,
    };
    assert_eq!(
        hosts(&empty, now),
        "no hosts have reported to this collector yet\n"
    );
}

#[test]
fn partial_coverage_lists_its_problems_under_the_host() {
    let missed = [
        "3 processes' descriptors could not be read, so their sockets show no owner: the \
         agent (uid 1000) lacks CAP_SYS_PTRACE",
        "1 network namespaces were not read\n(first: permission denied)",
    ];
    let page = HostsPage {
        hosts: vec![
            Host {
                coverage: Some(coverage(&missed)),
                ..host_with("a", Some("2026-11-23T03:12:05Z"), &[])
            },
            Host {
                coverage: Some(coverage(&[])),
                ..host_with("b", Some("2026-11-23T03:12:05Z"), &[])
            },
        ],
        next_page_token: None,
    };
    let out = hosts(&through_json(&page), t("2026-11-23T03:15:17Z"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(texts(lines[1])[4], "partial", "{out}");
    assert_eq!(col(lines[1], "partial"), col(lines[0], "COVERAGE"));
    assert_eq!(lines[2], format!("  coverage: {}", missed[0]));
    assert_eq!(
        lines[3], "  coverage: 1 network namespaces were not read (first: permission denied)",
        "one line each: {out}"
    );
    assert_eq!(
        texts(lines[4])[..5],
        ["b", "2026-11-23 03:12:05Z", "3m12s", "0.1.0", "ok"]
    );
    assert_eq!(lines.len(), 5, "{out}");
}

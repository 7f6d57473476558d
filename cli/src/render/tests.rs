//! Rendering from answers shaped exactly like the API contract.

use super::*;

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

const LEAKS: &str = r#"{"leaks": [
  {"kind": "close_wait", "confidence": "exact",
   "holder": {"host": "app-1", "netns": 4026531840, "pid": 4242, "comm": "srv",
              "cmdline": "/usr/bin/srv --port 8080", "fd": 7, "state": "CLOSE_WAIT",
              "local": "10.77.0.10:8080", "remote": "10.77.0.11:40000",
              "since": "2026-11-23T03:00:00Z", "age_s": 192, "rx_queue": 0, "until": null},
   "peer": {"host": "client-1", "netns": 4026531840, "pid": 77, "comm": "curl",
            "cmdline": "curl", "fd": 3, "state": "FIN_WAIT2",
            "local": "10.77.0.11:40000", "remote": "10.77.0.10:8080",
            "since": "2026-11-23T03:00:01Z", "age_s": 60, "rx_queue": 0,
            "until": "2026-11-23T03:01:01Z"},
   "until": null,
   "hint": "the holding process never called close() after its peer closed"},
  {"kind": "last_ack_stuck", "confidence": "one_sided",
   "holder": {"host": "db-2", "netns": 4026531840, "pid": null, "comm": null,
              "cmdline": null, "fd": null, "state": "LAST_ACK",
              "local": "[2001:db8::2]:5432", "remote": "[2001:db8::99]:51000",
              "since": "2026-11-22T23:00:00Z", "age_s": 7500, "rx_queue": 0,
              "until": "2026-11-23T01:05:00Z"},
   "peer": null,
   "until": "2026-11-23T01:05:00Z",
   "hint": "our FIN is never acknowledged"}],
 "time_wait_pressure": [{"host": "client-1", "local_addr": "10.0.0.1", "remote": "10.0.0.2:5432",
                         "count": 20000, "ports": 28232, "ratio": 0.71, "at": "2026-11-23T03:10:00Z"}],
 "next_page_token": null}"#;

#[test]
fn leaks_table_aligns_columns_and_carries_hints() {
    let out = leaks(&parse(LEAKS), "since 24h ago");
    let lines: Vec<&str> = out.lines().collect();
    let (head, first, hint, second) = (lines[0], lines[1], lines[2], lines[3]);
    assert_eq!(
        texts(head),
        [
            "KIND", "CONF", "HOST", "PID", "COMM", "LOCAL", "REMOTE", "AGE", "PEER", "UNTIL"
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
            "10.77.0.10:8080",
            "10.77.0.11:40000",
            "3m12s",
            "client-1 FIN_WAIT2 (gone)",
            "open"
        ]
    );
    // No process and no peer: dashes, not blanks that would shift the columns.
    assert_eq!(
        texts(second),
        [
            "last_ack_stuck",
            "one_sided",
            "db-2",
            "-",
            "-",
            "[2001:db8::2]:5432",
            "[2001:db8::99]:51000",
            "2h05m",
            "-",
            "2026-11-23 01:05:00Z"
        ]
    );
    let aligns = [L, L, L, R, L, L, L, R, L, L];
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
    let page: LeaksPage =
        parse(r#"{"leaks": [], "time_wait_pressure": [], "next_page_token": null}"#);
    assert_eq!(
        leaks(&page, "since 2h ago on host a"),
        "no leaks found since 2h ago on host a\n"
    );
}

#[test]
fn groups_show_counts_growth_peers_and_ended() {
    let page: GroupsPage = parse(
        r#"{"groups": [
      {"host": "app-1", "pid": 4242, "comm": "srv", "cmdline": "/usr/bin/srv --port 8080 --workers 64 --config /etc/srv/production.toml",
       "kind": "close_wait", "count": 40, "open": 38, "oldest": "2026-11-22T03:00:00Z",
       "newest": "2026-11-23T03:00:00Z", "ended": null, "growth_per_hour": 3.5,
       "peers": [{"host": "b", "count": 2}, {"host": "c", "count": 1}], "hint": "fix the close path"},
      {"host": "app-2", "pid": null, "comm": null, "cmdline": null,
       "kind": "last_ack_stuck", "count": 1, "open": 0, "oldest": "2026-11-22T03:00:00Z",
       "newest": "2026-11-22T03:00:00Z", "ended": "2026-11-22T04:00:00Z", "growth_per_hour": 0,
       "peers": [], "hint": ""}],
     "next_page_token": null}"#,
    );
    let out = groups(&page, "since 24h ago");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].contains("b(2) c(1)"), "{out}");
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

const SOCKET_A: &str = r#"{"host": "a", "netns": 4026531840, "state": "CLOSE_WAIT", "local": "10.77.0.10:8080",
 "remote": "10.77.0.11:40000", "pid": 123, "comm": "srv", "cmdline": "srv\u0000--port\u00008080", "fd": 7,
 "owners": [{"pid": 123, "comm": "srv", "cmdline": "srv", "fd": 7}, {"pid": 124, "comm": "srv", "cmdline": "srv", "fd": 7}],
 "since": "2026-11-23T03:00:00Z", "age_s": 12, "rx_queue": 0, "tx_queue": 0, "inode": 12345, "uid": 0,
 "timer": "off", "until": null}"#;

const SOCKET_TW: &str = r#"{"host": "a", "netns": 4026532000, "state": "TIME_WAIT", "local": "[::1]:40001",
 "remote": "[::1]:8080", "pid": null, "comm": null, "cmdline": null, "fd": null, "owners": [],
 "since": "2026-11-23T03:00:00Z", "age_s": 30, "rx_queue": 0, "tx_queue": 0, "inode": 0, "uid": 0,
 "timer": "timewait", "until": "2026-11-23T03:01:00Z"}"#;

#[test]
fn sockets_show_owners_namespaces_and_safe_cmdlines() {
    let page: SocketsPage = parse(&format!(
        r#"{{"host": "a", "as_of": "2026-11-23T03:05:00Z", "sockets": [{SOCKET_A}, {SOCKET_TW}], "next_page_token": null}}"#
    ));
    let out = sockets(&page, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "host a as of 2026-11-23 03:05:00Z");
    assert!(
        lines[1].starts_with("NETNS"),
        "two namespaces, so a NETNS column: {out}"
    );
    assert!(lines[2].contains("srv (+1)"), "{out}");
    assert!(
        lines[2].ends_with("srv --port 8080"),
        "NULs become spaces: {out}"
    );
    assert_eq!(
        col(lines[3], "[::1]:40001"),
        col(lines[1], "LOCAL"),
        "{out}"
    );
    assert!(lines[3].contains("2026-11-23 03:01:00Z"), "{out}");
}

#[test]
fn sockets_in_one_namespace_have_no_netns_column_and_empty_says_so() {
    let page: SocketsPage = parse(&format!(
        r#"{{"host": "a", "as_of": "2026-11-23T03:05:00Z", "sockets": [{SOCKET_A}], "next_page_token": null}}"#
    ));
    assert!(
        sockets(&page, "")
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("STATE"))
    );
    let empty: SocketsPage = parse(
        r#"{"host": "a", "as_of": "2026-11-23T03:05:00Z", "sockets": [], "next_page_token": null}"#,
    );
    assert_eq!(
        sockets(&empty, " in state CLOSE_WAIT"),
        "no sockets on host a in state CLOSE_WAIT as of 2026-11-23 03:05:00Z\n"
    );
}

#[test]
fn who_puts_both_ends_side_by_side_and_marks_unseen_ones() {
    let peer = SOCKET_A
        .replace("\"host\": \"a\"", "\"host\": \"b\"")
        .replace("\"local\": \"10.77.0.10:8080\"", "\"local\": \"X\"")
        .replace(
            "\"remote\": \"10.77.0.11:40000\"",
            "\"remote\": \"10.77.0.10:8080\"",
        )
        .replace("\"local\": \"X\"", "\"local\": \"10.77.0.11:40000\"")
        .replace("CLOSE_WAIT", "FIN_WAIT2");
    let page: WhoPage = parse(&format!(
        r#"{{"endpoint": "10.77.0.10:8080", "as_of": null,
            "connections": [{{"local": {SOCKET_A}, "remote": {peer}}}, {{"local": null, "remote": {peer}}}, {{"local": {SOCKET_A}, "remote": null}}],
            "next_page_token": null}}"#
    ));
    let out = who(&page);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "10.77.0.10:8080 as of now: this end | other end");
    let head = lines[1];
    let aligns = [L, L, L, R, L, L, L, L, R];
    let this_end = ["a", "CLOSE_WAIT", "123/srv", "12s"];
    let other_end = ["b", "FIN_WAIT2", "123/srv", "12s"];
    let unseen = ["(not seen)", "-", "-", "-"];
    let other = ["10.77.0.11:40000"];
    for (line, expected) in [
        (lines[2], [&this_end[..], &other, &other_end].concat()),
        (lines[3], [&unseen[..], &other, &other_end].concat()),
        (lines[4], [&this_end[..], &other, &unseen].concat()),
    ] {
        assert_eq!(texts(line), expected, "{out}");
        assert_aligned(head, line, &aligns);
    }
    let empty: WhoPage = parse(
        r#"{"endpoint": "[::1]:80", "as_of": "2026-11-23T03:00:00Z", "connections": [], "next_page_token": null}"#,
    );
    assert_eq!(
        who(&empty),
        "no connection to or from [::1]:80 seen as of 2026-11-23 03:00:00Z\n"
    );
}

#[test]
fn timeline_has_one_column_per_state_seen_in_kernel_order() {
    let page: TimelinePage = parse(
        r#"{"host": "a", "step_s": 720, "points": [
      {"t": "2026-11-23T00:00:00Z", "states": {"TIME_WAIT": 5, "ESTABLISHED": 3}},
      {"t": "2026-11-23T00:12:00Z", "states": {"ESTABLISHED": 3, "CLOSE_WAIT": 40}},
      {"t": "2026-11-23T00:24:00Z", "states": {}}],
     "next_page_token": null}"#,
    );
    let out = timeline(&page);
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

#[test]
fn hosts_show_states_and_pressure() {
    let page: HostsPage = parse(
        r#"{"hosts": [
      {"hostname": "a", "machine_id": "m1", "agent_version": "0.1.0", "last_seen": "2026-11-23T03:12:05Z",
       "labels": {}, "states": {"ESTABLISHED": 3, "CLOSE_WAIT": 2},
       "ephemeral_ports": {"low": 32768, "high": 60999},
       "time_wait_pressure": {"local_addr": "10.0.0.1", "remote": "10.0.0.2:5432", "count": 20000, "ports": 28232, "ratio": 0.71}},
      {"hostname": "b", "machine_id": "m2", "agent_version": "0.1.0", "last_seen": null,
       "labels": {}, "states": {}, "ephemeral_ports": {"low": 32768, "high": 60999},
       "time_wait_pressure": null}],
     "next_page_token": null}"#,
    );
    let now = format::parse_time("2026-11-23T03:15:17Z").expect("valid");
    let out = hosts(&page, now);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "HOST  LAST SEEN               AGO  AGENT  ESTABLISHED  CLOSE_WAIT  TIME_WAIT PRESSURE"
    );
    assert_eq!(
        lines[1],
        "a     2026-11-23 03:12:05Z  3m12s  0.1.0            3           2  71% of ports: 20000 TIME_WAIT 10.0.0.1 -> 10.0.0.2:5432"
    );
    assert_eq!(
        lines[2],
        "b     never                     -  0.1.0            0           0  -"
    );
    assert_eq!(
        hosts(&parse(r#"{"hosts": [], "next_page_token": null}"#), now),
        "no hosts have reported to this collector yet\n"
    );
}

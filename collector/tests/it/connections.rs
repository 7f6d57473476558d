//! Connections that cost a descriptor and do nothing, against the real collector binary
//! in a namespace of its own: plaintext connections that never send a byte, HTTP/2
//! connections that send the preface and then nothing (and answer no ping), HTTP/1.1
//! keep-alive connections left idle after a request, connections over the cap, and TLS
//! connections that stop half-way through the handshake. Each is closed by the
//! collector; the descriptor count stays under the cap; a normal query is answered
//! meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use finwait_testkit::{NetNs, Privilege, require_root};

use crate::e2e::{scratch, start_collector};
use crate::nsclient::{fd_count, http_get, on_thread_in, status_kb};
use finwait_proto::v1 as pb;

use crate::support::{AgentStream, Collector, certificates, full, identity, now_ms, sock};

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Asks the collector at `addr` in `ns` for the hosts once (the query pool opens lazily)
/// and expects 200.
fn first_query(ns: &NetNs, addr: SocketAddr) {
    let warm = on_thread_in(ns, move || {
        http_get(addr, "/api/v1/hosts", Duration::from_secs(10))
    })
    .join()
    .expect("thread")
    .expect("a first query");
    assert_eq!(warm.0, 200, "{warm:?}");
}

/// Whether the collector closed `s` before `deadline`: reads (discarding what the
/// server sends, such as SETTINGS and pings) until end of stream or a reset.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn idle_silent_and_over_cap_connections_are_closed_while_a_query_is_answered() {
    if require_root("idle_silent_and_over_cap_connections_are_closed") == Privilege::OptedOut {
        return;
    }
    const CAP: usize = 60;
    let ns = NetNs::create("conns").expect("namespace");
    let data = scratch("conns");
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &[
            "--max-connections",
            &CAP.to_string(),
            "--handshake-seconds",
            "5",
            "--idle-seconds",
            "5",
            "--keepalive-seconds",
            "2",
        ],
    );
    let pid = collector.0.id();
    let addr: SocketAddr = addr.parse().expect("address");
    // The collector's own descriptors (listener, pools, embedded server's log): the
    // query pool opens lazily, so ask once first.
    first_query(&ns, addr);
    let baseline = fd_count(pid);

    let (figures, outcome) = on_thread_in(&ns, move || {
        let connect = || TcpStream::connect(addr).expect("connect");
        // Silent: connected, never a byte.
        let mut held: Vec<(&str, TcpStream)> = (0..40).map(|_| ("silent", connect())).collect();
        // HTTP/2 preface, then nothing: no request, no ping answered.
        for _ in 0..10 {
            let mut s = connect();
            s.write_all(H2_PREFACE).expect("preface");
            held.push(("h2-idle", s));
        }
        // HTTP/1.1 keep-alive, idle after one answered request.
        for _ in 0..5 {
            let mut s = connect();
            s.write_all(b"GET /api/v1/ready HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("request");
            held.push(("h1-keepalive", s));
        }
        // A normal question on the 56th connection is answered.
        let answered = http_get(addr, "/api/v1/hosts", Duration::from_secs(10));
        // More than the cap allows: all but the few free places are closed at once.
        for _ in 0..100 {
            held.push(("over-cap", connect()));
        }
        std::thread::sleep(Duration::from_millis(300));
        let during = fd_count(pid);
        let hwm = status_kb(pid, "VmHWM");
        let deadline = Instant::now() + Duration::from_secs(40);
        let still_open: Vec<&str> = held
            .iter_mut()
            .filter_map(|(kind, s)| (!closed_by_server(s, deadline)).then_some(*kind))
            .collect();
        ((during, hwm), (answered, still_open))
    })
    .join()
    .expect("flood thread");
    let (during, hwm) = figures;
    let (answered, still_open) = outcome;
    let after = fd_count(pid);
    eprintln!(
        "connection flood: cap {CAP}, 155 opened; collector fds {baseline} before, {during} during, \
         {after} after; VmHWM {hwm:?} kB"
    );
    let answered = answered.expect("the query during the flood");
    assert_eq!(answered.0, 200, "query during the flood: {answered:?}");
    // Slack: a connection accepted only to be closed, a query connection opened.
    assert!(
        during <= baseline + CAP + 4,
        "{during} descriptors during the flood: more than {baseline} + the cap of {CAP} + 4"
    );
    assert!(
        still_open.is_empty(),
        "connections the collector never closed: {still_open:?}"
    );
    assert!(
        after <= baseline + 2,
        "descriptors not released: {after} after, {baseline} before"
    );
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_tls_handshake_that_stops_half_way_is_closed() {
    if require_root("a_tls_handshake_that_stops_half_way_is_closed") == Privilege::OptedOut {
        return;
    }
    let dir = scratch("tls-half");
    let (_ca, cert, key) = certificates("localhost");
    let path = |n: &str| dir.join(n).to_str().expect("utf-8").to_owned();
    std::fs::write(path("cert.pem"), cert).expect("cert");
    std::fs::write(path("key.pem"), key).expect("key");
    std::fs::write(path("tokens"), "t-1\n").expect("tokens");
    let c = Collector::start(&[
        "--tls-cert",
        &path("cert.pem"),
        "--tls-key",
        &path("key.pem"),
        "--tokens-file",
        &path("tokens"),
        "--handshake-seconds",
        "2",
    ])
    .await;
    let addr = c.addr;
    let open = tokio::task::spawn_blocking(move || {
        // A TLS record header announcing a 512-byte ClientHello, and 4 bytes of it.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
            .expect("partial hello");
        !closed_by_server(&mut s, Instant::now() + Duration::from_secs(30))
    })
    .await
    .expect("task");
    assert!(!open, "a half-finished TLS handshake was held open");
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_quiet_agent_stream_outlives_the_idle_time_and_keepalive_pings() {
    if require_root("a_quiet_agent_stream_outlives_the_idle_time") == Privilege::OptedOut {
        return;
    }
    let c = Collector::start(&["--idle-seconds", "1", "--keepalive-seconds", "1"]).await;
    let mut agent = AgentStream::open(c.addr, identity("quiet"), 1, "quiet-1", None)
        .await
        .expect("hello");
    for seq in 1..=2u64 {
        let sockets = vec![sock(seq, pb::TcpState::Established, 41_000, 443, Some(9))];
        let answer = agent
            .send(full(1, seq, now_ms(), sockets))
            .await
            .unwrap_or_else(|e| panic!("batch {seq} on the quiet stream: {e}"));
        assert!(
            matches!(&answer, pb::collector_message::Body::Ack(a) if a.seq == seq),
            "batch {seq}: {answer:?}"
        );
        // Quiet for four idle times and several ping rounds: the stream is a request
        // in flight, so its connection is not idle, and the client answers pings.
        if seq == 1 {
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn over_long_urls_and_headers_are_refused_and_a_slow_header_is_cut_off() {
    if require_root("over_long_urls_and_headers_are_refused") == Privilege::OptedOut {
        return;
    }
    let c = Collector::start(&[]).await;
    let addr = c.addr;
    let (url, headers, slow) = tokio::task::spawn_blocking(move || {
        let status = |request: Vec<u8>| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            // The server may answer and close before the whole request is written.
            let _ = s.write_all(&request);
            let mut head = [0u8; 12];
            s.read_exact(&mut head)
                .ok()
                .map(|()| String::from_utf8_lossy(&head).into_owned())
        };
        let long_url = format!(
            "GET /api/v1/hosts?x={} HTTP/1.1\r\nHost: t\r\n\r\n",
            "a".repeat(70_000)
        );
        let big_headers = format!(
            "GET /api/v1/hosts HTTP/1.1\r\nHost: t\r\n{}\r\n",
            (0..200)
                .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(2_000)))
                .collect::<String>()
        );
        // Slowloris: a request line and part of a header, then nothing.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /api/v1/hosts HTTP/1.1\r\nHost:")
            .expect("partial request");
        let slow = closed_by_server(&mut s, Instant::now() + Duration::from_secs(45));
        (
            status(long_url.into_bytes()),
            status(big_headers.into_bytes()),
            slow,
        )
    })
    .await
    .expect("task");
    assert_eq!(url.as_deref(), Some("HTTP/1.1 414"), "over-long URL");
    assert_eq!(
        headers.as_deref(),
        Some("HTTP/1.1 431"),
        "over-large headers"
    );
    assert!(slow, "a request whose headers never finish is held open");
    c.stop().await;
}

#[tokio::test]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    if require_root("running_out_of_descriptors_backs_off_and_recovers") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("emfile").expect("namespace");
    let data = scratch("emfile");
    let (mut collector, addr) = start_collector(&ns, &data, "127.0.0.1:0", &[]);
    let pid = collector.0.id();
    let addr: SocketAddr = addr.parse().expect("address");
    first_query(&ns, addr);
    // Leave the running collector ten descriptors of head room.
    let limit = fd_count(pid) + 10;
    let set = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (apt-get install util-linux)");
    assert!(set.success(), "prlimit --pid {pid}");

    // Thirty connections: the first few take the head room, accept(2) fails with
    // EMFILE for the rest, which wait in the listen backlog.
    let held = on_thread_in(&ns, move || {
        let held: Vec<TcpStream> = (0..30)
            .map(|_| TcpStream::connect(addr).expect("connect (the backlog takes it)"))
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        held
    })
    .join()
    .expect("flood thread");
    assert!(
        collector.0.try_wait().expect("status").is_none(),
        "the collector died out of descriptors (see {}/collector.log)",
        data.display()
    );
    let log = std::fs::read_to_string(data.join("collector.log")).expect("collector log");
    let failures: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("accept failed"))
        .filter_map(|l| {
            let at = l.find("failures=")? + "failures=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    let most = failures.iter().copied().max().unwrap_or(0);
    eprintln!(
        "out of descriptors for 3 s: accept failed {most} times (logged {:?})",
        failures
    );
    assert!(
        most > 0,
        "accept never failed with a limit of {limit} descriptors and 30 connections: the test \
         did not cause EMFILE (see {}/collector.log)",
        data.display()
    );
    // Backing off from 10 ms to 1 s fails about ten times in 3 s; a loop that spins on
    // EMFILE fails hundreds of thousands of times.
    assert!(
        most < 200,
        "accept failed {most} times in about 3 s: the accept loop spins instead of backing off"
    );

    // Descriptors come back: the collector serves again.
    drop(held);
    let after = on_thread_in(&ns, move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match http_get(addr, "/api/v1/hosts", Duration::from_secs(5)) {
                Ok(answer) if answer.0 == 200 => return Ok(answer),
                other if Instant::now() > deadline => return other,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .join()
    .expect("thread")
    .expect("a query once descriptors are free");
    assert_eq!(after.0, 200, "{after:?}");
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

//! The ingest stream against a real PostgreSQL: lifetimes, idempotency, resync,
//! validation, identity conflicts, tokens, silent agents.

use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use finwait_testkit::{Privilege, require_root};
use pb::TcpState::{CloseWait, Established, FinWait2, Listen};
use sqlx::Row;

use crate::support::{AgentStream, Collector, delta, full, identity, now_ms, sock};

fn root(test: &str) -> bool {
    require_root(test) == Privilege::Root
}

fn acked(body: &Body, seq: u64, duplicate: bool) -> bool {
    matches!(body, Body::Ack(a) if a.seq == seq && a.duplicate == duplicate)
}

async fn count(db: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect(sql)
}

#[tokio::test]
async fn lifetimes_open_change_state_and_end_with_their_times() {
    if !root("lifetimes_open_change_state_and_end_with_their_times") {
        return;
    }
    let c = Collector::start(&[]).await;
    let mut a = AgentStream::open(c.addr, identity("h1"), 7, "i1", None)
        .await
        .expect("hello");
    assert_eq!((a.welcome.last_epoch, a.welcome.last_seq), (0, 0));
    let t0 = now_ms() - 30_000;
    let b = full(
        7,
        1,
        t0,
        vec![
            sock(1, Listen, 80, 0, Some(10)),
            sock(2, Established, 80, 40000, Some(10)),
        ],
    );
    assert!(acked(&a.send(b).await.expect("answer"), 1, false));
    // Cycle 2: the peer closed (ESTABLISHED -> CLOSE_WAIT) and a FIN_WAIT2 appeared.
    let d = delta(
        7,
        2,
        t0 + 10_000,
        vec![sock(3, FinWait2, 5000, 90, None)],
        vec![sock(2, CloseWait, 80, 40000, Some(10))],
        vec![],
    );
    assert!(acked(&a.send(d).await.expect("answer"), 2, false));
    // Cycle 3: the FIN_WAIT2 expired.
    let d = delta(7, 3, t0 + 20_000, vec![], vec![], vec![3]);
    assert!(acked(&a.send(d).await.expect("answer"), 3, false));

    let db = c.db().await;
    let open: Vec<(i16, i64)> =
        sqlx::query_as("SELECT state, sock_key FROM current_sockets ORDER BY sock_key")
            .fetch_all(&db)
            .await
            .expect("open lifetimes");
    assert_eq!(
        open,
        vec![(10, 1), (8, 2)],
        "LISTEN and CLOSE_WAIT are open"
    );
    let cw_since: i64 = count(&db, "SELECT (extract(epoch from first_seen) * 1000)::bigint FROM current_sockets WHERE sock_key = 2").await;
    assert_eq!(
        cw_since,
        t0 + 10_000,
        "CLOSE_WAIT opened when first seen in that state"
    );
    let owners: serde_json::Value =
        sqlx::query_scalar("SELECT owners FROM current_sockets WHERE sock_key = 2")
            .fetch_one(&db)
            .await
            .expect("owners");
    assert_eq!(owners[0]["pid"], 10);
    assert_eq!(owners[0]["comm"], "proc10");
    let ended = sqlx::query(
        "SELECT state, sock_key, (extract(epoch from first_seen) * 1000)::bigint AS f, \
         (extract(epoch from last_seen) * 1000)::bigint AS l, end_reason FROM socket_lifetimes ORDER BY sock_key",
    )
    .fetch_all(&db)
    .await
    .expect("ended lifetimes");
    let ended: Vec<(i16, i64, i64, i64, i16)> = ended
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        ended,
        vec![
            (1, 2, t0, t0, 2),                   // ESTABLISHED ended by the state change
            (5, 3, t0 + 10_000, t0 + 10_000, 1), // FIN_WAIT2 gone, last seen in cycle 2
        ]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM state_counts").await, 1);
    a.send(full(7, 4, t0 + 30_000, vec![]))
        .await
        .expect("full table answer");
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        0,
        "an empty full table closes everything"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_batch_resent_after_commit_is_acknowledged_and_not_written_twice() {
    if !root("a_batch_resent_after_commit_is_acknowledged_and_not_written_twice") {
        return;
    }
    let c = Collector::start(&[]).await;
    let t0 = now_ms();
    let mut a = AgentStream::open(c.addr, identity("h2"), 9, "i2", None)
        .await
        .expect("hello");
    let b1 = full(9, 1, t0, vec![sock(1, Established, 80, 1, Some(5))]);
    let b2 = delta(
        9,
        2,
        t0 + 1000,
        vec![sock(2, Established, 80, 2, Some(5))],
        vec![],
        vec![],
    );
    assert!(acked(&a.send(b1).await.expect("answer"), 1, false));
    assert!(acked(&a.send(b2.clone()).await.expect("answer"), 2, false));
    // The ack was lost: the agent reconnects and resends batch 2.
    drop(a);
    let mut a = AgentStream::open(c.addr, identity("h2"), 9, "i2", None)
        .await
        .expect("hello again");
    assert_eq!(
        (a.welcome.last_epoch, a.welcome.last_seq),
        (9, 2),
        "welcome says what was committed"
    );
    assert!(
        acked(&a.send(b2).await.expect("answer"), 2, true),
        "duplicate acknowledged as such"
    );
    let db = c.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 2);
    assert_eq!(count(&db, "SELECT count(*) FROM current_sockets").await, 2);
    c.stop().await;
}

#[tokio::test]
async fn a_delta_that_does_not_follow_gets_a_resync() {
    if !root("a_delta_that_does_not_follow_gets_a_resync") {
        return;
    }
    let c = Collector::start(&[]).await;
    let t0 = now_ms();
    let mut a = AgentStream::open(c.addr, identity("h3"), 3, "i3", None)
        .await
        .expect("hello");
    assert!(acked(
        &a.send(full(3, 1, t0, vec![])).await.expect("answer"),
        1,
        false
    ));
    let gap = delta(
        3,
        5,
        t0 + 1000,
        vec![sock(1, Established, 1, 2, None)],
        vec![],
        vec![],
    );
    match a.send(gap).await.expect("answer") {
        Body::Resync(r) => {
            assert_eq!(r.seq, 5);
            assert!(r.reason.contains("does not follow"), "{}", r.reason);
        }
        other => panic!("expected resync, got {other:?}"),
    }
    // A full table repairs it.
    assert!(acked(
        &a.send(full(
            3,
            6,
            t0 + 2000,
            vec![sock(1, Established, 1, 2, None)]
        ))
        .await
        .expect("answer"),
        6,
        false
    ));
    let db = c.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM current_sockets").await, 1);
    c.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_earlier_data_stays() {
    if !root("bad_input_is_refused_naming_the_field_and_earlier_data_stays") {
        return;
    }
    let c = Collector::start(&[]).await;
    let t0 = now_ms();
    let cases: Vec<(&str, Spoiler)> = vec![
        (
            "sockets[0].state",
            Box::new(|b| set_sock(b, |s| s.state = 42)),
        ),
        (
            "sockets[0].local.port",
            Box::new(|b| set_sock(b, |s| s.local.as_mut().expect("local").port = 70_000)),
        ),
        (
            "sockets[0].remote.addr",
            Box::new(|b| {
                set_sock(b, |s| {
                    s.remote.as_mut().expect("remote").addr = vec![1, 2, 3]
                })
            }),
        ),
        ("batch.taken_at_ms", Box::new(|b| b.taken_at_ms = 42)),
        ("owners[0].pid", Box::new(|b| b.processes.clear())),
    ];
    for (i, (field, spoil)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut a = AgentStream::open(c.addr, identity(&name), 1, &name, None)
            .await
            .expect("hello");
        assert!(acked(
            &a.send(full(1, 1, t0, vec![sock(1, Established, 80, 1, Some(4))]))
                .await
                .expect("answer"),
            1,
            false
        ));
        let mut bad = full(1, 2, t0 + 1000, vec![sock(2, Established, 80, 2, Some(4))]);
        spoil(&mut bad);
        let status = a.send(bad).await.expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} named in {:?}",
            status.message()
        );
        assert!(
            !status.message().to_lowercase().contains("sql"),
            "no driver text: {}",
            status.message()
        );
    }
    // Process names with NUL and control characters are sanitised, not refused.
    let mut a = AgentStream::open(c.addr, identity("nul"), 1, "nul", None)
        .await
        .expect("hello");
    let mut b = full(1, 1, t0, vec![sock(1, Established, 80, 1, Some(4))]);
    b.processes[0].comm = "ev\0il\u{1b}[31m".into();
    assert!(acked(&a.send(b).await.expect("answer"), 1, false));
    let db = c.db().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        cases.len() as i64 + 1,
        "each stream's first batch stayed committed"
    );
    let comm: String = sqlx::query_scalar(
        "SELECT c.owners->0->>'comm' FROM current_sockets c JOIN hosts h USING (host_id) WHERE h.hostname = 'nul'",
    )
    .fetch_one(&db)
    .await
    .expect("sanitised comm");
    assert_eq!(comm, "ev\u{fffd}il\u{fffd}[31m");
    c.stop().await;
}

/// Breaks one field of a batch.
type Spoiler = Box<dyn Fn(&mut pb::Batch)>;

fn set_sock(b: &mut pb::Batch, f: impl Fn(&mut pb::Socket)) {
    if let Some(pb::batch::Payload::Full(t)) = &mut b.payload {
        f(&mut t.sockets[0]);
    }
}

#[tokio::test]
async fn a_second_live_agent_claiming_the_same_identity_is_refused() {
    if !root("a_second_live_agent_claiming_the_same_identity_is_refused") {
        return;
    }
    let c = Collector::start(&[]).await;
    let _first = AgentStream::open(c.addr, identity("clone"), 1, "first", None)
        .await
        .expect("first agent");
    let mut clone = identity("clone");
    clone.boot_id = "another-boot".into();
    let status = AgentStream::open(c.addr, clone, 2, "second", None)
        .await
        .err()
        .expect("second agent refused");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(
        status.message().contains("already has a live agent"),
        "{}",
        status.message()
    );
    let db = c.db().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM hosts").await,
        1,
        "not merged into a second host either"
    );
    c.stop().await;
}

#[tokio::test]
async fn tokens_are_required_when_configured() {
    if !root("tokens_are_required_when_configured") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fw-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tokens");
    std::fs::write(&file, "# agents\ns3cret\n").expect("tokens file");
    // Plaintext with tokens on loopback is what a test can do without certificates.
    let c = Collector::start(&[
        "--tokens-file",
        file.to_str().expect("utf-8"),
        "--insecure-loopback",
    ])
    .await;
    let none = AgentStream::open(c.addr, identity("t"), 1, "t", None)
        .await
        .err()
        .expect("no token");
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let bad = AgentStream::open(c.addr, identity("t"), 1, "t", Some("nope"))
        .await
        .err()
        .expect("bad token");
    assert_eq!(bad.code(), tonic::Code::Unauthenticated);
    AgentStream::open(c.addr, identity("t"), 1, "t", Some("s3cret"))
        .await
        .expect("good token");
    c.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_silent_agents_open_lifetimes_end_at_its_last_report() {
    if !root("a_silent_agents_open_lifetimes_end_at_its_last_report") {
        return;
    }
    let c = Collector::start(&["--lease-seconds", "1", "--maintenance-seconds", "1"]).await;
    let t0 = now_ms() - 5000;
    {
        let mut a = AgentStream::open(c.addr, identity("quiet"), 1, "q", None)
            .await
            .expect("hello");
        assert!(acked(
            &a.send(full(1, 1, t0, vec![sock(1, CloseWait, 80, 1, Some(4))]))
                .await
                .expect("answer"),
            1,
            false
        ));
    }
    let db = c.db().await;
    // Lease 1 s, sweep every 1 s: the row moves within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if count(
            &db,
            "SELECT count(*) FROM socket_lifetimes WHERE end_reason = 3",
        )
        .await
            == 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "silent agent's lifetime never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let last: i64 = count(
        &db,
        "SELECT (extract(epoch from last_seen) * 1000)::bigint FROM socket_lifetimes",
    )
    .await;
    assert_eq!(last, t0, "capped at the last report, not at the sweep time");
    assert_eq!(count(&db, "SELECT count(*) FROM current_sockets").await, 0);
    c.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_like_grpcurl_expects() {
    if !root("health_and_reflection_answer_like_grpcurl_expects") {
        return;
    }
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let c = Collector::start(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "finwait.v1.Ingest".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list, got {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"finwait.v1.Ingest".to_owned()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn stream_and_message_size_limits_are_enforced() {
    if !root("stream_and_message_size_limits_are_enforced") {
        return;
    }
    let c = Collector::start(&["--max-streams", "1", "--max-message-bytes", "4096"]).await;
    let mut first = AgentStream::open(c.addr, identity("lim1"), 1, "l1", None)
        .await
        .expect("first stream");
    let second = AgentStream::open(c.addr, identity("lim2"), 1, "l2", None)
        .await
        .err()
        .expect("second refused");
    assert_eq!(second.code(), tonic::Code::ResourceExhausted, "{second:?}");
    let big: Vec<pb::Socket> = (0..200)
        .map(|i| sock(i, Established, 80, i as u32 + 1, None))
        .collect();
    let status = first
        .send(full(1, 1, now_ms(), big))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    c.stop().await;
}

#[tokio::test]
async fn an_agent_whose_lease_was_taken_over_is_stopped_not_merged() {
    if !root("an_agent_whose_lease_was_taken_over_is_stopped_not_merged") {
        return;
    }
    let c = Collector::start(&["--lease-seconds", "1"]).await;
    let t0 = now_ms();
    let mut old = AgentStream::open(c.addr, identity("taken"), 1, "old", None)
        .await
        .expect("first agent");
    assert!(acked(
        &old.send(full(1, 1, t0, vec![])).await.expect("answer"),
        1,
        false
    ));
    // The lease (3 sampling intervals of 1 s) lapses; another instance takes the host.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let _new = AgentStream::open(c.addr, identity("taken"), 2, "new", None)
        .await
        .expect("takeover after the lease lapsed");
    let status = old
        .send(full(1, 2, t0 + 1000, vec![]))
        .await
        .expect_err("old agent refused");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    c.stop().await;
}

// Multi-threaded: curl blocks this thread while the in-process collector answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_rollup_counts_reporting_hosts_states_and_open_leaks_each_minute() {
    if !root("the_fleet_rollup_counts_reporting_hosts_states_and_open_leaks") {
        return;
    }
    let c = Collector::start(&[
        "--maintenance-seconds",
        "1",
        "--leak-threshold-seconds",
        "1",
    ])
    .await;
    let t0 = now_ms() - 3000;
    let mut a = AgentStream::open(c.addr, identity("rolled"), 1, "r", None)
        .await
        .expect("hello");
    let leaky = || {
        vec![
            sock(1, CloseWait, 80, 1, Some(4)),
            sock(2, Established, 81, 2, Some(4)),
        ]
    };
    for (seq, t) in [(1, t0), (2, t0 + 2000)] {
        let answer = a.send(full(1, seq, t, leaky())).await.expect("answer");
        assert!(acked(&answer, seq, false), "{answer:?}");
    }
    // The maintenance task (every second here) writes this minute's row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let point = loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", &format!("http://{}/api/v1/fleet?since=5m", c.addr)])
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let last = v["points"].as_array().and_then(|p| p.last()).cloned();
        if let Some(p) = last.filter(|p| p["open_leaks"] == 1) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no rollup: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(point["hosts_reporting"], 1, "{point:#}");
    assert_eq!(point["hosts_silent"], 0, "{point:#}");
    // The agent's own per-state counts at its last report.
    assert_eq!(
        point["states"],
        serde_json::json!({"ESTABLISHED": 1}),
        "{point:#}"
    );
    let page: finwait_vocab::answer::FleetPage = serde_json::from_value(serde_json::json!({
        "points": [point], "step_s": 60, "next_page_token": null
    }))
    .expect("the vocab's fleet types");
    assert_eq!(page.points[0].open_leaks, 1);
    c.stop().await;
}

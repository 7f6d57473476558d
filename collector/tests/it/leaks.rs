//! Correlation on lifetimes ingested through the real stream: exact pairs, NAT pairs,
//! one-sided CLOSE_WAIT after the peer's FIN_WAIT2 expired, ended leaks, and no verdict
//! for young CLOSE_WAIT or well-behaved traffic.

use chrono::{TimeZone, Utc};
use finwait_collector::query::PageReq;
use finwait_collector::query::leaks::{LeakQuery, leaks};
use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use finwait_testkit::{Privilege, require_root};
use pb::TcpState::{CloseWait, Established, FinWait2};

use crate::support::{AgentStream, Collector, delta, full, identity, now_ms, socket as s};

const SERVER: [u8; 4] = [10, 1, 0, 1];
const CLIENT_B: [u8; 4] = [10, 1, 0, 2];
const CLIENT_C: [u8; 4] = [10, 1, 0, 3];
const VIP: [u8; 4] = [10, 96, 0, 1];

fn ok(b: Body) {
    assert!(matches!(b, Body::Ack(_)), "{b:?}");
}

/// The scene: A holds three CLOSE_WAITs (peer B exact, peer C through NAT, peer unseen)
/// and a well-behaved ESTABLISHED; B and C hold the orphaned FIN_WAIT2s, which expire at
/// t0+60 s; at t0+290 s A adds a young CLOSE_WAIT; at t0+300 s the exact one ends.
/// Returns t0 (ms) and the open streams (dropping them would end the hosts' leases).
async fn seed(c: &Collector) -> (i64, Vec<AgentStream>) {
    let t0 = now_ms() - 600_000;
    let tw = Some(pb::TimerKind::TimeWait);
    let mut a = AgentStream::open(c.addr, identity("server-a"), 1, "a", None)
        .await
        .expect("a");
    let mut b = AgentStream::open(c.addr, identity("client-b"), 1, "b", None)
        .await
        .expect("b");
    let mut cc = AgentStream::open(c.addr, identity("client-c"), 1, "c", None)
        .await
        .expect("c");

    // t0: A holds three CLOSE_WAITs (peer B exact, peer C through NAT, peer unseen), a
    // well-behaved ESTABLISHED; B and C hold the orphaned FIN_WAIT2s.
    ok(a.send(full(
        1,
        1,
        t0,
        vec![
            s(
                1,
                CloseWait,
                (SERVER, 80),
                (CLIENT_B, 40000),
                Some(100),
                None,
            ),
            s(
                2,
                CloseWait,
                (SERVER, 80),
                (CLIENT_C, 41000),
                Some(100),
                None,
            ),
            s(
                3,
                CloseWait,
                (SERVER, 80),
                ([10, 9, 9, 9], 42000),
                Some(100),
                None,
            ),
            s(
                4,
                Established,
                (SERVER, 80),
                (CLIENT_B, 40001),
                Some(100),
                None,
            ),
        ],
    ))
    .await
    .expect("a1"));
    ok(b.send(full(
        1,
        1,
        t0,
        vec![
            s(11, FinWait2, (CLIENT_B, 40000), (SERVER, 80), None, tw),
            s(
                12,
                Established,
                (CLIENT_B, 40001),
                (SERVER, 80),
                Some(200),
                None,
            ),
        ],
    ))
    .await
    .expect("b1"));
    ok(cc
        .send(full(
            1,
            1,
            t0,
            vec![s(21, FinWait2, (CLIENT_C, 41000), (VIP, 80), None, tw)],
        ))
        .await
        .expect("c1"));

    // t0+60 s: the orphaned FIN_WAIT2s expired (tcp_fin_timeout); A adds a young CLOSE_WAIT.
    ok(b.send(delta(1, 2, t0 + 60_000, vec![], vec![], vec![11]))
        .await
        .expect("b2"));
    ok(cc
        .send(delta(1, 2, t0 + 60_000, vec![], vec![], vec![21]))
        .await
        .expect("c2"));
    ok(a.send(delta(
        1,
        2,
        t0 + 290_000,
        vec![s(
            5,
            CloseWait,
            (SERVER, 80),
            (CLIENT_B, 40002),
            Some(100),
            None,
        )],
        vec![],
        vec![],
    ))
    .await
    .expect("a2"));
    // t0+300 s: the exact one ends (the server finally closed it).
    ok(a.send(delta(1, 3, t0 + 300_000, vec![], vec![], vec![1]))
        .await
        .expect("a3"));

    (t0, vec![a, b, cc])
}

#[tokio::test]
async fn close_wait_is_paired_with_its_peer_exactly_through_nat_or_not_at_all() {
    if require_root("close_wait_is_paired_with_its_peer") == Privilege::OptedOut {
        return;
    }
    let c = Collector::start(&[]).await;
    let (t0, _streams) = seed(&c).await;
    let pool = c.db().await;
    let q = LeakQuery {
        since: Utc.timestamp_millis_opt(t0 - 1000).single().expect("time"),
        min_age_s: 60.0,
        slack_s: 20.0,
        host: None,
        process: None,
        service: None,
        kind: None,
        confidence: None,
        until: None,
        page: PageReq {
            offset: 0,
            limit: 100,
        },
    };
    let found = leaks(&pool, &q).await.expect("leaks");
    let summary: Vec<(&str, &str, String, Option<String>, bool)> = found
        .iter()
        .map(|l| {
            (
                l.kind.name(),
                l.confidence.name(),
                l.holder.remote.clone(),
                l.peer.as_ref().map(|p| p.host.clone()),
                l.until.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "close_wait",
                "exact",
                "10.1.0.2:40000".to_owned(),
                Some("client-b".to_owned()),
                true
            ),
            (
                "close_wait",
                "nat",
                "10.1.0.3:41000".to_owned(),
                Some("client-c".to_owned()),
                false
            ),
            (
                "close_wait",
                "one_sided",
                "10.9.9.9:42000".to_owned(),
                None,
                false
            ),
        ],
        "{found:#?}"
    );
    let exact = &found[0];
    assert_eq!(
        (
            exact.holder.host.as_str(),
            exact.holder.pid,
            exact.holder.comm.as_deref()
        ),
        ("server-a", Some(100), Some("proc100"))
    );
    assert_eq!(exact.holder.local, "10.1.0.1:80");
    let peer = exact.peer.as_ref().expect("peer");
    assert_eq!(
        (peer.state.name(), peer.local.as_str(), peer.remote.as_str()),
        ("FIN_WAIT2", "10.1.0.2:40000", "10.1.0.1:80")
    );
    assert_eq!(
        exact.until,
        Some(
            Utc.timestamp_millis_opt(t0 + 290_000)
                .single()
                .expect("time")
        ),
        "ended at its last sighting"
    );
    assert!(exact.hint.contains("close()"));

    // Filters.
    let only_c = leaks(
        &pool,
        &LeakQuery {
            host: Some("client-b".into()),
            ..q.clone()
        },
    )
    .await
    .expect("filtered");
    assert!(only_c.is_empty(), "no holder on client-b: {only_c:#?}");
    let by_proc = leaks(
        &pool,
        &LeakQuery {
            process: Some("proc100".into()),
            ..q.clone()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(by_proc.len(), 3, "all three are proc100's");
    let by_proc = leaks(
        &pool,
        &LeakQuery {
            process: Some("proc999".into()),
            ..q.clone()
        },
    )
    .await
    .expect("filtered");
    assert!(by_proc.is_empty(), "{by_proc:#?}");
    c.stop().await;
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// GET on the collector's HTTP API; (status, body).
fn http(c: &Collector, path_and_query: &str) -> (u16, serde_json::Value) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-g", "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path_and_query}", c.addr))
        .output()
        .expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path_and_query}: {e}: {body}"));
    (code.trim().parse().expect("status"), json)
}

fn ends(connections: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = connections
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            let side = |k: &str| match &c[k] {
                serde_json::Value::Null => "-".to_owned(),
                s => format!(
                    "{}/{}/{}",
                    s["host"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("?"),
                    s["remote"].as_str().unwrap_or("?")
                ),
            };
            (side("local"), side("remote"))
        })
        .collect();
    v.sort();
    v
}

// Multi-threaded: curl blocks a thread while the in-process collector answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_sockets_groups_and_timeline_answer_for_past_instants_over_http_and_grpc() {
    if require_root("who_sockets_groups_and_timeline_answer_for_past_instants")
        == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;
    let (t0, _streams) = seed(&c).await;
    let t30 = rfc3339(t0 + 30_000);

    // Sockets of A as of t0+30 s: its t0 report (three CLOSE_WAIT, one ESTABLISHED);
    // now: the exact one is gone, the young one is there.
    let (st, a_then) = http(&c, &format!("/api/v1/sockets?host=server-a&at={t30}"));
    assert_eq!(st, 200, "{a_then}");
    assert_eq!(
        a_then["as_of"],
        serde_json::json!(rfc3339(t0).replace(".000Z", "Z")),
        "{a_then}"
    );
    let remotes = |v: &serde_json::Value| {
        let mut r: Vec<String> = v["sockets"]
            .as_array()
            .expect("sockets")
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["state"].as_str().unwrap_or("?"),
                    s["remote"].as_str().unwrap_or("?")
                )
            })
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        remotes(&a_then),
        [
            "CLOSE_WAIT 10.1.0.2:40000",
            "CLOSE_WAIT 10.1.0.3:41000",
            "CLOSE_WAIT 10.9.9.9:42000",
            "ESTABLISHED 10.1.0.2:40001"
        ]
    );
    let first = &a_then["sockets"][0];
    assert_eq!(
        (first["pid"].as_u64(), first["comm"].as_str()),
        (Some(100), Some("proc100")),
        "{first}"
    );
    assert_eq!(first["age_s"], 0, "as of t0 each had just appeared");
    let (_, a_now) = http(&c, "/api/v1/sockets?host=server-a&state=close-wait");
    assert_eq!(
        remotes(&a_now),
        [
            "CLOSE_WAIT 10.1.0.2:40002",
            "CLOSE_WAIT 10.1.0.3:41000",
            "CLOSE_WAIT 10.9.9.9:42000"
        ]
    );
    // B as of t0+120 s (its t0+60 s report): the FIN_WAIT2 had expired.
    let (_, b_later) = http(
        &c,
        &format!("/api/v1/sockets?host=client-b&at={}", rfc3339(t0 + 120_000)),
    );
    assert_eq!(remotes(&b_later), ["ESTABLISHED 10.1.0.1:80"]);
    let (_, b_then) = http(
        &c,
        &format!("/api/v1/sockets?host=client-b&at={t30}&port=40000"),
    );
    assert_eq!(remotes(&b_then), ["FIN_WAIT2 10.1.0.1:80"]);
    assert!(
        b_then["sockets"][0]["until"].is_string(),
        "ended later: {b_then}"
    );

    // Who held 10.1.0.1:80 at t0+30 s: both ends side by side where both were seen.
    let (st, who) = http(&c, &format!("/api/v1/who?endpoint=10.1.0.1:80&at={t30}"));
    assert_eq!(st, 200, "{who}");
    assert_eq!(
        ends(&who["connections"]),
        vec![
            (
                "server-a/CLOSE_WAIT/10.1.0.2:40000".to_owned(),
                "client-b/FIN_WAIT2/10.1.0.1:80".to_owned()
            ),
            (
                "server-a/CLOSE_WAIT/10.1.0.3:41000".to_owned(),
                "-".to_owned()
            ),
            (
                "server-a/CLOSE_WAIT/10.9.9.9:42000".to_owned(),
                "-".to_owned()
            ),
            (
                "server-a/ESTABLISHED/10.1.0.2:40001".to_owned(),
                "client-b/ESTABLISHED/10.1.0.1:80".to_owned()
            ),
        ],
        "{who:#}"
    );
    let (_, who_now) = http(&c, "/api/v1/who?endpoint=10.1.0.1:80");
    assert_eq!(
        ends(&who_now["connections"]),
        vec![
            (
                "server-a/CLOSE_WAIT/10.1.0.2:40002".to_owned(),
                "-".to_owned()
            ),
            (
                "server-a/CLOSE_WAIT/10.1.0.3:41000".to_owned(),
                "-".to_owned()
            ),
            (
                "server-a/CLOSE_WAIT/10.9.9.9:42000".to_owned(),
                "-".to_owned()
            ),
            (
                "server-a/ESTABLISHED/10.1.0.2:40001".to_owned(),
                "client-b/ESTABLISHED/10.1.0.1:80".to_owned()
            ),
        ],
        "{who_now:#}"
    );
    // The client's side of the endpoint: C's FIN_WAIT2 went to the NAT address.
    let (_, who_c) = http(&c, &format!("/api/v1/who?endpoint=10.1.0.3:41000&at={t30}"));
    assert_eq!(
        ends(&who_c["connections"]),
        vec![
            (
                "-".to_owned(),
                "server-a/CLOSE_WAIT/10.1.0.3:41000".to_owned()
            ),
            ("client-c/FIN_WAIT2/10.96.0.1:80".to_owned(), "-".to_owned()),
        ]
    );

    // Pages: two of four, then the rest.
    let (_, p1) = http(
        &c,
        &format!("/api/v1/who?endpoint=10.1.0.1:80&at={t30}&limit=2"),
    );
    let token = p1["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, p2) = http(
        &c,
        &format!("/api/v1/who?endpoint=10.1.0.1:80&at={t30}&limit=2&page_token={token}"),
    );
    assert!(p2["next_page_token"].is_null(), "{p2}");
    let mut both = ends(&p1["connections"]);
    both.extend(ends(&p2["connections"]));
    both.sort();
    assert_eq!(both, ends(&who["connections"]));

    // Groups: proc100 on server-a holds three leaks, two still open, peers B and C.
    let (_, g) = http(
        &c,
        &format!("/api/v1/leaks/groups?since={}", rfc3339(t0 - 1000)),
    );
    let groups = g["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{g:#}");
    let g0 = &groups[0];
    assert_eq!(
        (
            g0["host"].as_str(),
            g0["comm"].as_str(),
            g0["count"].as_i64(),
            g0["open"].as_i64()
        ),
        (Some("server-a"), Some("proc100"), Some(3), Some(2)),
        "{g0:#}"
    );
    assert_eq!(g0["service"].as_str(), Some("proc100.service"), "{g0:#}");
    assert_eq!(
        g0["peers"],
        serde_json::json!([
            {"host": "client-b", "service": null, "count": 1},
            {"host": "client-c", "service": null, "count": 1}
        ])
    );
    assert!(g0["ended"].is_null());

    // Filters and pages on leaks.
    let since = rfc3339(t0 - 1000);
    let (_, nat) = http(&c, &format!("/api/v1/leaks?since={since}&confidence=nat"));
    assert_eq!(nat["leaks"].as_array().map(Vec::len), Some(1), "{nat:#}");
    assert_eq!(nat["leaks"][0]["holder"]["remote"], "10.1.0.3:41000");
    let (_, l1) = http(&c, &format!("/api/v1/leaks?since={since}&limit=2"));
    assert_eq!(l1["leaks"].as_array().map(Vec::len), Some(2));
    let (_, l2) = http(
        &c,
        &format!(
            "/api/v1/leaks?since={since}&limit=2&page_token={}",
            l1["next_page_token"].as_str().expect("token")
        ),
    );
    assert_eq!(l2["leaks"].as_array().map(Vec::len), Some(1));
    assert!(l2["next_page_token"].is_null());

    // Timeline: the full tables carried counts.
    let (_, tl) = http(
        &c,
        &format!("/api/v1/timeline?host=server-a&since={since}&step=1m"),
    );
    assert_eq!(tl["step_s"], 60);
    assert_eq!(tl["points"].as_array().map(Vec::len), Some(1), "{tl:#}");
    assert_eq!(
        tl["points"][0]["states"],
        serde_json::json!({"ESTABLISHED": 1})
    );

    // Every endpoint's real answer reads back into the shared answer types, as the CLI
    // reads them.
    use finwait_vocab::answer as va;
    fn typed<T: serde::de::DeserializeOwned>(path: &str, v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{path} into the vocab type: {e}"))
    }
    let since_q = format!("since={since}");
    let hosts: va::HostsPage = typed("hosts", http(&c, "/api/v1/hosts").1);
    assert!(hosts.hosts.iter().any(|h| h.hostname == "server-a"));
    let _: va::SocketsPage = typed("sockets", a_now.clone());
    let _: va::SocketsPage = typed("sockets at", a_then.clone());
    let _: va::WhoPage = typed("who", who.clone());
    let _: va::WhoPage = typed("who now", who_now.clone());
    let leaks: va::LeaksPage = typed("leaks", http(&c, &format!("/api/v1/leaks?{since_q}")).1);
    assert!(!leaks.leaks.is_empty());
    let _: va::GroupsPage = typed("groups", g.clone());
    let by_service: va::GroupsPage = typed(
        "groups by service",
        http(&c, &format!("/api/v1/leaks/groups?{since_q}&by=service")).1,
    );
    assert_eq!(
        by_service.groups[0].service.as_deref(),
        Some("proc100.service")
    );
    let _: va::TimelinePage = typed("timeline", tl.clone());
    let _: va::ErrorBody = typed("error", http(&c, "/api/v1/leaks?kind=zombie").1);

    // A spelling the vocabulary accepts, the API accepts (one table for every side).
    for (st, words) in finwait_vocab::state::SPELLINGS {
        for w in words.iter().chain([&st.name(), &st.ss_column()]) {
            let (code, body) = http(&c, &format!("/api/v1/sockets?host=server-a&state={w}"));
            assert_eq!(code, 200, "state={w}: {body}");
            for s in body["sockets"].as_array().into_iter().flatten() {
                assert_eq!(s["state"], st.name(), "state={w}");
            }
        }
    }

    // Bad parameters: 400 naming the parameter; unknown host 404; the same over gRPC.
    let long_host = format!("/api/v1/sockets?host={}", "a".repeat(2000));
    for (path, param) in [
        ("/api/v1/who?endpoint=10.1.0.1", "endpoint"),
        ("/api/v1/who?endpoint=10.1.0.1:80&at=yesterday", "at"),
        ("/api/v1/sockets?host=server-a&state=HALF_OPEN", "state"),
        ("/api/v1/sockets?state=LISTEN", "host"),
        ("/api/v1/leaks?limit=0", "limit"),
        ("/api/v1/leaks?kind=zombie", "kind"),
        ("/api/v1/leaks?hots=a", "hots"),
        ("/api/v1/timeline?host=server-a&step=0", "step"),
        // Client mistakes that once came back 503 "storage unavailable", or were
        // half-read: a NUL, a duration too long for an interval, a repeated parameter,
        // a value too long.
        ("/api/v1/sockets?host=server%00a", "host"),
        ("/api/v1/leaks?min_age=99999999d", "min_age"),
        ("/api/v1/timeline?host=server-a&step=99999999d", "step"),
        ("/api/v1/leaks?host=server-a&host=client-b", "host"),
        (&long_host, "host"),
    ] {
        let (st, body) = http(&c, path);
        assert_eq!(st, 400, "{path}: {body}");
        let msg = body["error"]["message"].as_str().expect("message");
        assert!(msg.starts_with(&format!("{param}: ")), "{path}: {msg}");
    }
    let (st, body) = http(&c, "/api/v1/sockets?host=nosuch");
    assert_eq!(st, 404, "{body}");
    let (st, body) = http(&c, "/api/v1/nosuch");
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );

    let mut grpc = pb::query_client::QueryClient::connect(format!("http://{}", c.addr))
        .await
        .expect("gRPC connect");
    let w = grpc
        .who(pb::WhoRequest {
            endpoint: "10.1.0.1:80".into(),
            at: t30.clone(),
            page: None,
        })
        .await
        .expect("who over gRPC")
        .into_inner();
    assert_eq!(w.connections.len(), 4);
    let paired = w
        .connections
        .iter()
        .filter(|c| c.local.is_some() && c.remote.is_some())
        .count();
    assert_eq!(paired, 2);
    let l = grpc
        .leaks(pb::LeaksRequest {
            since: since.clone(),
            ..Default::default()
        })
        .await
        .expect("leaks over gRPC")
        .into_inner();
    let (_, lh) = http(&c, &format!("/api/v1/leaks?since={since}"));
    let from_grpc: Vec<(String, String, String)> = l
        .leaks
        .iter()
        .map(|x| {
            (
                x.kind.clone(),
                x.confidence.clone(),
                x.holder
                    .as_ref()
                    .map(|h| h.remote.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let from_http: Vec<(String, String, String)> = lh["leaks"]
        .as_array()
        .expect("leaks")
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap_or("").into(),
                x["confidence"].as_str().unwrap_or("").into(),
                x["holder"]["remote"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(from_grpc, from_http, "both transports answer alike");
    let s = grpc
        .sockets(pb::SocketsRequest {
            host: "server-a".into(),
            at: t30.clone(),
            ..Default::default()
        })
        .await
        .expect("sockets over gRPC")
        .into_inner();
    assert_eq!(s.sockets.len(), 4);
    assert_eq!(s.as_of_ms, t0);
    let e = grpc
        .sockets(pb::SocketsRequest {
            host: "server-a".into(),
            state: "HALF_OPEN".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad state");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let (_, hb) = http(&c, "/api/v1/sockets?host=server-a&state=HALF_OPEN");
    assert_eq!(
        e.message(),
        hb["error"]["message"].as_str().expect("message"),
        "same message"
    );
    let e = grpc
        .timeline(pb::TimelineRequest {
            host: "nosuch".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown host");
    assert_eq!(e.code(), tonic::Code::NotFound);
    c.stop().await;
}

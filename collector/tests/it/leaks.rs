//! Correlation on lifetimes ingested through the real stream: exact pairs, NAT pairs,
//! one-sided CLOSE_WAIT after the peer's FIN_WAIT2 expired, ended leaks, and no verdict
//! for young CLOSE_WAIT or well-behaved traffic.

use chrono::{TimeZone, Utc};
use finwait_collector::leaks::{LeakQuery, leaks};
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

#[tokio::test]
async fn close_wait_is_paired_with_its_peer_exactly_through_nat_or_not_at_all() {
    if require_root("close_wait_is_paired_with_its_peer") == Privilege::OptedOut {
        return;
    }
    let c = Collector::start(&[]).await;
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

    let pool = c.db().await;
    let q = LeakQuery {
        since: Utc.timestamp_millis_opt(t0 - 1000).single().expect("time"),
        min_age_s: 60.0,
        slack_s: 20.0,
        host: None,
        process: None,
        limit: 100,
    };
    let found = leaks(&pool, &q).await.expect("leaks");
    let summary: Vec<(&str, &str, String, Option<String>, bool)> = found
        .iter()
        .map(|l| {
            (
                l.kind,
                l.confidence,
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
        (peer.state, peer.local.as_str(), peer.remote.as_str()),
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
            limit: 1,
            ..q.clone()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(by_proc.len(), 1, "limit applies");
    c.stop().await;
}

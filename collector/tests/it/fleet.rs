//! A small fleet through a collector restart: 300 real agents (the agent library's
//! fleet, the same code `finwait-bench fleet` plays at 10,000) stream small synthetic
//! tables to the collector, which is stopped and started again on the same address.
//! Every agent must come back and be acknowledged by the new collector, none refused
//! for good, and the ledger must hold every batch of every agent exactly once, with no
//! gap.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use finwait_agent::fleet::{Fleet, FleetConfig};
use finwait_testkit::{Privilege, require_root};

use crate::shedding::agent_config;
use crate::support::{Collector, TestDb};

const AGENTS: usize = 300;

/// Waits (at most `limit`) until `done`, failing with `what` and the fleet's state.
async fn until(fleet: &Fleet, what: &str, limit: Duration, done: impl Fn(&Fleet) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(fleet) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}: {:?}",
            fleet.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_agents_come_back_after_a_collector_restart_with_nothing_lost_or_twice() {
    if require_root("three_hundred_agents_come_back_after_a_collector_restart")
        == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;
    let addr = c.addr;
    let fleet = Fleet::start(FleetConfig {
        // A cycle every 20 s: 15 batches/s, well within what a debug collector on a
        // busy 2-core machine commits, so the restart's herd is what is tested.
        template: agent_config(addr, Duration::from_secs(20)),
        agents: AGENTS,
        sockets: 20,
        churn: 0.1,
        source_addrs: Vec::new(),
        ramp: Duration::from_secs(10),
        name: "ci-fleet".into(),
    })
    .expect("fleet starts");
    let t = Instant::now();
    until(
        &fleet,
        "every agent's first batch acknowledged",
        Duration::from_secs(180),
        |f| {
            f.members()
                .iter()
                .all(|m| m.probe.acks.load(Ordering::Relaxed) > 0)
        },
    )
    .await;
    eprintln!("fleet up in {:?}: {:?}", t.elapsed(), fleet.status());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Restart: the same database, the same address.
    let database = TestDb {
        options: c.database.options.clone(),
        url_file: c.database.url_file.clone(),
    };
    let before: Vec<(u64, u64)> = fleet
        .members()
        .iter()
        .map(|m| {
            (
                m.probe.connects.load(Ordering::Relaxed),
                m.probe.acks.load(Ordering::Relaxed),
            )
        })
        .collect();
    let t = Instant::now();
    c.stop().await;
    let c = Collector::start_listening(database, &addr.to_string(), &[]).await;
    until(
        &fleet,
        "every agent back and acknowledged by the new collector",
        Duration::from_secs(180),
        |f| {
            f.members()
                .iter()
                .zip(&before)
                .all(|(m, (connects, acks))| {
                    m.probe.connected.load(Ordering::Relaxed)
                        && m.probe.connects.load(Ordering::Relaxed) > *connects
                        && m.probe.acks.load(Ordering::Relaxed) > *acks
                })
        },
    )
    .await;
    let s = fleet.status();
    eprintln!(
        "every agent back {:?} after the stop began: {s:?}",
        t.elapsed()
    );
    assert_eq!(s.dropped, 0, "no outbox dropped anything");
    // Quiet: every agent on a live stream with nothing unacknowledged, so stopping
    // drains them all (an agent waiting out a retry delay would keep its batches).
    until(
        &fleet,
        "every agent caught up",
        Duration::from_secs(120),
        |f| {
            f.members()
                .iter()
                .all(|m| m.probe.connected.load(Ordering::Relaxed) && m.outbox().0 == 0)
        },
    )
    .await;
    let left = fleet.stop(Duration::from_secs(20)).await;
    assert_eq!(left, 0, "batches left unacknowledged after draining");

    let db = c.db().await;
    let (hosts, bad, batches): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), \
                count(*) FILTER (WHERE n <> hi - lo + 1 OR lo <> 1 OR epochs <> 1), \
                coalesce(sum(n), 0)::bigint \
         FROM (SELECT b.host_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi, \
                      count(DISTINCT epoch) AS epochs \
               FROM ingest_batches b JOIN hosts h USING (host_id) \
               WHERE h.hostname LIKE 'ci-fleet-%' GROUP BY b.host_id) per_host",
    )
    .fetch_one(&db)
    .await
    .expect("ledger");
    assert_eq!(hosts, AGENTS as i64, "every agent has a ledger");
    assert_eq!(
        bad, 0,
        "a host with a gap, a second epoch or a missing first batch"
    );
    assert!(
        batches >= 2 * AGENTS as i64,
        "{batches} batches in the ledger"
    );
    eprintln!("ledger: {hosts} hosts, {batches} batches, each once, no gap");
    db.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_ended_for_their_age_reconnect_and_lose_nothing() {
    if require_root("streams_ended_for_their_age_reconnect_and_lose_nothing") == Privilege::OptedOut
    {
        return;
    }
    const N: usize = 5;
    let c = Collector::start(&[
        "--keepalive-seconds",
        "1",
        "--max-connection-age-seconds",
        "2",
        "--max-connection-age-grace-seconds",
        "1",
    ])
    .await;
    let fleet = Fleet::start(FleetConfig {
        template: agent_config(c.addr, Duration::from_millis(500)),
        agents: N,
        sockets: 20,
        churn: 0.1,
        source_addrs: Vec::new(),
        ramp: Duration::ZERO,
        name: "aged".into(),
    })
    .expect("fleet starts");
    // Each connection lives about 3 s (age + grace): three connections each at least.
    until(
        &fleet,
        "every agent reconnected twice after its connection aged out",
        Duration::from_secs(90),
        |f| {
            f.members()
                .iter()
                .all(|m| m.probe.connects.load(Ordering::Relaxed) >= 3)
        },
    )
    .await;
    until(
        &fleet,
        "every agent caught up",
        Duration::from_secs(60),
        |f| {
            f.members()
                .iter()
                .all(|m| m.probe.connected.load(Ordering::Relaxed) && m.outbox().0 == 0)
        },
    )
    .await;
    let s = fleet.status();
    let left = fleet.stop(Duration::from_secs(10)).await;
    eprintln!("aged streams: {s:?}; {left} left");
    assert_eq!(left, 0, "batches left unacknowledged after draining");
    assert_eq!(s.pushbacks, 0, "nothing was shed");
    let db = c.db().await;
    let (hosts, bad): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE n <> hi - lo + 1 OR lo <> 1 OR epochs <> 1) \
         FROM (SELECT host_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi, \
                      count(DISTINCT epoch) AS epochs FROM ingest_batches GROUP BY host_id) per_host",
    )
    .fetch_one(&db)
    .await
    .expect("ledger");
    assert_eq!(
        (hosts, bad),
        (N as i64, 0),
        "every batch of every agent once, no gap"
    );
    db.close().await;
    c.stop().await;
}

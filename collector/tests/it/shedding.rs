//! Load shedding with the real collector and real agents (the agent library's fleet:
//! its sampler, outbox and sender, on synthetic tables): the ledger is locked against
//! writes (SHARE mode, so reads still go through), two write slots fill up, and every
//! other agent's batch is shed with UNAVAILABLE and a retry delay. The agents must hear
//! the delay and spread their retries over it; the HTTP API must keep answering from
//! its own pool meanwhile; once the lock goes, every agent's batches land, each once.
//!
//! The assertions are on shapes (who heard a delay, how retries spread relative to the
//! delays given), never on how fast this machine is.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use finwait_agent::config::Config;
use finwait_agent::delta::TimeWaitMode;
use finwait_agent::fleet::{Fleet, FleetConfig};
use finwait_agent::sampler::SamplerConfig;
use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::Collector;

/// A fleet member's configuration against `addr`, sampling every `interval`.
pub fn agent_config(addr: std::net::SocketAddr, interval: Duration) -> Config {
    Config {
        collector: format!("http://{addr}"),
        interval,
        token: None,
        ca: None,
        insecure_loopback: true,
        buffer_bytes: 8 << 20,
        time_wait: TimeWaitMode::Summarise,
        sampler: SamplerConfig::default(),
        identity: pb::HostIdentity {
            boot_id: "boot".into(),
            ephemeral_port_low: 32768,
            ephemeral_port_high: 60999,
            ..Default::default()
        },
        instance_id: String::new(),
        // In-process members keep their batches in memory (no spool).
        spool: None,
        metrics_listen: None,
    }
}

/// `GET path` over HTTP/1.1: the status, or an error.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_database_sheds_agents_with_a_delay_they_spread_over_while_queries_answer() {
    if require_root("a_saturated_database_sheds_agents") == Privilege::OptedOut {
        return;
    }
    const AGENTS: usize = 30;
    const WRITES: usize = 2;
    let c = Collector::start(&[
        "--ingest-writes",
        "2",
        "--ingest-write-wait-ms",
        "100",
        "--ingest-batch-wait-ms",
        "100",
        "--ingest-retry-min-ms",
        "1000",
        "--ingest-retry-max-ms",
        "6000",
        "--maintenance-seconds",
        "3600",
        "--query-timeout-seconds",
        "5",
    ])
    .await;
    let db = c.db().await;
    // Every batch commit inserts into the ledger and now waits on this lock; reads of
    // it (and of everything else) still go through.
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE ingest_batches IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let fleet = Fleet::start(FleetConfig {
        template: agent_config(c.addr, Duration::from_secs(1)),
        agents: AGENTS,
        sockets: 20,
        churn: 0.1,
        source_addrs: Vec::new(),
        ramp: Duration::ZERO,
        name: "shed".into(),
    })
    .expect("fleet starts");

    // While shedding: the API answers every question from its own pool.
    let mut answered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = fleet.status();
        let shed_agents = fleet
            .members()
            .iter()
            .filter(|m| m.probe.pushbacks.load(Ordering::Relaxed) >= 2)
            .count();
        if shed_agents >= AGENTS - WRITES || Instant::now() > deadline {
            eprintln!("shedding: {s:?}; {shed_agents} agents shed twice or more");
            break;
        }
        let status =
            tokio::time::timeout(Duration::from_secs(15), get_status(c.addr, "/api/v1/hosts"))
                .await
                .expect(
                    "a query took longer than 15 s (its timeout is 5 s) while ingest was shedding",
                )
                .expect("query transport");
        answered.push(status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        answered.len() >= 3 && answered.iter().all(|s| *s == 200),
        "queries while shedding: {answered:?}"
    );

    // Who heard a delay, what they were told, how they spread.
    let mut told = Vec::new();
    let mut first_retry_at = Vec::new();
    let mut waits = Vec::new();
    for m in fleet.members() {
        let retries = m.probe.retries();
        if let Some((heard, wait)) = retries.first() {
            first_retry_at.push(*heard + *wait);
            waits.push(*wait);
            told.push(m.probe.last_pushback_ms.load(Ordering::Relaxed));
        }
    }
    assert!(
        told.len() >= AGENTS - WRITES,
        "only {} of {AGENTS} agents heard a retry delay (2 hold the write slots)",
        told.len()
    );
    for t in &told {
        assert!(
            (500..=6000).contains(t),
            "a delay outside [min/2, max]: {t} ms ({told:?})"
        );
    }
    for w in &waits {
        assert!(
            *w >= Duration::from_millis(400) && *w <= Duration::from_millis(7200),
            "an agent's wait is not the delay ±20 %: {w:?}"
        );
    }
    // Spread: no window of a tenth of the median wait holds half the retries (agents
    // told one delay and obeying it to the millisecond would all fall in one).
    waits.sort();
    let window = waits[waits.len() / 2] / 10;
    first_retry_at.sort();
    let most_in_a_window = (0..first_retry_at.len())
        .map(|i| {
            first_retry_at[i..]
                .iter()
                .take_while(|t| **t - first_retry_at[i] <= window)
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "first retries: {} agents, waits {:?}..{:?}, at most {most_in_a_window} within {window:?}",
        waits.len(),
        waits.first(),
        waits.last()
    );
    assert!(
        most_in_a_window * 2 <= first_retry_at.len(),
        "retries bunched: {most_in_a_window} of {} within {window:?}",
        first_retry_at.len()
    );

    // The lock goes: every agent's batches land, none refused for good.
    lock.rollback().await.expect("unlock");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet
        .members()
        .iter()
        .any(|m| m.probe.acks.load(Ordering::Relaxed) < 2)
    {
        assert!(
            Instant::now() < deadline,
            "agents not acknowledged after the lock went: {:?}",
            fleet.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What an agent still holds (one in its retry wait keeps its batches) is not lost;
    // what the ledger holds must be each agent's batches from the first, once each.
    let left = fleet.stop(Duration::from_secs(15)).await;
    eprintln!("after the lock: every agent acknowledged; {left} batches still held at the stop");
    let (hosts, gaps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE n <> hi - lo + 1 OR lo <> 1 OR epochs <> 1) FROM ( \
           SELECT host_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi, count(DISTINCT epoch) AS epochs \
           FROM ingest_batches GROUP BY host_id) per_host",
    )
    .fetch_one(&db)
    .await
    .expect("ledger");
    assert_eq!(
        (hosts, gaps),
        (AGENTS as i64, 0),
        "every host, every batch once, no gap"
    );
    db.close().await;
    c.stop().await;
}

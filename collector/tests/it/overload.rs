//! Reads must not starve ingest: 200 concurrent slow queries (the fleet question,
//! held up by a lock on the table it reads) while an agent streams. Ingest has its own
//! connections and queries a statement timeout, so every batch is acknowledged on the
//! same stream, and every query gets a 503 with Retry-After saying why, never a hang.

use std::time::Duration;

use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{AgentStream, Collector, full, identity, now_ms, sock};

/// `GET path` over HTTP/1.1 (`Connection: close`): status and the whole response.
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_queries_do_not_stop_an_agents_batches_being_acknowledged() {
    if require_root("two_hundred_slow_queries_do_not_stop_an_agents_batches") == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&["--query-timeout-seconds", "2"]).await;
    let db = c.db().await;
    let mut agent = AgentStream::open(c.addr, identity("busy"), 1, "busy-1", None)
        .await
        .expect("hello");
    // Every fleet question now waits on this lock for as long as the test holds it.
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE fleet_minutes IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let addr = c.addr;
    let queries: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(90), get(addr, "/api/v1/fleet")).await
            })
        })
        .collect();
    // Let the queries take whatever connections they can get.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batches = 12u64;
    for seq in 1..=batches {
        let sockets = vec![sock(
            seq,
            pb::TcpState::Established,
            40_000 + seq as u32,
            443,
            Some(7),
        )];
        let answer = tokio::time::timeout(
            Duration::from_secs(60),
            agent.send(full(1, seq, now_ms(), sockets)),
        )
        .await
        .unwrap_or_else(|_| panic!("batch {seq}: no answer in 60 s"))
        .unwrap_or_else(|e| panic!("batch {seq} refused while queries ran: {e}"));
        assert!(
            matches!(&answer, pb::collector_message::Body::Ack(a) if a.seq == seq && !a.duplicate),
            "batch {seq}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for q in queries {
        let (status, text) = q
            .await
            .expect("query task")
            .expect("a query hung for 90 s")
            .expect("query transport");
        *statuses.entry(status).or_default() += 1;
        assert_eq!(status, 503, "a query held by the lock: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("retry-after: 5"),
            "503 without Retry-After: {text}"
        );
        assert!(
            text.contains("statement timeout") || text.contains("too many queries"),
            "503 not saying why: {text}"
        );
    }
    eprintln!("200 slow queries answered: {statuses:?}");
    lock.rollback().await.expect("unlock");
    let (status, text) = get(addr, "/api/v1/fleet").await.expect("fleet");
    assert_eq!(status, 200, "after the lock: {text}");
    let (n, min, max): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), min(seq), max(seq) FROM ingest_batches b JOIN hosts h USING (host_id) \
         WHERE h.hostname = 'busy'",
    )
    .fetch_one(&db)
    .await
    .expect("ledger");
    assert_eq!(
        (n, min, max),
        (batches as i64, 1, batches as i64),
        "every batch once"
    );
    db.close().await;
    c.stop().await;
}

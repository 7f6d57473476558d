//! Issue 11's unlucky and hostile ingest inputs, driven by hand on a real stream:
//! epochs from a clock stepped back or from the future, resync loops, a resend with
//! other content, two streams of one agent instance, an enormous hello, and full
//! tables in chunks.

use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use finwait_testkit::{Privilege, require_root};
use pb::TcpState::{CloseWait, Established, Listen};

use crate::support::{AgentStream, Collector, delta, full, identity, now_ms, sock};

const DAY_MS: i64 = 24 * 3600 * 1000;

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
async fn an_epoch_behind_the_stored_one_is_given_the_next_and_the_host_keeps_reporting() {
    if !root("an_epoch_behind_the_stored_one_is_given_the_next") {
        return;
    }
    let c = Collector::start(&[]).await;
    let db = c.db().await;
    let e1 = now_ms() as u64;
    let mut a = AgentStream::open(c.addr, identity("back"), e1, "run-1", None)
        .await
        .expect("hello");
    assert_eq!(
        a.welcome.epoch, e1,
        "an epoch ahead of the stored one is kept"
    );
    let t = now_ms();
    let b = full(e1, 1, t, vec![sock(1, Listen, 80, 0, Some(10))]);
    assert!(acked(&a.send(b).await.expect("answer"), 1, false));
    drop(a);
    // The agent's clock was stepped back a day; it restarts with an older epoch.
    let behind = e1 - DAY_MS as u64;
    let mut a = open_when_released(&c, identity("back"), behind, "run-2").await;
    assert_eq!(
        a.welcome.epoch,
        e1 + 1,
        "the next epoch after the stored one"
    );
    // A batch still under the agent's own epoch is refused, naming the right one.
    let status = a
        .send(full(behind, 1, t + 1000, vec![]))
        .await
        .expect_err("wrong epoch");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("Welcome.epoch"), "{status:?}");
    let mut a = open_when_released(&c, identity("back"), behind, "run-2").await;
    let e2 = a.welcome.epoch;
    let b = full(
        e2,
        1,
        t + 2000,
        vec![sock(2, Established, 80, 4000, Some(10))],
    );
    assert!(
        acked(&a.send(b).await.expect("answer"), 1, false),
        "the full table is newer, not refused as older"
    );
    let d = delta(
        e2,
        2,
        t + 3000,
        vec![sock(3, Listen, 81, 0, Some(10))],
        vec![],
        vec![],
    );
    assert!(acked(&a.send(d).await.expect("answer"), 2, false));
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        2,
        "the host's table moved on"
    );
    drop(a);

    // A host whose stored epoch is already far in the future (written before this
    // check existed) is not locked out either.
    sqlx::query("UPDATE hosts SET last_epoch = $1")
        .bind(e1 as i64 + 365 * DAY_MS)
        .execute(&db)
        .await
        .expect("future epoch");
    let mut a = open_when_released(&c, identity("back"), e1 + 10, "run-3").await;
    let e3 = a.welcome.epoch;
    assert_eq!(e3, e1 + 365 * DAY_MS as u64 + 1);
    assert!(acked(
        &a.send(full(e3, 1, now_ms(), vec![])).await.expect("answer"),
        1,
        false
    ));
    drop(a);
    // That epoch is far ahead of the clock, but the collector handed it out: the
    // agent reconnecting with it is not refused as a clock from the future.
    let a = open_when_released(&c, identity("back"), e3, "run-3").await;
    assert_eq!(a.welcome.epoch, e3);
    c.stop().await;
}

/// Opens a stream once the previous one's lease was released (its task ends after the
/// client's stream closes).
async fn open_when_released(
    c: &Collector,
    host: pb::HostIdentity,
    epoch: u64,
    instance: &str,
) -> AgentStream {
    for _ in 0..50 {
        match AgentStream::open(c.addr, host.clone(), epoch, instance, None).await {
            Ok(a) => return a,
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(s) => panic!("hello refused: {s:?}"),
        }
    }
    panic!("the previous stream's lease was never released");
}

#[tokio::test]
async fn clocks_ahead_of_the_collector_are_refused_past_the_tolerance() {
    if !root("clocks_ahead_of_the_collector_are_refused_past_the_tolerance") {
        return;
    }
    let c = Collector::start(&["--max-clock-ahead-seconds", "60"]).await;
    let status = AgentStream::open(
        c.addr,
        identity("ahead"),
        (now_ms() + DAY_MS) as u64,
        "i",
        None,
    )
    .await
    .err()
    .expect("an epoch a day ahead is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("ahead of the collector's clock"),
        "{status:?}"
    );
    let db = c.db().await;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts")
        .fetch_one(&db)
        .await
        .expect("hosts");
    assert_eq!(hosts, 0, "a refused hello registers nothing");
    let e = now_ms() as u64;
    let mut a = AgentStream::open(c.addr, identity("ahead"), e, "i", None)
        .await
        .expect("a sane epoch");
    // Within the tolerance: accepted.
    assert!(acked(
        &a.send(full(e, 1, now_ms() + 30_000, vec![]))
            .await
            .expect("answer"),
        1,
        false
    ));
    // Ten minutes ahead (a day used to be accepted): refused, and the host's last
    // report stays where it was.
    let status = a
        .send(full(e, 2, now_ms() + 600_000, vec![]))
        .await
        .expect_err("ten minutes ahead");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("batch.taken_at_ms"), "{status:?}");
    // A hello from a clock far ahead claiming the known host changes nothing of it.
    let mut evil = identity("ahead");
    evil.boot_id = "boot-evil".into();
    let status = AgentStream::open(c.addr, evil, (now_ms() + DAY_MS) as u64, "j", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let boot: String = sqlx::query_scalar("SELECT boot_id FROM hosts")
        .fetch_one(&db)
        .await
        .expect("boot id");
    assert_eq!(boot, "boot-1");
    let ahead: bool =
        sqlx::query_scalar("SELECT last_report > now() + interval '1 minute' FROM hosts")
            .fetch_one(&db)
            .await
            .expect("last report");
    assert!(!ahead, "last_report is not in the future");
    c.stop().await;
}

#[tokio::test]
async fn a_stream_that_keeps_needing_resyncs_is_ended_not_spun() {
    if !root("a_stream_that_keeps_needing_resyncs_is_ended_not_spun") {
        return;
    }
    let c = Collector::start(&[]).await;
    let e = now_ms() as u64;
    let t = now_ms();
    let mut a = AgentStream::open(c.addr, identity("spin"), e, "i", None)
        .await
        .expect("hello");
    for seq in [1, 50] {
        assert!(acked(
            &a.send(full(e, seq, t, vec![])).await.expect("answer"),
            seq,
            false
        ));
    }
    // A misbehaving agent keeps sending a full table the collector cannot take (older
    // than what is committed). It gets a few Resyncs, then the stream ends.
    let mut resyncs = 0;
    let end = loop {
        match a
            .send(full(e, 2 + resyncs, t, vec![sock(9, Listen, 1, 0, None)]))
            .await
        {
            Ok(Body::Resync(_)) => resyncs += 1,
            Ok(other) => panic!("expected a resync, got {other:?}"),
            Err(status) => break status,
        }
        assert!(resyncs <= 100, "the stream spins");
    };
    assert_eq!(end.code(), tonic::Code::FailedPrecondition, "{end:?}");
    assert!(end.message().contains("resyncs in a row"), "{end:?}");
    assert_eq!(resyncs, 8);
    c.stop().await;
}

#[tokio::test]
async fn a_resend_with_other_content_under_a_committed_sequence_number_is_refused() {
    if !root("a_resend_with_other_content_is_refused") {
        return;
    }
    let c = Collector::start(&[]).await;
    let e = now_ms() as u64;
    let t = now_ms();
    let mut a = AgentStream::open(c.addr, identity("digest"), e, "i", None)
        .await
        .expect("hello");
    let b1 = full(e, 1, t, vec![sock(1, Listen, 80, 0, Some(10))]);
    assert!(acked(&a.send(b1.clone()).await.expect("answer"), 1, false));
    // The same batch again: a duplicate, acknowledged.
    assert!(acked(&a.send(b1).await.expect("answer"), 1, true));
    // Other content under the same (epoch, seq): refused, not silently dropped.
    let other = full(e, 1, t, vec![sock(2, Established, 80, 5, Some(10))]);
    let status = a.send(other).await.expect_err("other content");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("other content"), "{status:?}");
    let db = c.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM current_sockets WHERE sock_key = 1"
        )
        .await,
        1,
        "the committed table stands"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_new_stream_of_the_same_instance_takes_over_and_the_old_one_ends() {
    if !root("a_new_stream_of_the_same_instance_takes_over") {
        return;
    }
    let c = Collector::start(&[]).await;
    let e = now_ms() as u64;
    let t = now_ms();
    let mut old = AgentStream::open(c.addr, identity("twice"), e, "same", None)
        .await
        .expect("first stream");
    assert!(acked(
        &old.send(full(e, 1, t, vec![])).await.expect("answer"),
        1,
        false
    ));
    // The agent reconnects (its old connection looked dead): not locked out.
    let mut new = AgentStream::open(c.addr, identity("twice"), e, "same", None)
        .await
        .expect("the same instance reconnects at once");
    assert_eq!(new.welcome.last_seq, 1);
    // The old stream is not a second writer any more.
    let status = old
        .send(full(e, 2, t + 1000, vec![]))
        .await
        .expect_err("old stream refused");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    drop(old);
    assert!(acked(
        &new.send(full(e, 2, t + 1000, vec![]))
            .await
            .expect("answer"),
        2,
        false
    ));
    // The old stream's end did not release the new stream's lease: another instance
    // is still refused.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = AgentStream::open(c.addr, identity("twice"), e, "other", None)
        .await
        .err()
        .expect("the new stream holds the lease");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    let db = c.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 2);
    c.stop().await;
}

#[tokio::test]
async fn a_hello_with_a_hundred_thousand_labels_is_refused_by_size_before_decoding() {
    if !root("a_hello_with_a_hundred_thousand_labels_is_refused") {
        return;
    }
    let c = Collector::start(&[]).await;
    let mut host = identity("labels");
    host.labels = (0..100_000)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let status = AgentStream::open(c.addr, host, now_ms() as u64, "i", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Refused by its size, not after counting decoded labels.
    assert!(status.message().contains("at most 65536"), "{status:?}");
    c.stop().await;
}

/// A full table of `n` sockets (cookies from `first`), in chunks of `per`.
fn chunked(epoch: u64, seq: u64, t: i64, first: u64, n: u64, per: usize) -> Vec<pb::Batch> {
    let sockets: Vec<pb::Socket> = (first..first + n)
        .map(|i| sock(i, Established, 80, (i % 60_000) as u32 + 1, Some(10)))
        .collect();
    let table = full(epoch, seq, t, sockets);
    let mut parts = Vec::new();
    let all = match table.payload.clone() {
        Some(pb::batch::Payload::Full(f)) => f.sockets,
        _ => unreachable!("a full table"),
    };
    let count = all.len().div_ceil(per);
    for (i, part) in all.chunks(per).enumerate() {
        let mut b = if i == 0 {
            table.clone()
        } else {
            pb::Batch {
                epoch,
                seq,
                taken_at_ms: t,
                processes: table.processes.clone(),
                ..Default::default()
            }
        };
        b.payload = Some(pb::batch::Payload::Full(pb::FullTable {
            sockets: part.to_vec(),
        }));
        b.chunk = i as u32;
        b.more_chunks = i + 1 < count;
        parts.push(b);
    }
    parts
}

async fn send_parts(a: &mut AgentStream, parts: Vec<pb::Batch>) -> Result<Body, tonic::Status> {
    let n = parts.len();
    for (i, p) in parts.into_iter().enumerate() {
        if i + 1 < n {
            a.push(p).await;
        } else {
            return a.send(p).await;
        }
    }
    unreachable!("at least one part")
}

#[tokio::test]
async fn a_full_table_in_chunks_is_one_batch_committed_whole_or_not_at_all() {
    if !root("a_full_table_in_chunks_is_one_batch") {
        return;
    }
    let c = Collector::start(&[]).await;
    let db = c.db().await;
    let e = now_ms() as u64;
    let t = now_ms() - 10_000;
    let mut a = AgentStream::open(c.addr, identity("chunks"), e, "i", None)
        .await
        .expect("hello");
    // 1: a table of 2,500 sockets in three chunks.
    let first = chunked(e, 1, t, 1, 2_500, 1_000);
    assert_eq!(first.len(), 3);
    let body = send_parts(&mut a, first.clone()).await.expect("answer");
    assert!(
        acked(&body, 1, false),
        "one ack after the last chunk: {body:?}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        2_500
    );
    assert_eq!(
        count(&db, "SELECT sum(sockets)::bigint FROM ingest_batches").await,
        2_500,
        "one ledger row for the whole table"
    );
    // The same chunks again: one duplicate ack, nothing written.
    let body = send_parts(&mut a, first).await.expect("answer");
    assert!(acked(&body, 1, true), "{body:?}");
    // 2: the next table (sockets 1001..=3000) starts, and the stream breaks after its
    // first chunk: none of it is stored.
    let second = chunked(e, 2, t + 1000, 1_001, 2_000, 1_000);
    a.push(second[0].clone()).await;
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        2_500
    );
    // Sent whole on a new stream: the sockets it does not list (1..=1000) end, even
    // though no single chunk saw all of them.
    let mut a = open_when_released(&c, identity("chunks"), e, "i").await;
    let body = send_parts(&mut a, second).await.expect("answer");
    assert!(acked(&body, 2, false), "{body:?}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        2_000
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM socket_lifetimes WHERE end_reason = 1"
        )
        .await,
        1_000
    );
    // A chunk out of order is refused naming the field.
    let mut bad = chunked(e, 3, t + 2000, 1, 20, 10);
    bad[1].chunk = 5;
    let status = send_parts(&mut a, bad).await.expect_err("out of order");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("batch.chunk"), "{status:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 2);
    c.stop().await;
}

/// The state stored for socket `cookie` of the only host.
async fn state_of(db: &sqlx::PgPool, cookie: u64) -> Vec<i16> {
    sqlx::query_scalar("SELECT state FROM current_sockets WHERE cookie = $1")
        .bind(cookie as i64)
        .fetch_all(db)
        .await
        .expect("query")
}

#[tokio::test]
async fn a_socket_listed_twice_in_a_chunked_table_is_stored_once_as_last_listed() {
    if !root("a_socket_listed_twice_in_a_chunked_table") {
        return;
    }
    let c = Collector::start(&[]).await;
    let db = c.db().await;
    let e = now_ms() as u64;
    let t = now_ms() - 10_000;
    let mut a = AgentStream::open(c.addr, identity("twice"), e, "i", None)
        .await
        .expect("hello");
    // A broken agent lists socket 5 in the first chunk ESTABLISHED and again in the
    // last one CLOSE_WAIT: the host has nothing open yet (the plain-insert path).
    let mut parts = chunked(e, 1, t, 1, 30, 10);
    let again = |p: &mut pb::Batch, cookie: u64, state: pb::TcpState| {
        if let Some(pb::batch::Payload::Full(f)) = &mut p.payload {
            f.sockets.push(sock(
                cookie,
                state,
                80,
                (cookie % 60_000) as u32 + 1,
                Some(10),
            ));
        }
    };
    again(&mut parts[2], 5, CloseWait);
    let body = send_parts(&mut a, parts).await.expect("answer");
    assert!(acked(&body, 1, false), "{body:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM current_sockets").await, 30);
    assert_eq!(state_of(&db, 5).await, vec![CloseWait as i16]);
    // The next table (the merge path, with lifetimes open) lists socket 15 twice the
    // other way round, CLOSE_WAIT in the first chunk and ESTABLISHED in the second: the
    // last listing stands there too, and socket 5 back to ESTABLISHED ends its
    // CLOSE_WAIT lifetime.
    let mut parts = chunked(e, 2, t + 1_000, 1, 30, 10);
    again(&mut parts[0], 15, CloseWait);
    let body = send_parts(&mut a, parts).await.expect("answer");
    assert!(acked(&body, 2, false), "{body:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM current_sockets").await, 30);
    assert_eq!(state_of(&db, 15).await, vec![Established as i16]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM socket_lifetimes WHERE cookie = 15"
        )
        .await,
        0,
        "a socket listed twice in one table opens one lifetime"
    );
    assert_eq!(state_of(&db, 5).await, vec![Established as i16]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM socket_lifetimes WHERE cookie = 5 AND end_reason = 2"
        )
        .await,
        1
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_larger_together_than_the_memory_budget_wait_their_turn_and_all_land() {
    if !root("tables_larger_together_than_the_memory_budget_wait_their_turn") {
        return;
    }
    // A budget of 2.5 MiB holds one 64 KiB message at a time (40 x its size), and two
    // database connections one open chunked table: six hosts sending chunked tables at
    // once must take turns, none stalled on a connection, none refused, none lost.
    let c = Collector::start(&[
        "--max-message-bytes",
        "65536",
        "--ingest-memory-bytes",
        "2621440",
        "--db-connections",
        "2",
        // Waiting for the one write slot is the point here, not shedding.
        "--ingest-write-wait-ms",
        "120000",
        "--ingest-batch-wait-ms",
        "120000",
    ])
    .await;
    let e = now_ms() as u64;
    let t = now_ms();
    let tasks: Vec<_> = (0..6u64)
        .map(|h| {
            let addr = c.addr;
            tokio::spawn(async move {
                let name = format!("budget-{h}");
                let mut a = AgentStream::open(addr, identity(&name), e, &name, None)
                    .await
                    .expect("hello");
                // Chunks of about 48 KiB: each reserves about 1.9 MiB, one at a time.
                let parts = chunked(e, 1, t, h * 10_000 + 1, 2_400, 1_200);
                let body = send_parts(&mut a, parts).await.expect("answer");
                assert!(acked(&body, 1, false), "{name}: {body:?}");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("stream task");
    }
    let db = c.db().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM current_sockets").await,
        6 * 2_400
    );
    assert_eq!(count(&db, "SELECT count(*) FROM ingest_batches").await, 6);
    c.stop().await;
}

//! Faults with the real binaries (issue 11), each reconciled against the ingest
//! ledger (one epoch per agent run, every sequence number committed exactly once: lost
//! 0, duplicated 0) and the stored table checked against `ss` in the agent's
//! namespace afterwards:
//! - the collector dying between a commit and its ack (a failpoint that exists only in
//!   debug builds),
//! - the agent's namespace cut off from the collector for a minute,
//! - the agent's clock stepped back a day between two runs (faketime).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use finwait_testkit::{Lan, NetNs, Privilege, require_root, workspace_bin};

use crate::e2e::{
    ENDED_CLOSE_WAIT, OPEN_CLOSE_WAIT, Proc, current_matches_ss, embedded_url, recovered, scratch,
    spawn_announced, start_agent, start_collector, start_population, wait_for,
};
use crate::support::{TestDb, certificates};

/// Starts `cmd` (a collector), returning it and the address it printed.
fn spawn_collector(cmd: Command, data: &Path) -> (Proc, String) {
    let (c, line) = spawn_announced(cmd, &data.join("collector.log"));
    assert!(
        line.contains("listening on"),
        "collector did not start: {line:?} (see {}/collector.log)",
        data.display()
    );
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    (c, addr)
}

#[tokio::test]
async fn a_collector_dying_between_commit_and_ack_loses_and_duplicates_nothing() {
    if require_root("a_collector_dying_between_commit_and_ack") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("cmtack").expect("namespace");
    let data = scratch("cmtack");
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_finwait-collector"));
    cmd.args([
        "--insecure-loopback",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(&data)
    .env("FINWAIT_FAILPOINT_ABORT_AFTER_COMMITS", "5");
    let (mut collector, addr) = spawn_collector(cmd, &data);
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.3");
    // Batch 5 is committed, then the collector aborts before acknowledging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = collector.0.try_wait().expect("collector status") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the failpoint never fired (see {}/collector.log)",
            data.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted by the failpoint: {status:?}"
    );
    let url = embedded_url(&data);
    {
        // Its PostgreSQL outlives it: the fifth batch is there, unacknowledged.
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_batches")
            .fetch_one(&db)
            .await
            .expect("ledger");
        assert_eq!(n, 5, "committed up to the failpoint");
        db.close().await;
    }
    // While the collector is down, the CLOSE_WAIT ends.
    pop.end();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (collector, _) = start_collector(&ns, &data, &addr, &[]);
    let db = sqlx::PgPool::connect(&embedded_url(&data))
        .await
        .expect("connect after restart");
    recovered(&db, &ns, pop_pid).await;
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ingest_batches WHERE epoch = (SELECT min(epoch) FROM ingest_batches) AND seq = 5",
    )
    .fetch_one(&db)
    .await
    .expect("seq 5");
    assert_eq!(dup, 1, "the unacknowledged batch is stored once");
    db.close().await;
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn an_agent_cut_off_for_a_minute_loses_and_duplicates_nothing() {
    if require_root("an_agent_cut_off_for_a_minute") == Privilege::OptedOut {
        return;
    }
    // The collector on host 0 (TLS and a token: it listens off loopback), the agent and
    // its sockets on host 1.
    let lan = Lan::create("part", 2).expect("LAN");
    let (server, host) = (lan.host(0), lan.host(1));
    let data = scratch("part");
    let ip = Lan::v4(0).to_string();
    let (ca, cert, key) = certificates(&ip);
    let file = |name: &str, body: &str| {
        let p = data.join(name);
        std::fs::write(&p, body).expect("write");
        p
    };
    let (ca, cert, key) = (
        file("ca.pem", &ca),
        file("cert.pem", &cert),
        file("key.pem", &key),
    );
    let tokens = file("tokens", "partition-token\n");
    let token = file("token", "partition-token\n");
    let database = TestDb::create();
    let mut cmd = server.command(env!("CARGO_BIN_EXE_finwait-collector"));
    cmd.args(["--listen", &format!("{ip}:0"), "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tokens-file")
        .arg(&tokens)
        .args(["--database-url-file", database.url_file_arg()]);
    let (collector, addr) = spawn_collector(cmd, &data);
    let (pop, pop_pid) = start_population(host);
    let agent = Proc(
        host.command(workspace_bin("finwait-agent").expect("agent binary"))
            .args([
                "run",
                "--interval",
                "0.5",
                "--hostname",
                "e2e",
                "--machine-id",
                "e2e-machine",
            ])
            .args(["--collector", &format!("https://{addr}")])
            .arg("--ca-file")
            .arg(&ca)
            .arg("--token-file")
            .arg(&token)
            .arg("--spool-dir")
            .arg(data.join("agent-spool"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.join("agent.log")).expect("agent log"))
            .spawn()
            .expect("start agent"),
    );
    let db = database.pool().await;
    wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
    // The partition: the agent's link goes down for a minute. The CLOSE_WAIT ends in
    // the middle of it.
    let link = |state: &str| {
        let ok = Command::new("ip")
            .args(["-n", host.name(), "link", "set", "eth0", state])
            .status()
            .expect("ip link");
        assert!(ok.success(), "ip link set eth0 {state}");
    };
    link("down");
    tokio::time::sleep(Duration::from_secs(30)).await;
    pop.end();
    tokio::time::sleep(Duration::from_secs(30)).await;
    link("up");
    recovered(&db, host, pop_pid).await;
    db.close().await;
    drop(agent);
    drop(collector);
    drop(lan);
    let _ = std::fs::remove_dir_all(&data);
}

/// libfaketime, from Debian's `faketime` package.
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime.so.1 under /usr/lib/*/faketime (apt-get install faketime)")
}

/// The agent with libfaketime preloaded, its wall clock `offset` (e.g. `-1d`) from the
/// real one. Preloaded rather than run under the `faketime` wrapper, so the child is
/// the agent itself and SIGTERM reaches it.
fn start_agent_at(ns: &NetNs, addr: &str, data: &Path, offset: &str) -> Proc {
    Proc(
        ns.command(workspace_bin("finwait-agent").expect("agent binary"))
            .args(["run", "--insecure-loopback", "--interval", "0.3"])
            .args(["--hostname", "e2e", "--machine-id", "e2e-machine"])
            .args(["--collector", &format!("http://{addr}")])
            .arg("--spool-dir")
            .arg(data.join("agent-spool-2"))
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", offset)
            // Only the wall clock moves; timers and sleeps keep real time.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.join("agent-2.log")).expect("agent log"))
            .spawn()
            .expect("start agent"),
    )
}

#[tokio::test]
async fn an_agent_whose_clock_went_back_a_day_between_runs_keeps_reporting() {
    if require_root("an_agent_whose_clock_went_back_a_day") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("clock").expect("namespace");
    let data = scratch("clock");
    let database = TestDb::create();
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &["--database-url-file", database.url_file_arg()],
    );
    let db = database.pool().await;
    let mut first = start_agent(&ns, &addr, &data, "0.3");
    wait_for(
        &db,
        "three batches of the first run",
        crate::e2e::BATCHES_AT_LEAST,
        3,
    )
    .await;
    first.signal("-TERM");
    assert!(
        first.0.try_wait().expect("status").is_some(),
        "first run ended"
    );
    let (e1, n1): (i64, i64) = sqlx::query_as("SELECT max(epoch), count(*) FROM ingest_batches")
        .fetch_one(&db)
        .await
        .expect("first run");
    // The second run starts a day in the past: its own epoch is behind the stored one.
    let (pop, pop_pid) = start_population(&ns);
    let second = start_agent_at(&ns, &addr, &data, "-1d");
    wait_for(&db, "the second run's CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
    pop.end();
    wait_for(&db, "the CLOSE_WAIT ended", ENDED_CLOSE_WAIT, pop_pid).await;
    // One epoch per run; the second is the collector's (the next after the first);
    // every sequence number of each run committed exactly once.
    let runs: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT epoch, min(seq), max(seq), count(*) FROM ingest_batches GROUP BY epoch ORDER BY epoch",
    )
    .fetch_all(&db)
    .await
    .expect("ledger");
    assert_eq!(runs.len(), 2, "one epoch per run: {runs:?}");
    assert_eq!(runs[0], (e1, 1, n1, n1), "first run intact: {runs:?}");
    let (e2, min, max, n) = runs[1];
    assert_eq!(e2, e1 + 1, "the second run got the next epoch: {runs:?}");
    assert_eq!(
        (min, n),
        (1, max),
        "second run: 1..={max} exactly once: {runs:?}"
    );
    current_matches_ss(&db, &ns).await;
    db.close().await;
    drop(second);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_host_with_thirty_thousand_sockets_sends_its_full_table_in_chunks() {
    if require_root("a_host_with_thirty_thousand_sockets_sends_its_full_table_in_chunks")
        == Privilege::OptedOut
    {
        return;
    }
    let ns = NetNs::create("chunks").expect("namespace");
    let data = scratch("chunks");
    let database = TestDb::create();
    // 2 MiB: the table in one message (about 3.4 MB) would be refused; its chunks of
    // 10,000 sockets (about 1.2 MB) fit.
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &[
            "--database-url-file",
            database.url_file_arg(),
            "--max-message-bytes",
            "2097152",
        ],
    );
    let pop = finwait_testkit::Sockpop::start(Some(&ns), &["bulk", "--sockets", "30000"])
        .expect("population");
    let agent = start_agent(&ns, &addr, &data, "1");
    let db = database.pool().await;
    wait_for(
        &db,
        "a full table of more than 20,000 sockets committed as one batch",
        "SELECT count(*) FROM ingest_batches WHERE full_table AND sockets > $1",
        20_000,
    )
    .await;
    current_matches_ss(&db, &ns).await;
    crate::e2e::ledger_is_contiguous(&db).await;
    db.close().await;
    drop(agent);
    drop(pop);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

//! The agent's disk spool with the real binaries (issue 12): a collector outage longer
//! than the agent's memory buffer, during which the agent is killed with SIGKILL and
//! restarted twice, loses and duplicates nothing, and what happened on the host during
//! the outage, while an agent was running, is in the stored history afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use finwait_testkit::{NetNs, Privilege, Sockpop, require_root, workspace_bin};

use crate::e2e::{
    ENDED_CLOSE_WAIT, Proc, current_matches_ss, embedded_url, scratch, start_collector,
    start_population, wait_for,
};

/// The agent with a 1 MiB memory buffer (the smallest) and its spool in `spool`,
/// logging each queued batch (debug) to `log`.
fn start_agent(ns: &NetNs, addr: &str, spool: &Path, log: &Path) -> Proc {
    Proc(
        ns.command(workspace_bin("finwait-agent").expect("agent binary"))
            .args(["run", "--insecure-loopback", "--interval", "0.5"])
            .args(["--hostname", "e2e", "--machine-id", "e2e-machine"])
            .args(["--collector", &format!("http://{addr}")])
            .args(["--buffer-mib", "1", "--spool-dir"])
            .arg(spool)
            .env("RUST_LOG", "info,finwait_agent::run=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("agent log"))
            .spawn()
            .expect("start agent"),
    )
}

/// The run's epoch and the sequence numbers it queued (each spooled before it is
/// logged), from its log.
fn queued(log: &Path) -> (i64, BTreeSet<i64>) {
    let text = std::fs::read_to_string(log).expect("agent log");
    let field = |line: &str, name: &str| -> Option<i64> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let epoch = text
        .lines()
        .filter(|l| l.contains("agent running"))
        .find_map(|l| field(l, "epoch"))
        .unwrap_or_else(|| panic!("no epoch in {}", log.display()));
    let seqs = text
        .lines()
        .filter_map(|l| l.split_once("batch queued").map(|(_, rest)| rest))
        .filter_map(|rest| field(rest, "seq"))
        .collect();
    (epoch, seqs)
}

fn spool_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .expect("spool dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A CLOSE_WAIT that lives and ends while the agent samples: returns its holder's pid.
async fn a_connection_that_opens_and_closes(ns: &NetNs) -> i64 {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (pop, pid) = start_population(ns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pop.end();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pid
}

#[tokio::test]
async fn an_agent_killed_twice_during_a_long_outage_loses_and_duplicates_nothing() {
    if require_root("an_agent_killed_twice_during_a_long_outage") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("spool").expect("namespace");
    let data = scratch("spool");
    let spool = data.join("agent-spool");
    // A short lease: the restarted agent is a new instance, and the host's lease from
    // before the outage must have lapsed when the collector is back.
    let lease = ["--lease-seconds", "5"];
    let (mut collector, addr) = start_collector(&ns, &data, "127.0.0.1:0", &lease);
    // 12,000 sockets: each run's first full table (~1.4 MB) alone is more than the
    // agent's 1 MiB memory buffer.
    let bulk = Sockpop::start(Some(&ns), &["bulk", "--sockets", "12000"]).expect("bulk");
    let logs: Vec<_> = (1..=3)
        .map(|i| data.join(format!("agent-{i}.log")))
        .collect();
    let mut agent = start_agent(&ns, &addr, &spool, &logs[0]);
    {
        let db = sqlx::PgPool::connect(&embedded_url(&data))
            .await
            .expect("connect");
        wait_for(&db, "three batches", crate::e2e::BATCHES_AT_LEAST, 3).await;
        db.close().await;
    }
    collector.signal("-KILL");
    let outage_began = Utc::now();
    // Three agents in turn during the outage, the first two killed mid-run: each sees
    // a connection open and close.
    let mut pids = vec![a_connection_that_opens_and_closes(&ns).await];
    for log in &logs[1..] {
        agent.signal("-KILL");
        agent = start_agent(&ns, &addr, &spool, log);
        pids.push(a_connection_that_opens_and_closes(&ns).await);
    }
    let spooled = spool_bytes(&spool);
    assert!(
        spooled > 1024 * 1024,
        "the spool holds more than the memory buffer: {spooled} bytes"
    );
    let outage_ended = Utc::now();
    let (collector, _) = start_collector(&ns, &data, &addr, &lease);
    let db = sqlx::PgPool::connect(&embedded_url(&data))
        .await
        .expect("connect after restart");
    for &pid in &pids {
        wait_for(
            &db,
            "a CLOSE_WAIT that ended during the outage",
            ENDED_CLOSE_WAIT,
            pid,
        )
        .await;
    }
    let runs: Vec<(i64, BTreeSet<i64>)> = logs.iter().map(|l| queued(l)).collect();
    // The third agent is still running: wait until its stream has caught up with
    // what it had queued when its log was read.
    wait_for(
        &db,
        "the third run to catch up",
        "SELECT count(*) FROM ingest_batches \
         WHERE epoch = (SELECT max(epoch) FROM ingest_batches) AND seq >= $1",
        runs[2].1.last().copied().unwrap_or(1),
    )
    .await;
    let ledger: BTreeMap<i64, (i64, i64, i64)> = sqlx::query_as::<_, (i64, i64, i64, i64)>(
        "SELECT epoch, min(seq), max(seq), count(*) FROM ingest_batches GROUP BY epoch",
    )
    .fetch_all(&db)
    .await
    .expect("ledger")
    .into_iter()
    .map(|(e, min, max, n)| (e, (min, max, n)))
    .collect();
    let epochs: BTreeSet<i64> = runs.iter().map(|r| r.0).collect();
    assert_eq!(
        ledger.keys().copied().collect::<BTreeSet<_>>(),
        epochs,
        "one epoch per agent run, each its own: {ledger:?}"
    );
    for (i, (epoch, seqs)) in runs.iter().enumerate() {
        let (min, max, n) = ledger[epoch];
        assert_eq!((min, n), (1, max), "run {}: 1..={max} exactly once", i + 1);
        let last = seqs.last().copied().unwrap_or(0);
        assert!(
            max >= last,
            "run {}: queued up to {last}, stored up to {max}: the spool lost its tail",
            i + 1
        );
    }
    let dropped: Option<i64> =
        sqlx::query_scalar("SELECT max((account->>'batches_dropped')::bigint) FROM ingest_batches")
            .fetch_one(&db)
            .await
            .expect("accounts");
    assert_eq!(dropped, Some(0), "no agent dropped a batch");
    // The connections of the outage are in the history, at the times they happened.
    for (i, &pid) in pids.iter().enumerate() {
        let (first, last): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "SELECT min(first_seen), max(last_seen) FROM socket_lifetimes \
             WHERE state = 8 AND owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint))",
        )
        .bind(pid)
        .fetch_one(&db)
        .await
        .expect("lifetime");
        assert!(
            outage_began < first && last < outage_ended,
            "run {}: CLOSE_WAIT from {first} to {last}, outage {outage_began} to {outage_ended}",
            i + 1
        );
    }
    for log in &logs[1..] {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(
            text.contains("spooled batches of earlier runs will be sent first"),
            "{} found its predecessors' batches",
            log.display()
        );
    }
    current_matches_ss(&db, &ns).await;
    db.close().await;
    drop(agent);
    drop(bulk);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

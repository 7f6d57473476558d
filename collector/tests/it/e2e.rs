//! End to end with the real binaries: `finwait-collector` and `finwait-agent run`,
//! inside a private network namespace where real sockets are made by
//! `finwait-sockpop`; and the faults the ingest path must survive, counted against the
//! ledger of committed batches: the collector killed with SIGKILL mid-stream, and
//! PostgreSQL stopped and restarted while the agent streams. The fault tests run their
//! own PostgreSQL (the collector's embedded one, or a private cluster); the first test
//! uses a database in the shared cluster.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use finwait_collector::postgres::{EmbeddedOptions, EmbeddedPostgres};
use finwait_testkit::{NetNs, Privilege, Sockpop, require_root, workspace_bin};

use crate::support::{TestDb, private_cluster};

/// A child process stopped with SIGTERM (then waited for) on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    pub(crate) fn signal(&mut self, sig: &str) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

impl From<Child> for Proc {
    fn from(c: Child) -> Proc {
        Proc(c)
    }
}

impl Drop for Proc {
    /// Ends the process: its stdin closed (a population ends at EOF), then SIGTERM.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        self.signal("-TERM");
    }
}

/// Starts `cmd` with its stderr in `log` and returns it with the first line it prints
/// (a collector's or an agent's `… listening on ADDR`).
pub(crate) fn spawn_announced(mut cmd: Command, log: &Path) -> (Proc, String) {
    let mut c = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start the process");
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the first line it prints");
    (Proc(c), line)
}

pub(crate) fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub(crate) fn embedded_url(data: &Path) -> String {
    let pid = std::fs::read_to_string(data.join("postgres/pgdata/postmaster.pid"))
        .expect("postmaster.pid");
    let port = pid.lines().nth(3).expect("port line").trim().to_owned();
    format!(
        "postgres://finwait@localhost:{port}/finwait?host={}",
        data.join("postgres/run").display()
    )
}

/// Starts the collector binary in `ns`; returns it and the address it printed.
pub(crate) fn start_collector(
    ns: &NetNs,
    data: &Path,
    listen: &str,
    extra: &[&str],
) -> (Proc, String) {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_finwait-collector"));
    cmd.args(["--insecure-loopback", "--listen", listen, "--data-dir"])
        .arg(data)
        .args(extra);
    let (c, line) = spawn_announced(cmd, &data.join("collector.log"));
    assert!(
        line.contains("listening on"),
        "collector did not start: {line:?} (see {}/collector.log)",
        data.display()
    );
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    (c, addr)
}

pub(crate) fn start_agent(ns: &NetNs, addr: &str, data: &Path, interval: &str) -> Proc {
    Proc(
        ns.command(workspace_bin("finwait-agent").expect("agent binary"))
            .args([
                "run",
                "--insecure-loopback",
                "--interval",
                interval,
                "--hostname",
                "e2e",
                "--machine-id",
                "e2e-machine",
            ])
            .args(["--collector", &format!("http://{addr}")])
            // Each test's agent owns a spool of its own (the default is one per host).
            .arg("--spool-dir")
            .arg(data.join("agent-spool"))
            .stdout(Stdio::null())
            // Kept for a failing run to be read; removed with the data directory.
            .stderr(std::fs::File::create(data.join("agent.log")).expect("agent log"))
            .spawn()
            .expect("start agent"),
    )
}

/// A socket population (CLOSE_WAIT held by its process) with loopback kept up.
pub(crate) fn start_population(ns: &NetNs) -> (Sockpop, i64) {
    let pop =
        Sockpop::start(Some(ns), &["states", "--no-last-ack", "127.0.0.1"]).expect("population");
    let pid = i64::from(pop.pid());
    (pop, pid)
}

pub(crate) async fn wait_for(db: &sqlx::PgPool, what: &str, sql: &'static str, arg: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Ok(n) = sqlx::query_scalar::<_, i64>(sql)
            .bind(arg)
            .fetch_one(db)
            .await
            && n > 0
        {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (see the logs in the test's data directory)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) const OPEN_CLOSE_WAIT: &str = "SELECT count(*) FROM current_sockets c JOIN hosts h USING (host_id) \
    WHERE h.hostname = 'e2e' AND c.state = 8 \
    AND c.owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint, 'comm', 'finwait-sockpop'))";
pub(crate) const ENDED_CLOSE_WAIT: &str = "SELECT count(*) FROM socket_lifetimes WHERE state = 8 AND end_reason = 1 \
    AND owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint)) \
    AND NOT EXISTS (SELECT 1 FROM current_sockets WHERE state = 8 \
                    AND owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint)))";
pub(crate) const BATCHES_AT_LEAST: &str =
    "SELECT (count(*) >= $1)::int::bigint FROM ingest_batches";

/// Nothing lost, nothing duplicated: one epoch, sequence numbers 1..=n all committed
/// once (the ledger's primary key forbids duplicates; a gap would be a loss).
pub(crate) async fn ledger_is_contiguous(db: &sqlx::PgPool) {
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT epoch, min(seq), max(seq), count(*) FROM ingest_batches GROUP BY epoch",
    )
    .fetch_all(db)
    .await
    .expect("ledger");
    assert_eq!(rows.len(), 1, "one agent epoch: {rows:?}");
    let (_, min, max, n) = rows[0];
    assert_eq!(
        (min, n),
        (1, max),
        "every batch 1..={max} committed exactly once: {rows:?}"
    );
}

/// After an outage: the lifetime that ended during it is closed, ingest goes on, the
/// ledger has no gap and no duplicate, and the stored table is the real one.
pub(crate) async fn recovered(db: &sqlx::PgPool, ns: &NetNs, pop_pid: i64) {
    wait_for(
        db,
        "the CLOSE_WAIT that ended during the outage to be closed",
        ENDED_CLOSE_WAIT,
        pop_pid,
    )
    .await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_batches")
        .fetch_one(db)
        .await
        .expect("count");
    wait_for(db, "three more batches", BATCHES_AT_LEAST, before + 3).await;
    ledger_is_contiguous(db).await;
    current_matches_ss(db, ns).await;
}

/// The open lifetimes are the namespace's real table (TIME_WAIT is summarised).
pub(crate) async fn current_matches_ss(db: &sqlx::PgPool, ns: &NetNs) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ss: BTreeSet<i64> = ns
            .output("ss", &["-tanHe"])
            .expect("ss")
            .lines()
            .filter(|l| !l.starts_with("TIME-WAIT"))
            .filter_map(|l| l.split_whitespace().find_map(|t| t.strip_prefix("sk:")))
            .filter_map(|h| u64::from_str_radix(h, 16).ok())
            .map(|c| c as i64)
            .collect();
        let db_keys: BTreeSet<i64> = sqlx::query_scalar("SELECT sock_key FROM current_sockets")
            .fetch_all(db)
            .await
            .expect("current sockets")
            .into_iter()
            .collect();
        // The collector's and agent's own connections change between cycles: retry
        // until a cycle has caught up with ss.
        if ss == db_keys {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stored open lifetimes differ from ss: only in ss {:?}, only stored {:?}",
            ss.difference(&db_keys).collect::<Vec<_>>(),
            db_keys.difference(&ss).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_real_close_wait_appears_as_an_open_lifetime_with_its_owner_and_then_ends() {
    if require_root("a_real_close_wait_appears_as_an_open_lifetime") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("e2e").expect("namespace");
    let data = scratch("basic");
    let database = TestDb::create();
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &["--database-url-file", database.url_file_arg()],
    );
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.5");
    let db = database.pool().await;
    wait_for(
        &db,
        "an open CLOSE_WAIT lifetime owned by the population",
        OPEN_CLOSE_WAIT,
        pop_pid,
    )
    .await;
    // The process holding the CLOSE_WAIT exits: its lifetime must end.
    pop.end();
    wait_for(
        &db,
        "the CLOSE_WAIT lifetime ended",
        ENDED_CLOSE_WAIT,
        pop_pid,
    )
    .await;
    db.close().await;
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_collector_killed_mid_stream_and_restarted_loses_and_duplicates_nothing() {
    if require_root("a_collector_killed_mid_stream_and_restarted") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("kill").expect("namespace");
    let data = scratch("kill");
    let (mut collector, addr) = start_collector(&ns, &data, "127.0.0.1:0", &[]);
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.3");
    let url = embedded_url(&data);
    {
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
        db.close().await;
    }
    collector.signal("-KILL");
    // While the collector is dead the agent keeps sampling; the CLOSE_WAIT ends.
    tokio::time::sleep(Duration::from_millis(800)).await;
    pop.end();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Same data directory (its PostgreSQL was orphaned by the kill) and address.
    let (collector, _) = start_collector(&ns, &data, &addr, &[]);
    let db = sqlx::PgPool::connect(&embedded_url(&data))
        .await
        .expect("connect after restart");
    recovered(&db, &ns, pop_pid).await;
    db.close().await;
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn postgres_stopped_and_restarted_while_the_agent_streams_loses_and_duplicates_nothing() {
    if require_root("postgres_stopped_and_restarted_while_the_agent_streams") == Privilege::OptedOut
    {
        return;
    }
    let ns = NetNs::create("pgdown").expect("namespace");
    let data = scratch("pgdown");
    // The database is external to the collector here, and private, so the test can
    // stop it.
    let (opts, pg) = tokio::task::spawn_blocking(private_cluster)
        .await
        .expect("task");
    let pg_dir = opts.data_dir.clone();
    let url = pg.url("finwait");
    let url_file = data.join("database-url");
    std::fs::write(&url_file, &url).expect("url file");
    let port = pg.port();
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &["--database-url-file", url_file.to_str().expect("utf-8")],
    );
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.2");
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
    db.close().await;

    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .expect("task")
        .expect("stop PostgreSQL");
    // The agent keeps sampling into its buffer; the CLOSE_WAIT ends during the outage.
    tokio::time::sleep(Duration::from_millis(600)).await;
    pop.end();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(EmbeddedOptions { port, ..opts })
    })
    .await
    .expect("task")
    .expect("restart PostgreSQL on the same port");
    let db = sqlx::PgPool::connect(&url)
        .await
        .expect("connect after restart");
    recovered(&db, &ns, pop_pid).await;
    db.close().await;
    drop(agent);
    drop(collector);
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .expect("task")
        .expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

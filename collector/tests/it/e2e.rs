//! End to end with the real binaries: `finwait-collector` (embedded PostgreSQL) and
//! `finwait-agent run`, inside a private network namespace where a real CLOSE_WAIT is
//! made by `finwait-sockpop`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use finwait_testkit::{NetNs, Privilege, require_root, workspace_bin};

/// A child process stopped with SIGTERM (then waited for) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn pg_url(data: &std::path::Path) -> String {
    let pid = std::fs::read_to_string(data.join("postgres/pgdata/postmaster.pid"))
        .expect("postmaster.pid");
    let port = pid.lines().nth(3).expect("port line").trim().to_owned();
    format!(
        "postgres://finwait@localhost:{port}/finwait?host={}",
        data.join("postgres/run").display()
    )
}

async fn wait_for(db: &sqlx::PgPool, what: &str, sql: &'static str, pid: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(pid)
            .fetch_one(db)
            .await
            .expect(what);
        if n > 0 {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (see agent.log in the test's data directory)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_real_close_wait_appears_as_an_open_lifetime_with_its_owner_and_then_ends() {
    if require_root("a_real_close_wait_appears_as_an_open_lifetime") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("e2e").expect("namespace");
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");

    let mut collector = ns
        .command(env!("CARGO_BIN_EXE_finwait-collector"))
        .args([
            "--insecure-loopback",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start collector");
    let mut line = String::new();
    BufReader::new(collector.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("collector prints its address");
    let collector = Proc(collector);
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    assert!(line.contains("listening on"), "{line}");

    let mut pop = ns
        .command(workspace_bin("finwait-sockpop").expect("sockpop"))
        .args([
            "--max-seconds",
            "120",
            "states",
            "--no-last-ack",
            "127.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("population");
    let mut manifest = String::new();
    BufReader::new(pop.stdout.take().expect("stdout"))
        .read_line(&mut manifest)
        .expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest JSON");
    let pop_pid = manifest["pid"].as_i64().expect("pid");

    let agent = Proc(
        ns.command(workspace_bin("finwait-agent").expect("agent binary"))
            .args([
                "run",
                "--insecure-loopback",
                "--interval",
                "0.5",
                "--hostname",
                "e2e",
                "--machine-id",
                "e2e-machine",
            ])
            .args(["--collector", &format!("http://{addr}")])
            .stdout(Stdio::null())
            // Kept for a failing run to be read; removed with the data directory.
            .stderr(std::fs::File::create(data.join("agent.log")).expect("agent log"))
            .spawn()
            .expect("start agent"),
    );
    let db = sqlx::PgPool::connect(&pg_url(&data))
        .await
        .expect("connect to the collector's database");
    wait_for(
        &db,
        "an open CLOSE_WAIT lifetime owned by the population",
        "SELECT count(*) FROM current_sockets c JOIN hosts h USING (host_id) \
         WHERE h.hostname = 'e2e' AND c.state = 8 AND c.owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint, 'comm', 'finwait-sockpop'))",
        pop_pid,
    )
    .await;

    // The process holding the CLOSE_WAIT exits: its lifetime must end.
    drop(pop.stdin.take());
    pop.wait().expect("population exits");
    wait_for(
        &db,
        "the CLOSE_WAIT lifetime ended",
        "SELECT count(*) FROM socket_lifetimes WHERE state = 8 AND end_reason = 1 \
         AND owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint)) \
         AND NOT EXISTS (SELECT 1 FROM current_sockets WHERE state = 8 AND owners @> jsonb_build_array(jsonb_build_object('pid', $1::bigint)))",
        pop_pid,
    )
    .await;
    db.close().await;
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

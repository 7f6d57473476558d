//! The database goes away while the real agent streams to the real collector binary:
//! the embedded PostgreSQL killed with SIGKILL (the collector must restart it, no hand
//! involved) and an external PostgreSQL paused with SIGSTOP for 20 s. Meanwhile gRPC
//! health and `/api/v1/ready` must say so and queries must get a clear 503; after it,
//! health is SERVING again and the ledger and the stored table are reconciled: one
//! epoch, every sequence number exactly once, the stored table equal to `ss`.

use std::time::Duration;

use finwait_testkit::{NetNs, Privilege, require_root};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::e2e::{
    OPEN_CLOSE_WAIT, embedded_url, recovered, scratch, start_agent, start_collector,
    start_population, wait_for,
};
use crate::nsclient::{Seen, Watch};
use crate::support::private_cluster;

/// The outage as clients saw it: health went NOT_SERVING and readiness 503 during it,
/// every query answered in it was a 503 saying why (never a 500 or driver text), and
/// both were back after it.
fn outage_was_reported(seen: &[Seen]) {
    let down = seen
        .iter()
        .position(|s| s.health == Some(ServingStatus::NotServing))
        .unwrap_or_else(|| panic!("health never went NOT_SERVING: {seen:#?}"));
    assert!(
        seen[down..].iter().any(|s| s.ready == Some(503)),
        "/api/v1/ready never answered 503 during the outage: {seen:#?}"
    );
    let up = seen[down..]
        .iter()
        .position(|s| s.health == Some(ServingStatus::Serving))
        .map(|i| i + down)
        .unwrap_or_else(|| panic!("health never came back to SERVING: {seen:#?}"));
    eprintln!(
        "health NOT_SERVING seen from {:?} to {:?} after the watch started",
        seen[down].at, seen[up].at
    );
    for s in &seen[down..up] {
        if let Some((status, body)) = &s.hosts {
            assert!(
                *status == 200 || (*status == 503 && body.contains("retry later")),
                "a query during the outage got {status} {body}"
            );
        }
    }
    assert!(
        seen[up..]
            .iter()
            .any(|s| s.ready == Some(200) && matches!(s.hosts, Some((200, _)))),
        "readiness and queries did not come back: {:#?}",
        &seen[up..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_postgres_killed_while_agents_stream_is_restarted_and_nothing_is_lost() {
    if require_root("embedded_postgres_killed_while_agents_stream") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("pgkill").expect("namespace");
    let data = scratch("pgkill");
    let (mut collector, addr) = start_collector(&ns, &data, "127.0.0.1:0", &[]);
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.3");
    let url = embedded_url(&data);
    {
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
        db.close().await;
    }
    let pid_file = data.join("postgres/pgdata/postmaster.pid");
    let postmaster: u32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    let sock_addr: std::net::SocketAddr = addr.parse().expect("address");
    let watch = Watch::start(&ns, sock_addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The postmaster alone, as the OOM killer would: its backends are orphaned.
    signal(postmaster, "-KILL");
    // The agent keeps sampling; the CLOSE_WAIT ends during the outage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pop.end();
    watch.wait_recovery(Duration::from_secs(90)).await;
    let seen = watch.finish();
    assert!(
        collector.0.try_wait().expect("collector status").is_none(),
        "the collector exited instead of restarting its database (see {}/collector.log)",
        data.display()
    );
    outage_was_reported(&seen);
    summarise(&seen);
    let restarted: u32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid after restart")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    assert_ne!(restarted, postmaster, "a new postmaster runs");
    let db = sqlx::PgPool::connect(&embedded_url(&data))
        .await
        .expect("connect after restart");
    recovered(&db, &ns, pop_pid).await;
    db.close().await;
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the parenthesised command name: state, then the parent pid.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_postgres_paused_for_20_s_is_reported_and_ingest_recovers_without_loss() {
    if require_root("external_postgres_paused_for_20_s") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("pgstop").expect("namespace");
    let data = scratch("pgstop");
    let (opts, pg) = tokio::task::spawn_blocking(private_cluster)
        .await
        .expect("task");
    let pg_dir = opts.data_dir.clone();
    let url = pg.url("finwait");
    let url_file = data.join("database-url");
    std::fs::write(&url_file, &url).expect("url file");
    let (collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &["--database-url-file", url_file.to_str().expect("utf-8")],
    );
    let (pop, pop_pid) = start_population(&ns);
    let agent = start_agent(&ns, &addr, &data, "0.3");
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
    db.close().await;

    let sock_addr: std::net::SocketAddr = addr.parse().expect("address");
    let watch = Watch::start(&ns, sock_addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The whole server (its process group: postmaster and backends), as a stalled VM
    // or a frozen container would be.
    // The whole server, as a stalled VM or a frozen container would be: the
    // postmaster first (no new backends), then each backend (each its own session).
    let postmaster = pg.pid().expect("postmaster runs");
    let mut paused = vec![postmaster];
    signal(postmaster, "-STOP");
    let children = children_of(postmaster);
    assert!(!children.is_empty(), "postgres has backends");
    for child in children {
        signal(child, "-STOP");
        paused.push(child);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pop.end();
    tokio::time::sleep(Duration::from_secs(19)).await;
    for pid in &paused {
        signal(*pid, "-CONT");
    }
    watch.wait_recovery(Duration::from_secs(90)).await;
    let seen = watch.finish();
    outage_was_reported(&seen);
    summarise(&seen);
    let db = sqlx::PgPool::connect(&url)
        .await
        .expect("connect after the pause");
    recovered(&db, &ns, pop_pid).await;
    db.close().await;
    drop(agent);
    drop(collector);
    // While the database was known to be away, the agent's stream was told so at once
    // (UNAVAILABLE, then its backoff) rather than left waiting on a connection.
    let agent_log = std::fs::read_to_string(data.join("agent.log")).unwrap_or_default();
    // ... with a retry delay (gRPC retry pushback) that it honoured.
    assert!(
        agent_log.contains("pushback_ms"),
        "the agent was never given a retry delay while the database was paused:\n{}",
        agent_log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        agent_log.contains("database unreachable; retry later"),
        "the agent was never told the database was unreachable:\n{}",
        agent_log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .expect("task")
        .expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// One line per change of what clients saw, for the test's output.
fn summarise(seen: &[Seen]) {
    let mut last = String::new();
    for s in seen {
        let now = format!(
            "health {:?}, ready {:?}, hosts {:?}",
            s.health,
            s.ready,
            s.hosts.as_ref().map(|h| h.0)
        );
        if now != last {
            eprintln!("{:>8.1?}: {now}", s.at);
            last = now;
        }
    }
}

#[tokio::test]
async fn an_embedded_postgres_that_cannot_be_restarted_stops_the_collector_non_zero_saying_why() {
    if require_root("an_embedded_postgres_that_cannot_be_restarted") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("pggone").expect("namespace");
    let data = scratch("pggone");
    let (mut collector, _addr) = start_collector(&ns, &data, "127.0.0.1:0", &[]);
    let pgdata = data.join("postgres/pgdata");
    let postmaster: u32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    // Killed, and its cluster no longer a cluster: every restart must fail.
    std::fs::remove_file(pgdata.join("PG_VERSION")).expect("remove PG_VERSION");
    signal(postmaster, "-KILL");
    // Five attempts after 1 + 2 + 4 + 8 + 16 s, each failing at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = collector.0.try_wait().expect("collector status") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector still runs without a database it can restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let log = std::fs::read_to_string(data.join("collector.log")).expect("collector log");
    assert!(
        log.contains("embedded postgresql exited and 5 restarts failed"),
        "the reason is not in the log:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

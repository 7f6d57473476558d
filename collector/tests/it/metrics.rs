//! `/metrics` end to end: the real collector binary (with a tokens file) and the real
//! agent binary (with `--metrics-listen`) in a private network namespace, sockets made
//! by `finwait-sockpop`. Both expositions pass `promtool check metrics`; the
//! collector's answers only to a read token; its ingest, query and fleet series move
//! with real ingest and carry no host, address or pid; the agent's count its cycles
//! and notice the collector going away.

use std::path::Path;
use std::time::{Duration, Instant};

use finwait_testkit::promtool::check_metrics;
use finwait_testkit::{NetNs, Privilege, require_root, workspace_bin};

use crate::e2e::{
    OPEN_CLOSE_WAIT, Proc, scratch, spawn_announced, start_collector, start_population, wait_for,
};
use crate::support::TestDb;

const READ: &str = "metrics-read-token";
const INGEST: &str = "metrics-ingest-token";

/// The value of the series written exactly as `series` (name and labels).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn must(exposition: &str, series: &str) -> f64 {
    value(exposition, series).unwrap_or_else(|| panic!("no series {series} in:\n{exposition}"))
}

/// GET `url` from inside `ns`: (HTTP status, body).
fn get(ns: &NetNs, url: &str, token: Option<&str>) -> (u16, String) {
    let mut args = vec!["-sS", "-m", "10", "-w", "\n%{http_code}"];
    let header = token.map(|t| format!("authorization: Bearer {t}"));
    if let Some(h) = &header {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = ns.output("curl", &args).expect("curl");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_owned())
}

/// Scrapes until `ready` holds (bounded), returning that exposition.
fn scrape_until(
    ns: &NetNs,
    url: &str,
    token: Option<&str>,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, body) = get(ns, url, token);
        assert_eq!(status, 200, "{url}: {body}");
        if ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn start_agent(ns: &NetNs, addr: &str, data: &Path) -> (Proc, String) {
    let token = data.join("agent.token");
    std::fs::write(&token, INGEST).expect("agent token");
    let mut cmd = ns.command(workspace_bin("finwait-agent").expect("agent binary"));
    cmd.args(["run", "--insecure-loopback", "--interval", "0.5"])
        .args(["--hostname", "e2e", "--machine-id", "metrics-machine"])
        .args(["--metrics-listen", "127.0.0.1:0", "--token-file"])
        .arg(&token)
        .arg("--spool-dir")
        .arg(data.join("agent-spool"))
        .args(["--collector", &format!("http://{addr}")]);
    let (c, line) = spawn_announced(cmd, &data.join("agent.log"));
    assert!(
        line.contains("metrics listening on"),
        "agent did not start: {line:?} (see {}/agent.log)",
        data.display()
    );
    let maddr = line.trim().rsplit(' ').next().expect("address").to_owned();
    (c, maddr)
}

#[tokio::test]
async fn metrics_of_a_real_collector_and_agent_pass_promtool_and_follow_real_ingest() {
    if require_root("metrics_of_a_real_collector_and_agent") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("metrics").expect("namespace");
    let data = scratch("metrics");
    let database = TestDb::create();
    let tokens = data.join("tokens");
    std::fs::write(&tokens, format!("read:{READ}\ningest:{INGEST}\n")).expect("tokens file");
    let tokens_arg = tokens.to_str().expect("utf-8 path");
    let (mut collector, addr) = start_collector(
        &ns,
        &data,
        "127.0.0.1:0",
        &[
            "--database-url-file",
            database.url_file_arg(),
            "--tokens-file",
            tokens_arg,
            "--maintenance-seconds",
            "1",
            "--leak-threshold-seconds",
            "1",
        ],
    );
    let url = format!("http://{addr}/metrics");

    // The token rule: a read token scrapes; none is 401, an agent's token 403.
    assert_eq!(get(&ns, &url, None).0, 401);
    assert_eq!(get(&ns, &url, Some(INGEST)).0, 403);
    let (status, before) = get(&ns, &url, Some(READ));
    assert_eq!(status, 200, "{before}");
    let lint = check_metrics(&before);
    assert!(
        lint.ok,
        "promtool check metrics (collector, idle):\n{}",
        lint.text
    );
    assert_eq!(
        must(
            &before,
            "finwait_ingest_batches_total{result=\"committed\"}"
        ),
        0.0
    );
    assert_eq!(must(&before, "finwait_ingest_streams_active"), 0.0);
    for reason in ["saturated", "database_down", "memory"] {
        let series = format!("finwait_ingest_shed_total{{reason=\"{reason}\"}}");
        assert_eq!(must(&before, &series), 0.0, "{series}");
    }

    let (pop, pop_pid) = start_population(&ns);
    let (agent, maddr) = start_agent(&ns, &addr, &data);
    let db = database.pool().await;
    wait_for(&db, "an open CLOSE_WAIT", OPEN_CLOSE_WAIT, pop_pid).await;
    db.close().await;
    let (status, _) = get(&ns, &format!("http://{addr}/api/v1/hosts"), Some(READ));
    assert_eq!(status, 200);
    // The fleet gauges follow the rollup (every second here): the population's
    // CLOSE_WAIT, held past the 1 s threshold, is an open leak.
    let after = scrape_until(
        &ns,
        &url,
        Some(READ),
        "the fleet gauges to show the leak",
        |m| {
            value(m, "finwait_fleet_open_leaks{kind=\"close_wait\"}").is_some_and(|v| v >= 1.0)
                && value(m, "finwait_fleet_hosts{status=\"reporting\"}") == Some(1.0)
        },
    );
    let lint = check_metrics(&after);
    assert!(
        lint.ok,
        "promtool check metrics (collector):\n{}",
        lint.text
    );
    let committed = must(&after, "finwait_ingest_batches_total{result=\"committed\"}");
    assert!(committed >= 1.0, "{after}");
    assert!(must(&after, "finwait_ingest_rows_total") >= 1.0);
    assert!(must(&after, "finwait_ingest_ack_seconds_count") >= committed);
    assert!(must(&after, "finwait_db_acquire_seconds_count{pool=\"ingest\"}") >= committed);
    assert_eq!(must(&after, "finwait_ingest_streams_active"), 1.0);
    for reason in ["saturated", "database_down", "memory"] {
        let series = format!("finwait_ingest_shed_total{{reason=\"{reason}\"}}");
        assert_eq!(must(&after, &series), 0.0, "{series}");
    }
    assert_eq!(must(&after, "finwait_database_up"), 1.0);
    assert!(must(&after, "finwait_query_seconds_count{question=\"hosts\"}") >= 1.0);
    assert!(must(&after, "finwait_fleet_sockets{state=\"CLOSE_WAIT\"}") >= 1.0);
    assert!(must(&after, "finwait_fleet_sockets{state=\"LISTEN\"}") >= 1.0);
    assert!(must(&after, "finwait_retention_last_run_timestamp_seconds") > 1.7e9);
    let leaks: f64 = ["close_wait", "half_closed_wait", "last_ack_stuck"]
        .iter()
        .map(|k| must(&after, &format!("finwait_fleet_open_leaks{{kind=\"{k}\"}}")))
        .sum();
    let by_service: f64 = after
        .lines()
        .filter(|l| l.starts_with("finwait_fleet_service_open_leaks{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        leaks, by_service,
        "every open leak is in one service series"
    );
    // Bounded labels: no host, address, port or pid anywhere.
    for private in ["e2e", "127.0.0.1", &pop_pid.to_string(), &addr] {
        assert!(
            !after
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(private)),
            "/metrics names {private:?}:\n{after}"
        );
    }

    // The agent's own endpoint.
    let murl = format!("http://{maddr}/metrics");
    let agent_m = scrape_until(&ns, &murl, None, "two agent cycles", |m| {
        value(m, "finwait_agent_cycles_total{result=\"ok\"}").is_some_and(|v| v >= 2.0)
    });
    let lint = check_metrics(&agent_m);
    assert!(lint.ok, "promtool check metrics (agent):\n{}", lint.text);
    assert!(must(&agent_m, "finwait_agent_sockets") >= 1.0);
    assert!(must(&agent_m, "finwait_agent_cycle_seconds_count") >= 2.0);
    assert!(must(&agent_m, "finwait_agent_owner_scan_seconds_count") >= 2.0);
    assert_eq!(must(&agent_m, "finwait_agent_connected"), 1.0);
    assert_eq!(must(&agent_m, "finwait_agent_reconnects_total"), 0.0);
    assert_eq!(
        must(&agent_m, "finwait_agent_outbox_limit_bytes"),
        64.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        must(&agent_m, "finwait_agent_spool_limit_bytes"),
        256.0 * 1024.0 * 1024.0
    );
    assert_eq!(must(&agent_m, "finwait_agent_spool_dropped_total"), 0.0);
    assert!(must(&agent_m, "process_resident_memory_bytes") > 0.0);
    assert_eq!(get(&ns, &format!("http://{maddr}/other"), None).0, 404);

    // The collector goes away: the agent counts the lost stream and queues batches,
    // in memory and in its spool.
    collector.signal("-TERM");
    let gone = scrape_until(
        &ns,
        &murl,
        None,
        "the agent to notice the collector gone",
        |m| {
            value(m, "finwait_agent_reconnects_total").is_some_and(|v| v >= 1.0)
                && value(m, "finwait_agent_connected") == Some(0.0)
                && value(m, "finwait_agent_outbox_bytes").is_some_and(|v| v > 0.0)
                && value(m, "finwait_agent_spool_records").is_some_and(|v| v >= 1.0)
        },
    );
    assert!(must(&gone, "finwait_agent_spool_bytes") > 0.0, "{gone}");
    let lint = check_metrics(&gone);
    assert!(
        lint.ok,
        "promtool check metrics (agent, collector gone):\n{}",
        lint.text
    );

    drop(agent);
    drop(pop);
    drop(collector);
    let _ = std::fs::remove_dir_all(&data);
}

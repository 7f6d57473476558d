//! Trend reports: every number of a report over hand-made lifetimes in known windows
//! (a leak spanning the window's edge, one resolved, one new and open, one under the
//! threshold, a service only in the previous window, daily peaks summed over
//! namespaces); stored once per window however many builders race; the HTML rendering
//! in headless Chromium; and the real collector producing a scheduled report at once
//! on start (the baseline) and delivering it to a webhook that fails twice, across a
//! restart and with two collectors sharing the database, exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use finwait_collector::query::Context;
use finwait_collector::report::schedule::Schedules;
use finwait_collector::report::{self, Links, Spec, render, scheduler, store};
use finwait_proto::v1 as pb;
use finwait_testkit::{artifacts_dir, require_browser};
use finwait_vocab::TcpState;
use finwait_vocab::report::{ReportFormat, Window};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Collector, TestDb};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The previous window starts here; the reported one a week later.
const D0: &str = "2026-10-01T00:00:00Z";

async fn host(pool: &PgPool, name: &str, last_report: DateTime<Utc>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO hosts (machine_id, hostname, boot_id, first_seen, last_report, sample_interval_ms, \
                            ephemeral_low, ephemeral_high) \
         VALUES ($1, $1, 'b', $2, $3, 10000, 32768, 60999) RETURNING host_id",
    )
    .bind(name)
    .bind(utc(D0) - Duration::days(30))
    .bind(last_report)
    .fetch_one(pool)
    .await
    .expect("host")
}

fn owners(service: &str, comm: &str, pid: u32) -> serde_json::Value {
    serde_json::json!([{ "pid": pid, "fd": 7, "comm": comm, "cmdline": comm, "service": service }])
}

/// One CLOSE_WAIT (or other state) lifetime: open in current_sockets when `ended`
/// is None, else ended in socket_lifetimes.
#[allow(clippy::too_many_arguments)]
async fn life(
    pool: &PgPool,
    host_id: i64,
    key: i64,
    state: i16,
    local: (&str, i32),
    remote: (&str, i32),
    owners: serde_json::Value,
    since: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
) {
    let cols = "host_id, netns, sock_key, state, local_addr, local_port, remote_addr, remote_port, \
                inode, uid, rx_queue, tx_queue, timer, owners, first_seen, pair_key";
    // The pair key as the collector's inserts compute it.
    const KEY: &str = "finwait_pair_key($1, 1, $3, $4::inet, $5, $6::inet, $7)";
    let q = match ended {
        None => format!(
            "INSERT INTO current_sockets ({cols}) VALUES ($1, 1, $2, $3, $4::inet, $5, $6::inet, $7, $8, 0, 0, 0, 0, $9, $10, {KEY})"
        ),
        Some(_) => format!(
            "INSERT INTO socket_lifetimes ({cols}, last_seen, end_reason) \
             VALUES ($1, 1, $2, $3, $4::inet, $5, $6::inet, $7, $8, 0, 0, 0, 0, $9, $10, {KEY}, $11, 1)"
        ),
    };
    sqlx::query(sqlx::AssertSqlSafe(q))
        .bind(host_id)
        .bind(key)
        .bind(state)
        .bind(local.0)
        .bind(local.1)
        .bind(remote.0)
        .bind(remote.1)
        .bind(if owners.as_array().is_some_and(|a| a.is_empty()) {
            0i64
        } else {
            1000 + key
        })
        .bind(owners)
        .bind(since)
        .bind(ended)
        .execute(pool)
        .await
        .expect("lifetime");
}

async fn counts(
    pool: &PgPool,
    host_id: i64,
    ts: DateTime<Utc>,
    netns: i64,
    state: i16,
    count: i32,
) {
    sqlx::query(
        "INSERT INTO state_counts (host_id, ts, netns, state, count) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(host_id)
    .bind(ts)
    .bind(netns)
    .bind(state)
    .bind(count)
    .execute(pool)
    .await
    .expect("counts");
}

/// The fixture: two weeks of hand-made leaks. Returns the reported window.
async fn fixture(pool: &PgPool) -> Window {
    let p0 = utc(D0);
    let w0 = p0 + Duration::days(7);
    let end = w0 + Duration::days(7);
    let now = Utc::now();
    let app1 = host(pool, "app-1", now).await;
    let app2 = host(pool, "app-2", now).await;
    let db1 = host(pool, "db-1", now).await;
    let billing = || owners("billing.service", "java", 4242);
    let cw = 8i16;
    // L1: billing on app-1, since two days before the window, still open: spans the edge.
    life(
        pool,
        app1,
        1,
        cw,
        ("10.0.0.1", 8080),
        ("10.0.1.1", 40001),
        billing(),
        w0 - Duration::days(2),
        None,
    )
    .await;
    // L2: billing on app-2, new and resolved inside the window (2 days).
    life(
        pool,
        app2,
        2,
        cw,
        ("10.0.0.2", 8080),
        ("10.0.1.1", 40002),
        billing(),
        w0 + Duration::days(1),
        Some(w0 + Duration::days(3)),
    )
    .await;
    // L3: billing on app-1, new and open at the end; its peer is db-1's FIN_WAIT2.
    life(
        pool,
        app1,
        3,
        cw,
        ("10.0.0.1", 8080),
        ("10.0.2.1", 40003),
        billing(),
        w0 + Duration::days(5),
        None,
    )
    .await;
    life(
        pool,
        db1,
        30,
        5,
        ("10.0.2.1", 40003),
        ("10.0.0.1", 8080),
        serde_json::json!([]),
        w0 + Duration::days(5),
        None,
    )
    .await;
    // L4: search-api on app-2, from the previous window, resolved one day into this one.
    life(
        pool,
        app2,
        4,
        cw,
        ("10.0.0.2", 9090),
        ("10.0.1.2", 40004),
        owners("search-api", "search", 77),
        p0 + Duration::days(1),
        Some(w0 + Duration::days(1)),
    )
    .await;
    // L5: legacy.service on app-1, only in the previous window.
    life(
        pool,
        app1,
        5,
        cw,
        ("10.0.0.1", 7070),
        ("10.0.1.3", 40005),
        owners("legacy.service", "legacy", 55),
        p0 + Duration::days(2),
        Some(p0 + Duration::days(3)),
    )
    .await;
    // L6: 30 s old at the end: not a leak yet. L7: ended after 10 s: never one.
    life(
        pool,
        app1,
        6,
        cw,
        ("10.0.0.1", 8080),
        ("10.0.1.1", 40006),
        billing(),
        end - Duration::seconds(30),
        None,
    )
    .await;
    life(
        pool,
        app1,
        7,
        cw,
        ("10.0.0.1", 8080),
        ("10.0.1.1", 40007),
        billing(),
        w0 + Duration::days(4),
        Some(w0 + Duration::days(4) + Duration::seconds(10)),
    )
    .await;
    // Peaks: day 1 has 3 + 2 in two namespaces at one instant (5) and 4 later; day 2
    // has 7; a sample after the end is not counted.
    counts(pool, app1, w0 + Duration::hours(1), 1, cw, 3).await;
    counts(pool, app1, w0 + Duration::hours(1), 2, cw, 2).await;
    counts(pool, app1, w0 + Duration::hours(2), 1, cw, 4).await;
    counts(
        pool,
        app1,
        w0 + Duration::days(1) + Duration::hours(5),
        1,
        cw,
        7,
    )
    .await;
    counts(pool, app1, end + Duration::hours(1), 1, cw, 99).await;
    Window { start: w0, end }
}

fn ctx(pool: PgPool) -> Context {
    Context {
        pool,
        db: finwait_collector::db_health::DbStatus::new(true),
        query_timeout: StdDuration::from_secs(15),
        leak_threshold_s: 60.0,
        slack_s: 30.0,
        public_url: Some("https://finwait.example.net:7070".into()),
    }
}

fn spec(w: Window) -> Spec {
    Spec {
        schedule: "weekly".into(),
        window: w,
        tz: chrono_tz::Tz::UTC,
        hosts: vec![],
        services: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_number_of_a_report_is_exact() {
    let db = TestDb::create();
    let pool = db.pool().await;
    let w = fixture(&pool).await;
    let ctx = ctx(pool.clone());
    let links = Links {
        base: Some("https://finwait.example.net:7070".into()),
    };
    let r = report::build(&ctx, &links, &spec(w), false)
        .await
        .expect("report");

    // This window: L2, L3 new; L1, L4 ongoing; L2, L4 resolved; L1, L3 open.
    assert_eq!(
        (r.now.new, r.now.ongoing, r.now.resolved, r.now.open_at_end),
        (2, 2, 2, 2),
        "{:?}",
        r.now
    );
    assert_eq!(r.now.hosts_affected, 2);
    // 168 h (L1) + 48 (L2) + 48 (L3) + 24 (L4).
    assert!(
        (r.now.socket_hours - 288.0).abs() < 1e-6,
        "{}",
        r.now.socket_hours
    );
    // Previous window: L1, L4, L5 new; L5 resolved; L1, L4 open at its end;
    // 48 h (L1) + 144 (L4) + 24 (L5).
    assert_eq!(
        (
            r.before.new,
            r.before.ongoing,
            r.before.resolved,
            r.before.open_at_end
        ),
        (3, 0, 1, 2),
        "{:?}",
        r.before
    );
    assert!(
        (r.before.socket_hours - 216.0).abs() < 1e-6,
        "{}",
        r.before.socket_hours
    );
    assert!(r.changed && !r.baseline && !r.truncated);

    let names: Vec<&str> = r.services.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["billing.service", "search-api", "legacy.service"],
        "active first, then gone"
    );
    let billing = &r.services[0];
    assert_eq!(
        (
            billing.now.total(),
            billing.now.new,
            billing.now.open_at_end,
            billing.before.total()
        ),
        (3, 2, 2, 1)
    );
    assert!((billing.growth_per_hour - 2.0 / 168.0).abs() < 1e-9);
    assert!((billing.growth_per_day - 2.0 / 7.0).abs() < 1e-9);
    assert_eq!(billing.hosts, ["app-1", "app-2"]);
    assert_eq!(billing.peers.len(), 1, "{:?}", billing.peers);
    assert_eq!(
        (billing.peers[0].host.as_str(), billing.peers[0].count),
        ("db-1", 1)
    );
    assert_eq!(billing.fixed_at, None);
    assert_eq!(
        billing.link.page.as_deref(),
        Some(
            "https://finwait.example.net:7070/service?name=billing.service&since=2026-10-01T00%3A00%3A00Z"
        )
    );
    assert_eq!(
        billing.link.cli,
        "finwait leaks --service billing.service --since 2026-10-01T00:00:00Z"
    );
    let search = &r.services[1];
    assert_eq!(
        (
            search.now.total(),
            search.now.resolved,
            search.now.open_at_end
        ),
        (1, 1, 0)
    );
    assert_eq!(
        search.fixed_at,
        Some(w.start + Duration::days(1)),
        "fixed the day its last leak ended"
    );
    let legacy = &r.services[2];
    assert_eq!((legacy.now.total(), legacy.before.total()), (0, 1));

    let procs: Vec<(Option<&str>, &str, i64)> = r
        .processes
        .iter()
        .map(|c| (c.host.as_deref(), c.name.as_str(), c.now.total()))
        .collect();
    assert_eq!(
        procs,
        [
            (Some("app-1"), "java", 2),
            (Some("app-2"), "search", 1),
            (Some("app-2"), "java", 1),
            (Some("app-1"), "legacy", 0)
        ],
        "by leaks now, then before"
    );

    // Time to fix: L2 2 days, L4 7 days.
    assert_eq!(
        (
            r.time_to_fix.resolved,
            r.time_to_fix.median_s,
            r.time_to_fix.p90_s,
            r.time_to_fix.max_s
        ),
        (2, 172_800, 604_800, 604_800)
    );

    let open: Vec<(&str, i64)> = r
        .oldest_open
        .iter()
        .map(|o| (o.holder.local.as_str(), o.age_s))
        .collect();
    assert_eq!(
        open,
        [("10.0.0.1:8080", 9 * 86_400), ("10.0.0.1:8080", 2 * 86_400)]
    );
    assert_eq!(
        r.oldest_open[1].peer.as_ref().map(|p| p.host.as_str()),
        Some("db-1")
    );

    assert_eq!(r.peaks.days.len(), 7);
    let app1 = r
        .peaks
        .hosts
        .iter()
        .find(|h| h.host == "app-1")
        .expect("app-1 peaks");
    assert_eq!(
        app1.states.get(&TcpState::CloseWait),
        Some(&vec![5, 7, 0, 0, 0, 0, 0])
    );
    assert_eq!(r.peaks.hosts[0].host, "app-1", "highest CLOSE_WAIT first");

    // The same peaks from the hourly rollup (whole hours) and the raw counts (the
    // edges of a window that does not start on the hour).
    sqlx::query("INSERT INTO rollups (name, until) VALUES ('state_hours', $1)")
        .bind(w.start - Duration::hours(1))
        .execute(&pool)
        .await
        .expect("rollup mark");
    let store = finwait_collector::store::Store::connect_with(
        db.options.clone(),
        2,
        StdDuration::from_secs(60),
    )
    .await
    .expect("store");
    for _ in 0..20 {
        store.roll_state_hours(3650).await.expect("roll up");
    }
    let rolled: i64 = sqlx::query_scalar("SELECT count(*) FROM state_hours")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rolled, 4, "one row per host, hour and state with counts");
    let odd = Window {
        start: w.start - Duration::minutes(30),
        end: w.end,
    };
    for window in [w, odd] {
        let again = report::build(&ctx, &links, &spec(window), false)
            .await
            .expect("report");
        let app1 = again
            .peaks
            .hosts
            .iter()
            .find(|h| h.host == "app-1")
            .expect("app-1");
        let cw = app1.states.get(&TcpState::CloseWait).expect("close_wait");
        assert_eq!(
            cw[cw.len() - 7..],
            [5, 7, 0, 0, 0, 0, 0],
            "{window:?}: {cw:?}"
        );
    }

    // Filters: a service, a host.
    let only = report::build(
        &ctx,
        &links,
        &Spec {
            services: vec!["search-api".into()],
            ..spec(w)
        },
        false,
    )
    .await
    .expect("filtered");
    assert_eq!((only.now.total(), only.services.len()), (1, 1));
    let on_app2 = report::build(
        &ctx,
        &links,
        &Spec {
            hosts: vec!["app-2".into()],
            ..spec(w)
        },
        false,
    )
    .await
    .expect("filtered");
    assert_eq!((on_app2.now.new, on_app2.now.ongoing), (1, 1));

    // Every rendering carries the numbers.
    let md = render::render(&r, ReportFormat::Markdown);
    assert!(md.contains("| billing.service | 3 | +2 (was 1) |"), "{md}");
    let csv = render::render(&r, ReportFormat::Csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + r.services.len() + r.processes.len());
    assert!(
        lines[1].starts_with("service,billing.service,,java,close_wait,3,2,1,1,2,264.000,1,1,"),
        "{}",
        lines[1]
    );
    let text = render::render(&r, ReportFormat::Text);
    assert!(
        text.contains("2 new leaks -1 (was 3)") || text.contains("2 new leaks −1 (was 3)"),
        "{text}"
    );
    assert!(text.contains("search-api fixed Fri 9 Oct 2026"), "{text}");
    let json: finwait_vocab::report::Report =
        serde_json::from_str(&render::render(&r, ReportFormat::Json)).expect("JSON reads back");
    assert_eq!(json, r);

    // Stored once however many builders race for the window; the first is the baseline.
    let schedules = Schedules::parse(
        "[[report]]\nname='weekly'\ncron='0 0 * * *'\nwindow='7d'\n",
        &Default::default(),
    )
    .expect("schedule");
    let s = &schedules.schedules[0];
    let race = || scheduler::produce(&ctx, &links, s, w.end);
    let (a, b, c, d) = tokio::join!(race(), race(), race(), race());
    let ids: Vec<Option<i64>> = [a, b, c, d]
        .into_iter()
        .map(|r| r.expect("produce"))
        .collect();
    let stored: Vec<i64> = ids.iter().flatten().copied().collect();
    assert_eq!(stored.len(), 1, "one of four builders stores it: {ids:?}");
    let first = store::get(&pool, stored[0]).await.expect("stored");
    assert!(
        first.baseline,
        "the schedule's first report is its baseline"
    );
    let next = scheduler::produce(&ctx, &links, s, w.end + Duration::days(1))
        .await
        .expect("next")
        .expect("stored");
    assert!(!store::get(&pool, next).await.expect("stored").baseline);
    let listed = store::list(
        &pool,
        Some("weekly"),
        finwait_collector::query::PageReq {
            offset: 0,
            limit: 10,
        },
    )
    .await
    .expect("list");
    assert_eq!(listed.reports.len(), 2);
    assert_eq!(listed.reports[0].id, next, "newest window first");

    // only_changed: a week in which the same two leaks stay open and nothing else
    // happens is stored, not delivered; the baseline before it is delivered.
    let quiet = Schedules::parse(
        "[[report]]\nname='quiet'\ncron='0 0 * * *'\nwindow='7d'\nonly_changed=true\n\
         [[report.destination]]\ndirectory='/nonexistent/finwait-test'\n",
        &Default::default(),
    )
    .expect("schedule");
    let q = &quiet.schedules[0];
    let base = scheduler::produce(&ctx, &links, q, w.end + Duration::days(7))
        .await
        .expect("b")
        .expect("stored");
    let calm = scheduler::produce(&ctx, &links, q, w.end + Duration::days(14))
        .await
        .expect("c")
        .expect("stored");
    let states: Vec<(i64, bool, String)> = sqlx::query_as(
        "SELECT r.report_id, r.changed, d.state FROM reports r JOIN report_deliveries d USING (report_id) \
         WHERE r.schedule = 'quiet' ORDER BY r.report_id",
    )
    .fetch_all(&pool)
    .await
    .expect("deliveries");
    assert_eq!(
        states,
        [
            (base, true, "pending".to_owned()),
            (calm, false, "skipped".to_owned())
        ]
    );

    // The HTML as a person sees it: through the dashboard, in Chromium.
    let c = Collector::start_on(db, &["--no-reports"]).await;
    // gRPC answers alike.
    let mut grpc = pb::query_client::QueryClient::connect(format!("http://{}", c.addr))
        .await
        .expect("gRPC connect");
    let listed = grpc
        .reports(pb::ReportsRequest {
            schedule: "weekly".into(),
            page: None,
        })
        .await
        .expect("Reports")
        .into_inner();
    assert_eq!(listed.reports.len(), 2);
    assert_eq!(listed.reports[1].new, 2, "{:?}", listed.reports[1]);
    let csv = grpc
        .report(pb::ReportRequest {
            id: stored[0],
            format: "csv".into(),
        })
        .await
        .expect("Report")
        .into_inner();
    assert_eq!(csv.content_type, "text/csv; charset=utf-8");
    assert!(
        csv.body.contains("service,billing.service,"),
        "{}",
        csv.body
    );
    let bad = grpc
        .report(pb::ReportRequest {
            id: stored[0],
            format: "pdf".into(),
        })
        .await
        .expect_err("not a format");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    let run = grpc
        .run_report(pb::RunReportRequest {
            since: w.start.to_rfc3339(),
            window: "7d".into(),
            services: vec!["search-api".into()],
            format: "json".into(),
            ..Default::default()
        })
        .await
        .expect("RunReport")
        .into_inner();
    let run: finwait_vocab::report::Report = serde_json::from_str(&run.body).expect("JSON");
    assert_eq!(
        (
            run.now.ongoing,
            run.now.resolved,
            run.scope.schedule.as_str()
        ),
        (1, 1, "adhoc")
    );
    // The CLI lists and shows them.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(
            finwait_testkit::workspace_bin("finwait").expect("finwait CLI"),
        )
        .arg("--server")
        .arg(format!("http://{}", c.addr))
        .args(args)
        .output()
        .expect("run finwait");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = cli(&["report", "list", "--schedule", "weekly"]);
    assert!(
        list.contains("weekly") && list.contains(&stored[0].to_string()),
        "{list}"
    );
    let shown = cli(&["report", "show", &stored[0].to_string(), "--format", "csv"]);
    assert_eq!(shown, render::render(&first, ReportFormat::Csv));

    let Some(b) = require_browser("every_number_of_a_report_is_exact") else {
        return;
    };
    b.set_window_size(900, 2400).expect("window size");
    b.goto(&format!("http://{}/reports/{}", c.addr, stored[0]))
        .expect("report page");
    let body = b.source().expect("source");
    assert!(body.contains("billing.service") && body.contains("Daily peaks per host"));
    let png = artifacts_dir()
        .expect("artifacts dir")
        .join("report-weekly.png");
    b.screenshot_png(&png).expect("screenshot");
    assert!(
        b.console_errors().expect("console").is_empty(),
        "no CSP or script errors"
    );
    b.goto(&format!("http://{}/reports", c.addr))
        .expect("reports list");
    b.screenshot_png(
        artifacts_dir()
            .expect("artifacts dir")
            .join("dashboard-reports.png"),
    )
    .expect("screenshot");
    assert!(
        b.source()
            .expect("source")
            .contains(&format!("/reports/{}", stored[0]))
    );
    drop(b);
    c.stop().await;
}

/// A webhook on loopback that answers 500 to the first `fail` POSTs of each
/// idempotency key (each report), then 200; it records each POST's key, status and body.
struct Receiver {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<(String, u16, String)>>>,
}

async fn receiver(fail: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                // Headers, then Content-Length bytes of body; bounded in size and time.
                let mut request: Option<(String, usize, usize)> = None;
                let (head, start, len) = loop {
                    if let Some((head, start, len)) = &request
                        && buf.len() >= start + len
                    {
                        break (head.clone(), *start, *len);
                    }
                    let Ok(Ok(n)) =
                        tokio::time::timeout(StdDuration::from_secs(10), s.read(&mut chunk)).await
                    else {
                        return;
                    };
                    if n == 0 || buf.len() > 8 << 20 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if request.is_none()
                        && let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        request = Some((head, i + 4, len));
                    }
                };
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("idempotency-key:"))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
                let status = {
                    let mut l = log.lock().expect("log");
                    let before = l.iter().filter(|e| e.0 == key).count();
                    let status = if before < fail { 500 } else { 200 };
                    l.push((key, status, body));
                    status
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Receiver { addr, seen }
}

impl Receiver {
    fn log(&self) -> Vec<(String, u16, String)> {
        self.seen.lock().expect("log").clone()
    }

    /// Waits until `key` (any key when empty) was POSTed `n` times.
    async fn wait_for(
        &self,
        key: &str,
        n: usize,
        within: StdDuration,
    ) -> Vec<(String, u16, String)> {
        let t = Instant::now();
        loop {
            let l = self.log();
            if l.iter().filter(|e| key.is_empty() || e.0 == key).count() >= n {
                return l;
            }
            assert!(
                t.elapsed() < within,
                "webhook got {} POSTs in {within:?}, wanted {n} of {key:?}: {l:?}",
                l.len()
            );
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_report_reaches_a_failing_webhook_exactly_once_across_restarts() {
    let hook = receiver(2).await;
    let dir = finwait_testkit::TempDir::new("reports-dir").expect("temp dir");
    let file = dir.path().join("reports.toml");
    let out = dir.path().join("out");
    std::fs::write(
        &file,
        format!(
            "retry_initial = \"1s\"\nretry_max = \"2s\"\n\
             [[report]]\nname = \"minutely\"\ncron = \"* * * * *\"\nwindow = \"1h\"\nformats = [\"html\", \"csv\"]\n\
             [[report.destination]]\nwebhook = \"http://{}/hook/secret\"\n\
             [[report.destination]]\ndirectory = \"{}\"\n",
            hook.addr,
            out.display()
        ),
    )
    .expect("reports file");
    let flags = ["--reports-file", file.to_str().expect("utf-8")];
    let db = TestDb::create();
    let url_file = db.url_file.clone();
    let options = db.options.clone();
    // Started, it builds the window that closed last (the baseline) at once.
    let c1 = Collector::start_on(db, &flags).await;
    let first = hook.wait_for("", 1, StdDuration::from_secs(30)).await;
    assert_eq!(first[0].1, 500);
    let key = first[0].0.clone();
    assert!(key.starts_with("finwait-report-"), "{key}");
    c1.stop().await;

    // Restarted, twice over: two collectors on the one database.
    let again = || TestDb {
        options: options.clone(),
        url_file: url_file.clone(),
    };
    let c2 = Collector::start_on(again(), &flags).await;
    let c3 = Collector::start_on(again(), &flags).await;
    let log = hook.wait_for(&key, 3, StdDuration::from_secs(40)).await;
    let of_key: Vec<u16> = log.iter().filter(|l| l.0 == key).map(|l| l.1).collect();
    assert_eq!(&of_key[..3], [500, 500, 200], "{log:?}");
    // A few more ticks: the acknowledged delivery is never sent again.
    tokio::time::sleep(scheduler::TICK * 3).await;
    let log = hook.log();
    let mut ok_per_key: HashMap<&str, usize> = HashMap::new();
    for (k, status, _) in &log {
        if *status == 200 {
            *ok_per_key.entry(k.as_str()).or_default() += 1;
        }
    }
    assert!(
        ok_per_key.values().all(|n| *n == 1),
        "each report acknowledged once: {log:?}"
    );
    assert_eq!(log.iter().filter(|l| l.0 == key).count(), 3, "{log:?}");
    let ok_body = &log
        .iter()
        .find(|l| l.0 == key && l.1 == 200)
        .expect("delivered")
        .2;
    assert!(
        ok_body.contains("\"text\"") && ok_body.contains("\"report\""),
        "{ok_body}"
    );

    // The next minute's report, built on time by one of the two collectors and
    // delivered once as well.
    let t = Instant::now();
    let second = loop {
        let log = hook.log();
        if let Some(k) = log.iter().map(|l| l.0.clone()).find(|k| *k != key) {
            break k;
        }
        assert!(
            t.elapsed() < StdDuration::from_secs(90),
            "no second report: {log:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    };
    let log = hook.wait_for(&second, 3, StdDuration::from_secs(40)).await;
    let of_second: Vec<u16> = log.iter().filter(|l| l.0 == second).map(|l| l.1).collect();
    assert_eq!(of_second, [500, 500, 200], "{log:?}");
    let pool = c2.db().await;
    let (end, built): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT window_end, generated_at FROM reports WHERE report_id = $1")
            .bind(
                second
                    .trim_start_matches("finwait-report-")
                    .parse::<i64>()
                    .expect("id"),
            )
            .fetch_one(&pool)
            .await
            .expect("second report");
    assert!(
        built >= end && built - end < Duration::seconds(20),
        "built {built} for a window ending {end}: on time within two ticks"
    );
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM reports GROUP BY schedule, window_end HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(dup, 0);
    let states: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT label, state, attempts FROM report_deliveries WHERE report_id = $1 ORDER BY label",
    )
    .bind(
        key.trim_start_matches("finwait-report-")
            .parse::<i64>()
            .expect("id"),
    )
    .fetch_all(&pool)
    .await
    .expect("deliveries");
    assert_eq!(
        states,
        [
            (format!("dir:{}", out.display()), "delivered".to_owned(), 1),
            (
                format!("webhook:http://{}", hook.addr),
                "delivered".to_owned(),
                3
            )
        ]
    );
    let files: Vec<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("minutely-") && f.ends_with(".html")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with(".csv")), "{files:?}");
    c2.stop().await;
    c3.stop().await;
}

//! `finwait-bench history`: query latency over a day of a fleet's history.
//!
//! Builds a synthetic fleet (by default 1,000 hosts over 24 h, a few million ended
//! lifetimes, per-minute counts, a few hundred leaks on 20 leaking processes; see
//! `history/fleet.sql`) straight into the PostgreSQL of a collector built in-process
//! (`App::build`, embedded cluster, migrations), then times over HTTP, interleaved run
//! by run, each API question against its peer: the hand-written SQL an operator would
//! run through `psql` instead (`history/peer/*.sql`). Reports p50/p95 per question, the
//! answers' sizes and the finwait/peer ratio of medians. Timings are figures to read,
//! not a test: nothing fails on a slow answer, only on a wrong or empty one.
//!
//! Runs as root (PostgreSQL then runs as an unprivileged user) or as anyone else.

mod fleet;
mod http;
mod pages;
mod queries;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use finwait_collector::app::{self, App};
use finwait_collector::config::Config;
use tracing::{info, warn};

use self::fleet::Shape;
use self::queries::{FLOOR_SQL, NAMES, Query, Targets};

/// Marks a scratch directory as this bench's, so a later run may remove it.
const MARKER: &str = ".finwait-bench-history";
/// Longest wait for one answer, either side.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);
/// Server-side limit on one peer statement.
const PEER_STATEMENT_TIMEOUT_MS: u32 = 60_000;
/// The latency target of the issue, milliseconds at p95.
const TARGET_P95_MS: f64 = 100.0;

/// finwait-bench history: generate a fleet's history in PostgreSQL and time the
/// collector's query API against hand-written SQL through psql.
#[derive(Debug, Parser)]
#[command(name = "finwait-bench history")]
struct Flags {
    /// Hosts in the fleet (host-0001, host-0002, ...); a quarter of them are apps.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(8..=100_000))]
    hosts: u32,
    /// Hours of history, ending now.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(4..=240))]
    hours: u32,
    /// Ended connections per client host and hour (each leaves 3-5 lifetimes).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=3600))]
    conns_per_hour: u32,
    /// Leaking server processes, one per app host (at most hosts/4).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=25_000))]
    leaky: u32,
    /// Leaked connections per leaking process.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    leaks_per: u32,
    /// Timed runs of every query (and of its peer).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    runs: u32,
    /// Untimed runs of every query first (connections, plans, caches).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    warmup: u32,
    /// Queries to time, comma separated: leaks, groups, who, who-at, sockets-at, hosts,
    /// timeline, report (default: all but report, a whole trend report over the
    /// history: time it alone with a few --runs).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
    /// Stop timing after this many seconds; the runs done so far are reported.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
    /// Scratch directory (cluster, peer SQL); must not exist, or be one this bench made.
    /// Default: $TMPDIR/finwait-bench-history.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// After the results, keep the collector and PostgreSQL serving until Ctrl-C (for
    /// EXPLAIN and curl), then keep the directory: `finwait-collector
    /// --insecure-loopback --data-dir DIR` serves the same data again.
    #[arg(long)]
    keep: bool,
}

/// Timings of one query and its peer.
#[derive(Debug, Default)]
struct Sample {
    finwait_ms: Vec<f64>,
    peer_ms: Vec<f64>,
    rows: usize,
    more: bool,
    peer_rows: usize,
}

/// Nearest-rank percentile (`p` in 0..=100) of `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The psql of the newest installed PostgreSQL, else the one on PATH.
fn psql() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin/psql");
            p.exists().then_some((v, p))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map_or_else(|| PathBuf::from("psql"), |(_, p)| p)
}

/// Makes (or, when it is ours, empties) the scratch directory.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by this bench; give another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("peer"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "finwait-bench history scratch directory\n",
    )?;
    Ok(())
}

/// Runs one peer query through psql; returns its wall time (ms) and output rows.
async fn run_peer(
    psql: &Path,
    url: &str,
    file: &Path,
    vars: &[(&str, String)],
) -> Result<(f64, usize)> {
    let mut cmd = tokio::process::Command::new(psql);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    cmd.arg("-f")
        .arg(file)
        .arg(url)
        .env(
            "PGOPTIONS",
            format!("-c statement_timeout={PEER_STATEMENT_TIMEOUT_MS}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let t = Instant::now();
    let out = tokio::time::timeout(ANSWER_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{}: psql gave no answer in time", file.display()))?
        .with_context(|| format!("running {}", psql.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "peer {} failed ({}): {}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let rows = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    Ok((ms, rows))
}

/// Asks finwait once; returns its wall time (ms), rows and whether more pages follow.
async fn run_finwait(addr: SocketAddr, q: &Query) -> Result<(f64, usize, bool)> {
    let t = Instant::now();
    let r = http::get(addr, &q.path, ANSWER_TIMEOUT).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if r.status != 200 {
        bail!(
            "GET {} answered HTTP {}: {}",
            q.path,
            r.status,
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(500)
                .collect::<String>()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .with_context(|| format!("GET {}: the answer is not JSON", q.path))?;
    let rows = v
        .get(q.list)
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("GET {}: the answer has no `{}` list", q.path, q.list))?
        .len();
    let more = v.get("next_page_token").is_some_and(|t| !t.is_null());
    Ok((ms, rows, more))
}

/// Runs the history bench.
pub fn run(args: &[String]) -> Result<()> {
    let flags = match Flags::try_parse_from(
        std::iter::once("finwait-bench history".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(f) => f,
        Err(e) => e.exit(),
    };
    if flags.leaky > flags.hosts / 4 {
        bail!(
            "--leaky {} is more than the {} app hosts of --hosts {}",
            flags.leaky,
            flags.hosts / 4,
            flags.hosts
        );
    }
    if let Some(bad) = flags.queries.iter().find(|q| !NAMES.contains(&q.as_str())) {
        bail!(
            "--queries: unknown query {bad:?}; known: {}",
            NAMES.join(", ")
        );
    }
    // The collector would take its database from these; the bench writes its synthetic
    // fleet into a database of its own, never into one named by the environment.
    for var in ["DATABASE_URL", "FINWAIT_DATABASE_URL_FILE"] {
        if std::env::var_os(var).is_some() {
            bail!("unset {var}: the bench generates its fleet in its own embedded PostgreSQL");
        }
    }
    finwait_collector::telemetry::init(
        finwait_collector::telemetry::LogFormat::Text,
        // sqlx's slow-statement warnings quote whole queries; the table says it better.
        "info,sqlx=error",
    );
    let dir = flags
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("finwait-bench-history"));
    prepare_dir(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench(&flags, &dir));
    if !flags.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench(flags: &Flags, dir: &Path) -> Result<()> {
    let t = Instant::now();
    let config = Config::try_parse_from([
        "finwait-collector",
        "--listen",
        "127.0.0.1:0",
        "--insecure-loopback",
        // Scheduled reports would compete with the timed questions.
        "--no-reports",
        "--data-dir",
        &dir.join("collector").to_string_lossy(),
    ])
    .context("collector configuration")?;
    let app = App::build(config).await.context("building the collector")?;
    let (addr, url) = (app.addr(), app.database_url().to_owned());
    info!(
        seconds = format!("{:.1}", t.elapsed().as_secs_f64()),
        "collector built (embedded postgresql, migrations)"
    );

    let shape = Shape {
        hosts: flags.hosts,
        hours: flags.hours,
        conns_per_hour: flags.conns_per_hour,
        leaky: flags.leaky,
        leaks_per: flags.leaks_per,
    };
    info!(?shape, "generating the fleet");
    let generated = fleet::generate(&url, &shape).await?;
    info!(
        seconds = format!("{:.1}", generated.seconds),
        "fleet generated"
    );
    let targets = Targets::pick(&url, flags.hosts, flags.hours).await?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let timed = time_queries(flags, dir, addr, &url, &targets, &generated).await;
    if timed.is_ok() && flags.keep {
        println!();
        println!("kept serving until Ctrl-C:");
        println!("  API        http://{addr}/api/v1/leaks");
        println!("  database   {} '{url}'", psql().display());
        app::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    serving
        .await
        .context("collector task")?
        .context("collector stopped with an error")?;
    if flags.keep {
        println!(
            "kept {}; serve it again with: finwait-collector --insecure-loopback --data-dir {}",
            dir.display(),
            dir.join("collector").display()
        );
    }
    timed
}

async fn time_queries(
    flags: &Flags,
    dir: &Path,
    addr: SocketAddr,
    url: &str,
    targets: &Targets,
    generated: &fleet::Generated,
) -> Result<()> {
    let psql = psql();
    let selected: Vec<Query> = queries::all(targets)
        .into_iter()
        .filter(|q| {
            // A whole report is seconds, not milliseconds: only when asked for.
            (flags.queries.is_empty() && q.name != "report")
                || flags.queries.iter().any(|n| n == q.name)
        })
        .collect();
    for q in &selected {
        std::fs::write(dir.join("peer").join(q.peer_file), q.peer_sql)?;
    }
    let floor_file = dir.join("peer").join("floor.sql");
    std::fs::write(&floor_file, FLOOR_SQL)?;

    let mut samples: Vec<Sample> = selected.iter().map(|_| Sample::default()).collect();
    let mut floor = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(flags.max_seconds);
    let total = flags.warmup + flags.runs;
    let mut timed_runs = 0;
    info!(
        runs = flags.runs,
        warmup = flags.warmup,
        queries = selected.len(),
        endpoint = %targets.endpoint(),
        host = %targets.host,
        "timing finwait and its peers, interleaved"
    );
    for run in 0..total {
        if Instant::now() > deadline {
            warn!(
                timed_runs,
                max_seconds = flags.max_seconds,
                "time is up; reporting the runs done"
            );
            break;
        }
        let timed = run >= flags.warmup;
        for (q, s) in selected.iter().zip(samples.iter_mut()) {
            let (ms, rows, more) = run_finwait(addr, q).await?;
            let peer_file = dir.join("peer").join(q.peer_file);
            let (pms, prows) = run_peer(&psql, url, &peer_file, &q.peer_vars).await?;
            if timed {
                s.finwait_ms.push(ms);
                s.peer_ms.push(pms);
            }
            (s.rows, s.more, s.peer_rows) = (rows, more, prows);
        }
        let (fms, _) = run_peer(&psql, url, &floor_file, &[]).await?;
        if timed {
            floor.push(fms);
            timed_runs += 1;
        }
        if (run + 1) % 10 == 0 {
            info!(run = run + 1, of = total, "runs done");
        }
    }
    // Timings of empty answers prove nothing: the fleet is built so these are not empty.
    for (q, s) in selected.iter().zip(&samples) {
        let must = match q.name {
            "leaks" | "groups" => generated.leaks.total > 0,
            "who" | "hosts" | "timeline" => true,
            "report" => generated.leaks.total > 0,
            _ => false,
        };
        if s.rows == 0 && timed_runs > 0 {
            if must {
                bail!(
                    "GET {} answered an empty `{}` ({} leaks were planted)",
                    q.path,
                    q.list,
                    generated.leaks.total
                );
            }
            warn!(query = q.name, "empty answer: its timing shows little");
        }
    }
    report(
        flags, targets, generated, &selected, &samples, &floor, timed_runs,
    );
    if flags.queries.is_empty() {
        let leak = pages::a_leak(addr).await?;
        let list = pages::all(targets, &leak);
        info!(
            pages = list.len(),
            "timing the dashboard's pages beside their API answers"
        );
        let (warmup, runs) = (flags.warmup as usize, flags.runs as usize);
        let timed = pages::time(addr, &list, warmup, runs, deadline).await?;
        let load = pages::first_load(addr).await?;
        report_pages(&list, &timed, &load);
    }
    Ok(())
}

/// The pages' table: page time beside the API answer of the same question, and the
/// overview's first load.
fn report_pages(list: &[pages::Page], timed: &[pages::Sample], load: &[(String, usize)]) {
    println!();
    println!(
        "  {:<11} {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>10}",
        "page", "KiB", "p50 ms", "p95 ms", "API p50", "API p95", "page/API"
    );
    let mut over = Vec::new();
    for (p, s) in list.iter().zip(timed) {
        let (p50, p95) = (percentile(&s.page_ms, 50.0), percentile(&s.page_ms, 95.0));
        let (a50, a95) = (percentile(&s.api_ms, 50.0), percentile(&s.api_ms, 95.0));
        println!(
            "  {:<11} {:>9.1} {:>9.1} {:>9.1} | {:>9.1} {:>9.1} | {:>10.2}",
            p.name,
            s.bytes as f64 / 1024.0,
            p50,
            p95,
            a50,
            a95,
            p50 / a50
        );
        if p95 >= TARGET_P95_MS {
            over.push(format!("{} ({p95:.0} ms)", p.name));
        }
    }
    println!(
        "  target p95 < {TARGET_P95_MS:.0} ms: {}",
        if over.is_empty() {
            "every page within".to_owned()
        } else {
            format!("over for {}", over.join(", "))
        }
    );
    let total: usize = load.iter().map(|(_, b)| b).sum();
    let parts: Vec<String> = load
        .iter()
        .map(|(u, b)| format!("{u} {:.1}", *b as f64 / 1024.0))
        .collect();
    println!(
        "  overview first load: {:.1} KiB (target < 300 KB): {}",
        total as f64 / 1024.0,
        parts.join(", ")
    );
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report(
    flags: &Flags,
    targets: &Targets,
    g: &fleet::Generated,
    selected: &[Query],
    samples: &[Sample],
    floor: &[f64],
    runs: u32,
) {
    println!(
        "finwait-bench history: {} hosts, {} h of history, {} timed runs per query after {} warm-up (interleaved with the peer)",
        flags.hosts, flags.hours, runs, flags.warmup
    );
    println!(
        "  data generated in {:.1} s; database {:.0} MiB",
        g.seconds,
        mib(g.database_bytes)
    );
    for t in &g.tables {
        println!(
            "    {:<18} {:>10} rows  {:>8.1} MiB",
            t.name,
            t.rows,
            mib(t.bytes)
        );
    }
    let steps: Vec<String> = g.steps.iter().map(|(n, s)| format!("{n} {s:.1}")).collect();
    println!("    steps (s): {}", steps.join(", "));
    let l = &g.leaks;
    println!(
        "  leaks planted: {} CLOSE_WAIT on {} processes ({} open exact, {} open with a half-closed peer, {} ended exact, {} one-sided, {} nat)",
        l.total,
        flags.leaky,
        l.open_exact,
        l.open_half_closed_peer,
        l.ended_exact,
        l.one_sided,
        l.nat
    );
    println!(
        "  who endpoint {}, at = {}h ago; sockets/timeline host {}, at = {}h ago",
        targets.endpoint(),
        targets.who_at_h,
        targets.host,
        targets.sockets_at_h
    );
    println!();
    println!(
        "  {:<11} {:>7} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>12}",
        "query",
        "rows",
        "p50 ms",
        "p95 ms",
        "max ms",
        "peer rows",
        "peer p50",
        "peer p95",
        "finwait/peer"
    );
    let mut over = Vec::new();
    for (q, s) in selected.iter().zip(samples) {
        let (p50, p95) = (
            percentile(&s.finwait_ms, 50.0),
            percentile(&s.finwait_ms, 95.0),
        );
        let max = percentile(&s.finwait_ms, 100.0);
        let (pp50, pp95) = (percentile(&s.peer_ms, 50.0), percentile(&s.peer_ms, 95.0));
        let rows = format!("{}{}", s.rows, if s.more { "+" } else { "" });
        println!(
            "  {:<11} {:>7} {:>9.1} {:>9.1} {:>9.1} | {:>9} {:>9.1} {:>9.1} | {:>12.2}",
            q.name,
            rows,
            p50,
            p95,
            max,
            s.peer_rows,
            pp50,
            pp95,
            p50 / pp50
        );
        if p95 >= TARGET_P95_MS {
            over.push(format!("{} ({p95:.0} ms)", q.name));
        }
    }
    println!();
    println!(
        "  peer floor: psql start-up + connect + SELECT 1, p50 {:.1} ms (inside every peer figure)",
        percentile(floor, 50.0)
    );
    println!(
        "  target p95 < {TARGET_P95_MS:.0} ms: {}",
        if over.is_empty() {
            "every query within".to_owned()
        } else {
            format!("over for {}", over.join(", "))
        }
    );
    if g.leaks.total > 0
        && let Some((_, s)) = selected
            .iter()
            .zip(samples)
            .find(|(q, _)| q.name == "leaks")
        && s.rows as i64 != g.leaks.total
    {
        println!(
            "  note: /leaks returned {} leaks, {} were planted",
            s.rows, g.leaks.total
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}

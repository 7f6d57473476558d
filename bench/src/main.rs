//! `finwait-bench`: measures finwait against the tools a user would pick instead, in
//! the same run, on a population of real sockets in a private network namespace.
//!
//! `finwait-bench agent [--sockets N] [--runs R]` builds ~N sockets (mostly
//! ESTABLISHED pairs, some CLOSE_WAIT, FIN_WAIT2 and TIME_WAIT, spread over worker
//! processes), then times, interleaved R times each: `finwait-agent snapshot` (with
//! owners), `ss -tanp` and `ss -tan`, all printing to /dev/null. It prints medians and
//! ratios, the agent's peak RSS, and the median cost of a steady-state cycle (second and
//! later cycles, owner cache warm) from the agent's own `--stats`.
//!
//! `finwait-bench ingest` plays many agents against the release collector and raw
//! COPY of the same rows; `finwait-bench wire` compares delta and full-table bytes.
//! `finwait-bench history [--hosts N] [--hours H] [--runs R] [--keep] ...` times the
//! query API (leaks, groups, who, sockets, hosts, timeline) over a generated day of a
//! 1,000-host fleet against hand-written SQL through psql (`history --help`).
//!
//! `finwait-bench fleet` plays N real agents (default 10,000 x 1,000 sockets) in one
//! process against the release collector: acks/s, latency, CPU, memory, backlog and a
//! thundering herd after a collector restart (`fleet.rs`).
//!
//! Needs root (namespaces) and a release build: `cargo build --release --workspace`.
//! Timings on shared machines are noisy: read the medians and ratios, not one run.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use finwait_testkit::{NetNs, Sockpop, workspace_bin};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs a command with stdout to /dev/null and returns its wall time in seconds.
fn time(program: &Path, args: &[&str]) -> Result<f64> {
    let t = Instant::now();
    let st = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    let s = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{} {args:?} failed: {st}", program.display());
    }
    Ok(s)
}

/// Per-cycle stats of `finwait-agent snapshot --repeat N --stats`.
fn steady_state(agent: &Path, cycles: u32) -> Result<(Vec<f64>, Vec<u64>, u64)> {
    let out = Command::new(agent)
        .args(["snapshot", "--stats", "--repeat", &cycles.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        bail!(
            "agent --repeat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cycle_s = Vec::new();
    let mut links = Vec::new();
    let mut peak = 0;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(p) = v.get("process") {
            peak = p["peak_rss_kib"].as_u64().unwrap_or(0);
        } else if let Some(c) = v.get("cycle_us") {
            cycle_s.push(c.as_u64().unwrap_or(0) as f64 / 1e6);
            links.push(v["fd_links_read"].as_u64().unwrap_or(0));
        }
    }
    Ok((cycle_s, links, peak))
}

fn agent_bench(args: &[String]) -> Result<()> {
    let mut sockets = 100_000usize;
    let mut runs = 5usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sockets" => sockets = it.next().context("--sockets N")?.parse()?,
            "--runs" => runs = it.next().context("--runs R")?.parse()?,
            other => {
                bail!("unknown flag {other}; usage: finwait-bench agent [--sockets N] [--runs R]")
            }
        }
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the bench needs root to create a network namespace: run it as root");
    }
    let agent = workspace_bin("finwait-agent")?;
    if !agent.to_string_lossy().contains("/release/") {
        eprintln!(
            "warning: {} is not a release build; figures mean little",
            agent.display()
        );
    }
    let ss = PathBuf::from("/usr/bin/ss");
    let ns = NetNs::create("bench")?;
    // Enter the namespace on this thread: every child spawned from it lives there too.
    let f = File::open(format!("/run/netns/{}", ns.name()))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;

    let t = Instant::now();
    let pop = Sockpop::start(
        None,
        &[
            "--max-seconds",
            "900",
            "bulk",
            "--sockets",
            &sockets.to_string(),
        ],
    )?;
    eprintln!("population: {}", pop.manifest);
    let made = pop.manifest["sockets"].as_u64().unwrap_or(0);
    eprintln!(
        "built {} sockets in {:.1}s",
        made,
        t.elapsed().as_secs_f64()
    );

    let (mut a, mut p, mut n) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        a.push(time(&agent, &["snapshot"])?);
        p.push(time(&ss, &["-tanp"])?);
        n.push(time(&ss, &["-tan"])?);
        eprintln!(
            "run {}/{runs}: agent {:.3}s  ss -tanp {:.3}s  ss -tan {:.3}s",
            r + 1,
            a[r],
            p[r],
            n[r]
        );
    }
    let (mut cycles, links, peak) = steady_state(&agent, 6)?;
    let first = cycles.first().copied().unwrap_or(f64::NAN);
    let mut warm: Vec<f64> = cycles.split_off(1.min(cycles.len()));
    let (ma, mp, mn, mw) = (
        median(&mut a),
        median(&mut p),
        median(&mut n),
        median(&mut warm),
    );
    println!(
        "finwait-bench agent: {} sockets, {runs} runs each, medians",
        made
    );
    println!("  finwait-agent snapshot (owners)  {ma:>8.3}s");
    println!(
        "  ss -tanp (owners)                {mp:>8.3}s   agent is {:.1}x faster (target >= 10x)",
        mp / ma
    );
    println!(
        "  ss -tan  (no owners)             {mn:>8.3}s   agent / ss -tan = {:.2} (target <= 1.3)",
        ma / mn
    );
    println!("  agent cycle, cold (in-process)   {first:>8.3}s");
    println!(
        "  agent cycle, steady state        {mw:>8.3}s   / ss -tan = {:.2} (target <= 1.0); links read per warm cycle: {:?}",
        mw / mn,
        links.get(1..).unwrap_or(&[])
    );
    println!(
        "  agent peak RSS                   {:>8.1} MiB (target < 64)",
        peak as f64 / 1024.0
    );
    drop(pop);
    drop(ns);
    Ok(())
}

mod agent_cpu;
mod fleet;
mod history;
mod ingest;
mod service;
mod wire;

const USAGE: &str = "usage: finwait-bench agent [--sockets N] [--runs R]\n\
       finwait-bench ingest [--agents N] [--sockets M] [--deltas D] [--churn F]\n\
       finwait-bench wire [--sockets N] [--churn F]\n\
       finwait-bench agent-cpu [--sockets N] [--seconds S] [--interval I] [--callgrind FILE]\n\
       finwait-bench history [--hosts N] [--hours H] [--runs R] [--keep] (see history --help)\n\
       finwait-bench fleet [--agents N] [--sockets M] [--interval S] [--churn F] [--seconds S] [--ramp S] ...";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("agent") => agent_bench(&args[1..]),
        Some("ingest") => ingest::run(&args[1..]),
        Some("wire") => wire::run(&args[1..]),
        Some("agent-cpu") => agent_cpu::run(&args[1..]),
        // Internal: the floor process `agent-cpu` starts in its namespace.
        Some("netlink-floor") => agent_cpu::floor(&args[1..]),
        Some("history") => history::run(&args[1..]),
        Some("fleet") => fleet::run(&args[1..]),
        _ => bail!("{USAGE}"),
    }
}

//! `finwait-bench agent-cpu`: the agent's CPU per cycle in `run` mode (sample, delta,
//! encode, send) on a population of real sockets, with a real collector, and the
//! collector's peak RSS.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use finwait_testkit::{NetNs, Sockpop, workspace_bin};

use crate::service::{Service, peak_rss_mib};

/// utime + stime of a process, in milliseconds.
fn cpu_ms(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .context("stat")?;
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let t = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(t * 1000 / ticks)
}

/// Runs the agent CPU bench.
pub fn run(args: &[String]) -> Result<()> {
    let (mut sockets, mut seconds, mut interval) = (10_000usize, 30u64, 1.0f64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--sockets" => sockets = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            "--interval" => interval = v.parse()?,
            other => bail!(
                "unknown flag {other}; usage: finwait-bench agent-cpu [--sockets N] [--seconds S] [--interval I]"
            ),
        }
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the bench needs root (namespaces, PostgreSQL as an unprivileged user)");
    }
    let ns = NetNs::create("cpu")?;
    let max = (seconds + 120).to_string();
    let pop = Sockpop::start(
        Some(&ns),
        &[
            "--max-seconds",
            &max,
            "bulk",
            "--sockets",
            &sockets.to_string(),
        ],
    )?;
    let svc = Service::start("cpu", &["finwait"], Some(&ns), &[])?;
    // The agent as deployed, with its spool (one fdatasync per cycle), in a directory
    // of its own.
    let spool = std::env::temp_dir().join(format!("finwait-bench-spool-{}", std::process::id()));
    let mut agent = ns
        .command(workspace_bin("finwait-agent")?)
        .args([
            "run",
            "--insecure-loopback",
            "--interval",
            &interval.to_string(),
            "--collector",
            &format!("http://{}", svc.addr),
        ])
        .arg("--spool-dir")
        .arg(&spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Skip the first cycles (cold owner cache, full table), then measure.
    std::thread::sleep(Duration::from_secs_f64(interval * 3.0));
    let c0 = cpu_ms(agent.id())?;
    std::thread::sleep(Duration::from_secs(seconds));
    let c1 = cpu_ms(agent.id())?;
    let agent_rss = peak_rss_mib(agent.id());
    let collector_rss = svc.collector_peak_rss_mib();
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&spool);
    drop(svc);
    let manifest = pop.manifest.clone();
    pop.end();
    let cycles = seconds as f64 / interval;
    let per_cycle = (c1 - c0) as f64 / cycles;
    println!("finwait-bench agent-cpu: {manifest}");
    println!("  agent CPU per cycle (steady)  {per_cycle:>8.1} ms   over {cycles:.0} cycles");
    println!(
        "  at a 10 s interval            {:>8.3} % of one core (target <= 0.5 %)",
        per_cycle / 10_000.0 * 100.0
    );
    println!("  agent peak RSS                {agent_rss:>8.1} MiB");
    println!("  collector peak RSS            {collector_rss:>8.1} MiB");
    Ok(())
}

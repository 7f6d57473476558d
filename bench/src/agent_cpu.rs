//! `finwait-bench agent-cpu`: the agent's CPU per cycle in `run` mode (sample, delta,
//! encode, send) on a population of real sockets, with a real collector, against its
//! floor measured in the same run: a process that only dumps the same namespace's
//! table through netlink sock_diag (same request, both families, nothing decoded) at
//! the same interval. Also the agent's and the collector's peak RSS.
//!
//! `--callgrind FILE` runs the agent under `valgrind --tool=callgrind` with
//! instrumentation switched on only after the warm-up, so FILE holds the steady
//! cycles' instruction counts (user space only: the kernel's share is the floor's).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use finwait_agent::netlink::{DiagSocket, Family, for_each_record};
use finwait_testkit::{NetNs, Sockpop, workspace_bin};

use crate::service::{Service, peak_rss_mib};

/// CPU time of a process so far, in milliseconds: (user, system).
fn cpu_ms(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .context("stat")?;
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((field(11) * 1000 / ticks, field(12) * 1000 / ticks))
}

/// CPU used by a process between two readings, per cycle, in ms: (user, system).
fn per_cycle(before: (u64, u64), after: (u64, u64), cycles: f64) -> (f64, f64) {
    (
        after.0.saturating_sub(before.0) as f64 / cycles,
        after.1.saturating_sub(before.1) as f64 / cycles,
    )
}

/// Stops a child we started, by its pid.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Runs the agent CPU bench.
pub fn run(args: &[String]) -> Result<()> {
    let (mut sockets, mut seconds, mut interval) = (10_000usize, 30u64, 1.0f64);
    let mut callgrind: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--sockets" => sockets = v.parse().context("--sockets N")?,
            "--seconds" => seconds = v.parse().context("--seconds S")?,
            "--interval" => interval = v.parse().context("--interval I (seconds)")?,
            "--callgrind" => callgrind = Some(PathBuf::from(v)),
            other => bail!(
                "unknown flag {other}; usage: finwait-bench agent-cpu [--sockets N] [--seconds S] \
                 [--interval I] [--callgrind FILE]"
            ),
        }
    }
    if !(0.1..=60.0).contains(&interval) {
        bail!("--interval must be between 0.1 and 60 seconds");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the bench needs root (namespaces, PostgreSQL as an unprivileged user)");
    }
    let ns = NetNs::create("cpu")?;
    // Under callgrind (uninstrumented until the warm-up ends) start-up is slower.
    let warm_up = if callgrind.is_some() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs_f64(interval * 3.0)
    };
    let max = (seconds + warm_up.as_secs() + 120).to_string();
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
    let agent_bin = workspace_bin("finwait-agent")?;
    let mut cmd = match &callgrind {
        Some(out) => {
            let mut c = ns.command("valgrind");
            c.args(["--tool=callgrind", "--instr-atstart=no"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&agent_bin);
            c
        }
        None => ns.command(&agent_bin),
    };
    let mut agent = cmd
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
        .spawn()
        .context("starting finwait-agent")?;
    let mut floor = ns
        .command(std::env::current_exe().context("own executable")?)
        .args([
            "netlink-floor",
            "--interval",
            &interval.to_string(),
            "--max-seconds",
            &max,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the netlink floor")?;
    // Skip the first cycles (cold owner cache, full table), then measure.
    std::thread::sleep(warm_up);
    if callgrind.is_some() {
        let st = Command::new("callgrind_control")
            .args(["-i", "on", &agent.id().to_string()])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("callgrind_control -i on failed: {st}");
        }
    }
    let (a0, f0) = (cpu_ms(agent.id())?, cpu_ms(floor.id())?);
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, f1) = (cpu_ms(agent.id())?, cpu_ms(floor.id())?);
    let agent_rss = peak_rss_mib(agent.id());
    let collector_rss = svc.collector_peak_rss_mib();
    stop(&mut agent);
    stop(&mut floor);
    let _ = std::fs::remove_dir_all(&spool);
    drop(svc);
    let manifest = pop.manifest.clone();
    pop.end();
    let cycles = seconds as f64 / interval;
    let (au, asys) = per_cycle(a0, a1, cycles);
    let (fu, fsys) = per_cycle(f0, f1, cycles);
    let (agent_ms, floor_ms) = (au + asys, fu + fsys);
    println!("finwait-bench agent-cpu: {manifest}");
    println!(
        "  agent CPU per cycle (steady)  {agent_ms:>8.1} ms   (user {au:.1}, system {asys:.1}) over {cycles:.0} cycles"
    );
    println!(
        "  bare netlink dump (floor)     {floor_ms:>8.1} ms   (user {fu:.1}, system {fsys:.1}) same table, same run"
    );
    println!(
        "  agent / floor                 {:>8.2}      (target <= 2.0)",
        agent_ms / floor_ms
    );
    println!(
        "  at a 10 s interval            {:>8.3} % of one core (target <= 0.3 %)",
        agent_ms / 10_000.0 * 100.0
    );
    if callgrind.is_some() {
        println!("  (under callgrind: CPU figures and RSS are valgrind's, not the agent's)");
    }
    println!("  agent peak RSS                {agent_rss:>8.1} MiB (target < 64)");
    println!("  collector peak RSS            {collector_rss:>8.1} MiB");
    Ok(())
}

/// `finwait-bench netlink-floor --interval I --max-seconds S` (started by `agent-cpu`
/// inside its namespace): dumps the TCP table of both families every interval, as the
/// agent's cycle does, walking the records without decoding them, until killed or S
/// seconds have passed.
pub fn floor(args: &[String]) -> Result<()> {
    let (mut interval, mut max_seconds) = (1.0f64, 300u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--interval" => interval = v.parse().context("--interval I")?,
            "--max-seconds" => max_seconds = v.parse().context("--max-seconds S")?,
            other => bail!("unknown flag {other}"),
        }
    }
    let mut sock = DiagSocket::open()?;
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let mut records = 0u64;
    while Instant::now() < deadline {
        for fam in [Family::V4, Family::V6] {
            sock.dump_raw(fam, &mut |buf| {
                for_each_record(buf, &mut |_| {
                    records += 1;
                    Ok(())
                })
            })?;
        }
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
    // Keeps the walk from being optimised away.
    println!("{records}");
    Ok(())
}

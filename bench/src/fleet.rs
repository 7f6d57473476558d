//! `finwait-bench fleet`: N agents of M sockets each, in this one process, over real
//! gRPC to the release collector and its PostgreSQL, every agent the real agent's
//! sampler, outbox and sender ([`finwait_agent::fleet`]) on a synthetic table: a full
//! table on connect, then a delta every interval (±10 %) replacing a fraction of the
//! sockets, per-state counts every cycle.
//!
//! Phases, all in one run: warm-up (every agent connected and its first full table
//! acknowledged), a steady state of `--seconds` sampled every 5 s (acks/s, rows/s, ack
//! latency p50/p99, collector CPU and peak RSS, PostgreSQL CPU summed over its
//! processes, this process's CPU, outbox totals: is the backlog flat?), then a
//! thundering herd: the collector is restarted (SIGTERM, started again on the same
//! port) and the time until every agent is connected again and has an acknowledgement
//! from the new collector is measured.
//!
//! The simulator shares the machine with the collector and PostgreSQL: its own CPU is
//! reported so the figures can be read for what they are. It raises its open-file
//! limit to the hard limit (one descriptor per agent here and one in the collector,
//! which inherits the limit) and spreads connections over several loopback source
//! addresses (127.0.0.1..=127.0.0.K) so ephemeral ports never run out.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use finwait_agent::config::Config;
use finwait_agent::delta::TimeWaitMode;
use finwait_agent::fleet::{Fleet, FleetConfig, FleetStatus};
use finwait_agent::sampler::SamplerConfig;
use finwait_proto::v1 as pb;

use crate::service::{Service, peak_rss_mib};

const USAGE: &str = "usage: finwait-bench fleet [--agents N] [--sockets M] [--interval S] [--churn F] \
[--seconds S] [--ramp S] [--source-addrs K] [--warmup-timeout S] [--herd-timeout S] [--no-herd] \
[--collector-flags A,B]";

/// Bench parameters.
struct Params {
    agents: usize,
    sockets: usize,
    interval: f64,
    churn: f64,
    seconds: u64,
    ramp: f64,
    source_addrs: u8,
    warmup_timeout: u64,
    herd_timeout: u64,
    herd: bool,
    collector_flags: Vec<String>,
}

fn parse(args: &[String]) -> Result<Params> {
    let mut p = Params {
        agents: 10_000,
        sockets: 1_000,
        interval: 10.0,
        churn: 0.01,
        seconds: 120,
        ramp: 30.0,
        source_addrs: 4,
        warmup_timeout: 900,
        herd_timeout: 900,
        herd: true,
        collector_flags: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--no-herd" {
            p.herd = false;
            continue;
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a value; {USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{a} {v}: {e}");
        match a.as_str() {
            "--agents" => p.agents = v.parse().map_err(|e| bad(&e))?,
            "--sockets" => p.sockets = v.parse().map_err(|e| bad(&e))?,
            "--interval" => p.interval = v.parse().map_err(|e| bad(&e))?,
            "--churn" => p.churn = v.parse().map_err(|e| bad(&e))?,
            "--seconds" => p.seconds = v.parse().map_err(|e| bad(&e))?,
            "--ramp" => p.ramp = v.parse().map_err(|e| bad(&e))?,
            "--source-addrs" => p.source_addrs = v.parse().map_err(|e| bad(&e))?,
            "--warmup-timeout" => p.warmup_timeout = v.parse().map_err(|e| bad(&e))?,
            "--herd-timeout" => p.herd_timeout = v.parse().map_err(|e| bad(&e))?,
            "--collector-flags" => {
                p.collector_flags = v.split(',').map(str::to_owned).collect();
            }
            other => bail!("unknown flag {other}; {USAGE}"),
        }
    }
    if p.agents == 0 || p.seconds == 0 || p.source_addrs == 0 {
        bail!("--agents, --seconds and --source-addrs must be at least 1");
    }
    if !(0.0..=1.0).contains(&p.churn) {
        bail!("--churn {} must be between 0 and 1", p.churn);
    }
    if !(p.ramp >= 0.0 && p.ramp < 86_400.0) {
        bail!("--ramp {} must be between 0 and 86400 seconds", p.ramp);
    }
    Ok(p)
}

/// Raises the soft open-file limit to the hard one; fails when even that cannot hold
/// the fleet (agents here, and as many in the collector, which inherits it).
fn raise_nofile(agents: usize) -> Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: lim.maximum,
        },
    )
    .context("raising RLIMIT_NOFILE to its hard limit")?;
    let need = agents as u64 + 1_024;
    if hard < need {
        bail!(
            "{agents} agents need about {need} open files in this process and in the collector; \
             the hard limit is {hard} (raise it with ulimit -Hn as a privileged user, or play fewer agents)"
        );
    }
    Ok(hard)
}

/// CPU seconds of a process (user + system), with its reaped children's when `children`.
pub(crate) fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command: state (0), ppid (1), ... utime (11), stime (12), cutime (13), cstime (14).
    let ticks = f.get(11).copied().unwrap_or(0)
        + f.get(12).copied().unwrap_or(0)
        + if children {
            f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0)
        } else {
            0
        };
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// The parent of a process, from /proc.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of PostgreSQL: the postmaster with its reaped children, plus every live
/// child (backends, background workers).
pub(crate) fn postgres_cpu(postmaster: u32) -> f64 {
    let mut total = cpu_seconds(postmaster, true);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if ppid(pid) == Some(postmaster) {
                total += cpu_seconds(pid, false);
            }
        }
    }
    total
}

/// Current RSS of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Waits (bounded) until `done` holds, printing progress every 5 s.
async fn until(
    what: &str,
    timeout: Duration,
    fleet: &Fleet,
    mut done: impl FnMut(&Fleet) -> bool,
) -> Option<Duration> {
    let t = Instant::now();
    let mut last = Instant::now();
    while t.elapsed() < timeout {
        if done(fleet) {
            return Some(t.elapsed());
        }
        if last.elapsed() >= Duration::from_secs(5) {
            let s = fleet.status();
            eprintln!(
                "  {what}: {:>5.0}s connected {}/{} acks {} pushbacks {} other ends {} outbox {} batches {:.1} MiB",
                t.elapsed().as_secs_f64(),
                s.connected,
                s.agents,
                s.acks,
                s.pushbacks,
                s.other_ends,
                s.outbox_batches,
                s.outbox_bytes as f64 / 1048576.0
            );
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// One sample of the steady state.
struct Tick {
    at: f64,
    status: FleetStatus,
    collector_cpu: f64,
    postgres_cpu: f64,
    bench_cpu: f64,
}

/// Runs the fleet bench.
pub fn run(args: &[String]) -> Result<()> {
    let p = parse(args)?;
    if !rustix::process::geteuid().is_root() {
        bail!("the bench runs PostgreSQL as an unprivileged user: run it as root");
    }
    let nofile = raise_nofile(p.agents)?;
    let conns = (p.agents * 2 + 256).to_string();
    let mut flags: Vec<String> = vec![
        "--max-connections".into(),
        conns.clone(),
        "--max-streams".into(),
        conns,
    ];
    flags.extend(p.collector_flags.iter().cloned());
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut svc = Service::start("fleet", &["fleet"], None, &flag_refs)?;
    let postmaster = svc
        .postmaster_pid()
        .context("PostgreSQL's postmaster pid")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?;
    let template = Config {
        collector: format!("http://{}", svc.addr),
        interval: Duration::from_secs_f64(p.interval),
        token: None,
        ca: None,
        insecure_loopback: true,
        buffer_bytes: 64 << 20,
        time_wait: TimeWaitMode::Summarise,
        sampler: SamplerConfig::default(),
        identity: pb::HostIdentity {
            boot_id: "fleet-boot".into(),
            ephemeral_port_low: 32768,
            ephemeral_port_high: 60999,
            ..Default::default()
        },
        instance_id: String::new(),
        // In-process members keep their batches in memory (no spool).
        spool: None,
        metrics_listen: None,
    };
    let sources: Vec<IpAddr> = (1..=p.source_addrs)
        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
        .collect();
    println!(
        "finwait-bench fleet: {} agents x {} sockets, interval {} s (±10 %), churn {:.1} %, steady state {} s; \
         open-file limit {nofile}, {} source addresses; load average at start {}",
        p.agents,
        p.sockets,
        p.interval,
        p.churn * 100.0,
        p.seconds,
        sources.len(),
        load()
    );
    rt.block_on(async {
        let t0 = Instant::now();
        let fleet = Fleet::start(FleetConfig {
            template,
            agents: p.agents,
            sockets: p.sockets,
            churn: p.churn,
            source_addrs: sources,
            ramp: Duration::from_secs_f64(p.ramp),
            name: "fleet".into(),
        })?;
        let warm = until(
            "warm-up",
            Duration::from_secs(p.warmup_timeout),
            &fleet,
            |f| {
                f.members()
                    .iter()
                    .all(|m| m.probe.acks.load(std::sync::atomic::Ordering::Relaxed) > 0)
            },
        )
        .await;
        let s = fleet.status();
        match warm {
            Some(d) => println!(
                "  warm-up: every agent connected and its full table acknowledged after {:.1} s (ramp {} s); {} pushbacks",
                d.as_secs_f64(),
                p.ramp,
                s.pushbacks
            ),
            None => println!(
                "  warm-up: NOT complete after {} s: {} of {} agents acknowledged; measuring anyway",
                p.warmup_timeout,
                fleet
                    .members()
                    .iter()
                    .filter(|m| m.probe.acks.load(std::sync::atomic::Ordering::Relaxed) > 0)
                    .count(),
                p.agents
            ),
        }

        // Steady state.
        let me = std::process::id();
        let cpid = svc.collector.id();
        let lat0 = fleet.latency().snapshot();
        let mut ticks = Vec::new();
        let start = Instant::now();
        let sample = |fleet: &Fleet, at: f64| Tick {
            at,
            status: fleet.status(),
            collector_cpu: cpu_seconds(cpid, true),
            postgres_cpu: postgres_cpu(postmaster),
            bench_cpu: cpu_seconds(me, true),
        };
        ticks.push(sample(&fleet, 0.0));
        println!("  steady state (every 5 s): t  acks/s  rows/s  collector%  postgres%  bench%  connected  outbox-batches  outbox-MiB  max-outbox-KiB  pushbacks");
        while start.elapsed() < Duration::from_secs(p.seconds) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let t = sample(&fleet, start.elapsed().as_secs_f64());
            let prev = ticks.last().expect("one tick at least");
            let dt = t.at - prev.at;
            println!(
                "    {:>5.0} {:>7.0} {:>8.0} {:>9.0}% {:>9.0}% {:>6.0}% {:>9} {:>14} {:>11.1} {:>14.0} {:>10}",
                t.at,
                (t.status.acks - prev.status.acks) as f64 / dt,
                (t.status.rows - prev.status.rows) as f64 / dt,
                100.0 * (t.collector_cpu - prev.collector_cpu) / dt,
                100.0 * (t.postgres_cpu - prev.postgres_cpu) / dt,
                100.0 * (t.bench_cpu - prev.bench_cpu) / dt,
                t.status.connected,
                t.status.outbox_batches,
                t.status.outbox_bytes as f64 / 1048576.0,
                t.status.max_outbox_bytes as f64 / 1024.0,
                t.status.pushbacks,
            );
            ticks.push(t);
        }
        let (first, last) = (&ticks[0], ticks.last().expect("ticks"));
        let dt = last.at - first.at;
        let lat = fleet.latency();
        let q = |x| {
            lat.quantile_since(&lat0, x)
                .map_or("n/a".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        };
        let acks = (last.status.acks - first.status.acks) as f64;
        // Flat backlog: the outbox total in the second half is not half a batch per agent
        // above the first half's.
        let half = ticks.len() / 2;
        let mean = |t: &[Tick]| {
            t.iter().map(|x| x.status.outbox_batches as f64).sum::<f64>() / t.len().max(1) as f64
        };
        let (b1, b2) = (mean(&ticks[1..half.max(2)]), mean(&ticks[half.max(1)..]));
        let expected = p.agents as f64 / p.interval;
        println!("  steady state over {dt:.0} s:");
        println!(
            "    acks/s                {:>10.0}   (offered: {expected:.0}/s, one batch per agent per interval)",
            acks / dt
        );
        println!(
            "    rows/s                {:>10.0}",
            (last.status.rows - first.status.rows) as f64 / dt
        );
        println!("    ack latency p50/p99   {:>10} / {}", q(0.5), q(0.99));
        println!(
            "    collector CPU         {:>9.0} %   of one core; RSS now {:.0} MiB, peak {:.0} MiB",
            100.0 * (last.collector_cpu - first.collector_cpu) / dt,
            rss_mib(cpid),
            peak_rss_mib(cpid)
        );
        println!(
            "    PostgreSQL CPU        {:>9.0} %   (postmaster and every backend)",
            100.0 * (last.postgres_cpu - first.postgres_cpu) / dt
        );
        println!(
            "    simulator CPU         {:>9.0} %   (this process: {} agents' sampling, diffing, encoding, gRPC); RSS {:.0} MiB",
            100.0 * (last.bench_cpu - first.bench_cpu) / dt,
            p.agents,
            rss_mib(me)
        );
        println!(
            "    backlog               {:>10.2} -> {:.2} queued batches per agent (first half -> second half): {}",
            b1 / p.agents as f64,
            b2 / p.agents as f64,
            // Growing: half a batch more per agent in the second half than in the first.
            if b2 <= b1 + p.agents as f64 * 0.5 { "flat" } else { "GROWING" }
        );
        println!(
            "    shed (pushbacks)      {:>10}   other stream ends {}; outbox drops {}; load average {}",
            last.status.pushbacks - first.status.pushbacks,
            last.status.other_ends - first.status.other_ends,
            last.status.dropped,
            load()
        );

        if p.herd {
            let before: Vec<u64> = fleet
                .members()
                .iter()
                .map(|m| m.probe.acks.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            let pushbacks0 = fleet.status().pushbacks;
            let restarted = Instant::now();
            svc.restart_collector()?;
            let up = restarted.elapsed();
            let back = until("herd", Duration::from_secs(p.herd_timeout), &fleet, |f| {
                f.members().iter().zip(&before).all(|(m, b)| {
                    m.probe.connected.load(std::sync::atomic::Ordering::Relaxed)
                        && m.probe.acks.load(std::sync::atomic::Ordering::Relaxed) > *b
                })
            })
            .await;
            let s = fleet.status();
            match back {
                Some(d) => println!(
                    "  thundering herd: collector restarted (SIGTERM, same port) in {:.1} s; every agent connected and acknowledged again {:.1} s after the restart began; {} pushbacks during it; collector peak RSS {:.0} MiB",
                    up.as_secs_f64(),
                    (up + d).as_secs_f64(),
                    s.pushbacks - pushbacks0,
                    peak_rss_mib(svc.collector.id())
                ),
                None => println!(
                    "  thundering herd: NOT every agent back after {} s: {} connected; {} pushbacks",
                    p.herd_timeout,
                    s.connected,
                    s.pushbacks - pushbacks0
                ),
            }
        }
        let left = fleet.stop(Duration::from_secs(10)).await;
        println!(
            "  stopped: {left} batches unacknowledged at the end; whole run {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    })?;
    drop(rt);
    drop(svc);
    Ok(())
}

//! `finwait-bench wire`: bytes on the wire per cycle at a given churn, delta against
//! full table, with the agent's own delta engine and encoder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use finwait_agent::delta::{self, Table, TimeWaitMode};
use finwait_agent::sampler::{CycleStats, Sample};
use finwait_agent::socket::{Owner, Process, Socket, TcpState};
use finwait_agent::wire;
use prost::Message;

fn socket(i: usize, procs: &[Arc<Process>]) -> Socket {
    let state = [
        TcpState::Established,
        TcpState::Established,
        TcpState::CloseWait,
        TcpState::Listen,
    ][i % 4];
    Socket {
        netns: 4_026_531_840,
        cookie: Some(i as u64 + 1),
        state,
        local: SocketAddr::from(([10, 0, 0, 1], if i.is_multiple_of(2) { 443 } else { 5432 })),
        remote: SocketAddr::from((
            [10, 200, (i >> 8) as u8, i as u8],
            1024 + (i % 60_000) as u16,
        )),
        inode: 100_000 + i as u64,
        uid: 1000,
        rx_queue: 0,
        tx_queue: 0,
        timer: None,
        owners: Arc::from([Owner {
            process: Arc::clone(&procs[i / 500 % procs.len()]),
            fd: 3 + (i % 500) as u32,
        }]),
    }
}

/// Runs the wire bench.
pub fn run(args: &[String]) -> Result<()> {
    let (mut n, mut churn) = (10_000usize, 0.01f64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--sockets" => n = v.parse()?,
            "--churn" => churn = v.parse()?,
            other => {
                bail!("unknown flag {other}; usage: finwait-bench wire [--sockets N] [--churn F]")
            }
        }
    }
    let procs: Vec<Arc<Process>> = (0..n.div_ceil(500))
        .map(|k| {
            Arc::new(Process {
                pid: 1000 + k as u32,
                start_ticks: 1,
                comm: "java".into(),
                cmdline: "/usr/bin/java -jar /srv/app/service.jar".into(),
                cgroup: "/system.slice/billing.service".into(),
                hostname: String::new(),
            })
        })
        .collect();
    let old: Vec<Socket> = (0..n).map(|i| socket(i, &procs)).collect();
    let k = ((n as f64 * churn).round() as usize).max(1);
    // Churn: k sockets go, k new ones come.
    let new: Vec<Socket> = (k..n + k).map(|i| socket(i, &procs)).collect();
    let meta = Sample {
        taken_at: SystemTime::now(),
        sockets: Vec::new(),
        namespaces: Vec::new(),
        stats: CycleStats::default(),
    };
    let counts = Default::default();
    let old_t = Table::from_sockets(old, TimeWaitMode::Summarise);
    let new_t = Table::from_sockets(new, TimeWaitMode::Summarise);
    let full = wire::batch(
        1,
        1,
        &meta,
        wire::Sockets::Full(new_t.sockets.values().collect()),
        &[],
        &counts,
    )
    .encoded_len();
    let d = delta::diff(&old_t, &new_t);
    let delta_bytes =
        wire::batch(1, 2, &meta, wire::Sockets::Delta(&d), &[], &counts).encoded_len();
    println!(
        "finwait-bench wire: {n} sockets, {:.1} % churn ({} added, {} removed)",
        churn * 100.0,
        d.added.len(),
        d.removed.len()
    );
    println!("  full table   {full:>10} bytes");
    println!(
        "  delta        {delta_bytes:>10} bytes   = {:.2} % of the full table (target <= 5 %)",
        100.0 * delta_bytes as f64 / full as f64
    );
    Ok(())
}

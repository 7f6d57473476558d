//! `finwait-bench ingest`: many agents' full tables and deltas through a real collector
//! into PostgreSQL, against raw COPY of the same rows into the same indexed table, in
//! the same run, alternating round by round so that machine noise hits both alike; a
//! full table again after an agent restart (mostly unchanged: the merge path); plus the
//! collector's peak RSS. Raw COPY leaves `pair_key` NULL: the collector computes it.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use finwait_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::service::Service;

/// Bench parameters.
struct Params {
    agents: usize,
    sockets: usize,
    deltas: usize,
    churn: f64,
    /// Sockets per full-table chunk, as the agent sends them (0: one message).
    chunk: usize,
    /// Extra collector flags, comma-separated (e.g. --ingest-memory-bytes,268435456).
    collector_flags: Vec<String>,
    /// Rounds of (collector full tables, raw COPY), each into new hosts.
    rounds: usize,
}

fn parse(args: &[String]) -> Result<Params> {
    let mut p = Params {
        agents: 8,
        sockets: 20_000,
        deltas: 10,
        churn: 0.01,
        chunk: finwait_agent::wire::CHUNK_SOCKETS,
        collector_flags: Vec::new(),
        rounds: 3,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--agents" => p.agents = v.parse()?,
            "--sockets" => p.sockets = v.parse()?,
            "--deltas" => p.deltas = v.parse()?,
            "--churn" => p.churn = v.parse()?,
            "--chunk" => p.chunk = v.parse()?,
            "--rounds" => p.rounds = v.parse::<usize>()?.max(1),
            "--collector-flags" => {
                p.collector_flags = v.split(',').map(str::to_owned).collect();
            }
            other => bail!(
                "unknown flag {other}; usage: finwait-bench ingest [--agents N] [--sockets M] [--deltas D] [--churn F] [--chunk SOCKETS] [--rounds R] [--collector-flags A,B]"
            ),
        }
    }
    Ok(p)
}

const STATES: [pb::TcpState; 4] = [
    pb::TcpState::Established,
    pb::TcpState::Established,
    pb::TcpState::CloseWait,
    pb::TcpState::TimeWait,
];

/// A realistic-looking socket: server port 443 or 5432, client ephemeral ports, one
/// owning process per 500 sockets.
fn socket(agent: usize, i: usize) -> pb::Socket {
    let host = [10, (agent >> 8) as u8, agent as u8, 1];
    let peer = [10, 200, (i >> 16) as u8, (i >> 8) as u8];
    pb::Socket {
        netns: 4_026_531_840,
        cookie: Some((agent as u64) << 40 | i as u64),
        state: STATES[i % STATES.len()] as i32,
        local: Some(pb::Endpoint {
            addr: host.to_vec(),
            port: if i.is_multiple_of(2) { 443 } else { 5432 },
        }),
        remote: Some(pb::Endpoint {
            addr: peer.to_vec(),
            port: 1024 + (i % 60_000) as u32,
        }),
        inode: 100_000 + i as u64,
        uid: 1000,
        owners: vec![pb::Owner {
            pid: 1000 + (i / 500) as u32,
            fd: 3 + (i % 500) as u32,
        }],
        ..Default::default()
    }
}

fn processes(n: usize) -> Vec<pb::Process> {
    (0..n.div_ceil(500))
        .map(|k| pb::Process {
            pid: 1000 + k as u32,
            start_ticks: 1,
            comm: "java".into(),
            cmdline: "/usr/bin/java -Xmx4g -jar /srv/app/service.jar --port 443".into(),
            cgroup: "/system.slice/billing.service".into(),
            hostname: String::new(),
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One agent's stream: hello (as host `name`, its run `epoch`), then each batch
/// awaited for its ack.
async fn play(addr: String, name: String, epoch: u64, batches: Vec<pb::Batch>) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = pb::ingest_client::IngestClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            host: Some(pb::HostIdentity {
                hostname: name.clone(),
                machine_id: format!("{name}-machine"),
                boot_id: "b".into(),
                ephemeral_port_low: 32768,
                ephemeral_port_high: 60999,
                ..Default::default()
            }),
            epoch,
            instance_id: format!("{name}-{epoch}"),
        })),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    inbound.message().await?.context("welcome")?;
    for b in batches {
        let (seq, more) = (b.seq, b.more_chunks);
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Batch(b)),
        })
        .await?;
        if more {
            // One ack, after the table's last chunk.
            continue;
        }
        match inbound.message().await?.and_then(|m| m.body) {
            Some(pb::collector_message::Body::Ack(a)) if a.seq == seq => {}
            other => bail!("agent {name} batch {seq}: {other:?}"),
        }
    }
    Ok(())
}

/// Plays agent `a`'s batches as host `{prefix}-{a}` in run `epoch`, every agent at
/// once; the seconds until the last is acknowledged.
async fn run_agents(
    addr: &str,
    prefix: &str,
    epoch: u64,
    per_agent: Vec<Vec<pb::Batch>>,
) -> Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = per_agent
        .into_iter()
        .enumerate()
        .map(|(i, b)| tokio::spawn(play(addr.to_owned(), format!("{prefix}-{i}"), epoch, b)))
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// COPY text of the rows the collector writes for `agent`'s full table.
fn copy_text(host_id: i64, agent: usize, n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n * 160);
    for i in 0..n {
        let s = socket(agent, i);
        let ip = |e: &Option<pb::Endpoint>| {
            e.as_ref()
                .map(|e| format!("{}.{}.{}.{}", e.addr[0], e.addr[1], e.addr[2], e.addr[3]))
                .unwrap_or_default()
        };
        let port = |e: &Option<pb::Endpoint>| e.as_ref().map_or(0, |e| e.port);
        let o = &s.owners[0];
        out.push_str(&format!(
            "{host_id}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t0\t0\t0\t[{{\"pid\": {}, \"fd\": {}, \"comm\": \"java\", \"cmdline\": \"/usr/bin/java -Xmx4g -jar /srv/app/service.jar --port 443\"}}]\t2026-11-23 00:00:00+00\n",
            s.netns,
            s.cookie.unwrap_or(0) as i64,
            s.cookie.unwrap_or(0) as i64,
            s.state,
            ip(&s.local),
            port(&s.local),
            ip(&s.remote),
            port(&s.remote),
            s.inode,
            s.uid,
            o.pid,
            o.fd,
        ));
    }
    out.into_bytes()
}

async fn raw_copy(
    db: sqlx::postgres::PgConnectOptions,
    round: usize,
    agents: usize,
    sockets: usize,
) -> Result<f64> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(agents as u32)
        .connect_with(db)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    let mut ids = Vec::new();
    for a in 0..agents {
        let id: i64 = sqlx::query_scalar("INSERT INTO hosts (machine_id, hostname, boot_id) VALUES ($1, $2, 'b') RETURNING host_id")
            .bind(format!("copy-machine-{round}-{a}"))
            .bind(format!("copy-{round}-{a}"))
            .fetch_one(&pool)
            .await?;
        ids.push(id);
    }
    let texts: Vec<Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(a, &id)| copy_text(id, a, sockets))
        .collect();
    let t = Instant::now();
    let tasks: Vec<_> = texts
        .into_iter()
        .map(|text| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                let mut copy = conn
                    .copy_in_raw(
                        "COPY current_sockets (host_id, netns, sock_key, cookie, state, local_addr, local_port, \
                         remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen) FROM STDIN",
                    )
                    .await?;
                copy.send(text).await?;
                copy.finish().await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let s = t.elapsed().as_secs_f64();
    pool.close().await;
    Ok(s)
}

/// Agent `a`'s full table of `sockets`, taken at `at` in run `epoch`, chunked as the
/// agent would.
fn full_table(a: usize, sockets: usize, epoch: u64, at: i64, chunk: usize) -> Vec<pb::Batch> {
    let table = pb::Batch {
        epoch,
        seq: 1,
        taken_at_ms: at,
        payload: Some(pb::batch::Payload::Full(pb::FullTable {
            sockets: (0..sockets).map(|i| socket(a, i)).collect(),
        })),
        processes: processes(sockets),
        ..Default::default()
    };
    if chunk == 0 {
        vec![table]
    } else {
        finwait_agent::wire::chunks(table, chunk)
    }
}

/// CPU seconds so far of the collector, PostgreSQL (every process) and this bench.
#[derive(Clone, Copy)]
struct Cpu {
    collector: f64,
    postgres: f64,
    bench: f64,
}

impl Cpu {
    fn now(svc: &Service) -> Cpu {
        Cpu {
            collector: crate::fleet::cpu_seconds(svc.collector.id(), true),
            postgres: svc.postmaster_pid().map_or(0.0, crate::fleet::postgres_cpu),
            bench: crate::fleet::cpu_seconds(std::process::id(), true),
        }
    }

    /// The CPU used since `before`.
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            collector: self.collector - before.collector,
            postgres: self.postgres - before.postgres,
            bench: self.bench - before.bench,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the ingest bench.
pub fn run(args: &[String]) -> Result<()> {
    let p = parse(args)?;
    if !rustix::process::geteuid().is_root() {
        bail!("the bench runs PostgreSQL as an unprivileged user: run it as root");
    }
    let flags: Vec<&str> = p.collector_flags.iter().map(String::as_str).collect();
    let svc = Service::start("ingest", &["ingest", "copyraw"], None, &flags)?;
    let idle_rss = svc.collector_peak_rss_mib();
    let rt = tokio::runtime::Runtime::new()?;
    let t0 = now_ms() - 3_600_000;
    let full_rows = (p.agents * p.sockets) as f64;

    // Rounds of (collector, raw COPY), each into hosts of its own, so that a noisy
    // moment hits both sides of one ratio alike.
    let (mut full_s, mut copy_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_cpu, mut copy_cpu) = (Vec::new(), Vec::new());
    for round in 0..p.rounds {
        let fulls: Vec<Vec<pb::Batch>> = (0..p.agents)
            .map(|a| full_table(a, p.sockets, 1, t0, p.chunk))
            .collect();
        let before = Cpu::now(&svc);
        let f = rt.block_on(run_agents(&svc.addr, &format!("bench-{round}"), 1, fulls))?;
        let between = Cpu::now(&svc);
        full_cpu.push(between.since(before));
        let c = rt.block_on(raw_copy(
            svc.connect_options("copyraw")?,
            round,
            p.agents,
            p.sockets,
        ))?;
        copy_cpu.push(Cpu::now(&svc).since(between));
        eprintln!(
            "round {}/{}: collector {f:.2}s  raw COPY {c:.2}s  ratio {:.2}",
            round + 1,
            p.rounds,
            c / f
        );
        full_s.push(f);
        copy_s.push(c);
        ratios.push(c / f);
    }
    let full_rss = svc.collector_peak_rss_mib();
    // Deltas and the restart go to the last round's hosts.
    let last = format!("bench-{}", p.rounds - 1);

    let churn = ((p.sockets as f64 * p.churn).round() as usize).max(1);
    let deltas: Vec<Vec<pb::Batch>> = (0..p.agents)
        .map(|a| {
            (0..p.deltas)
                .map(|d| {
                    let first_new = p.sockets + d * churn;
                    pb::Batch {
                        epoch: 1,
                        seq: 2 + d as u64,
                        taken_at_ms: t0 + 10_000 * (d as i64 + 1),
                        payload: Some(pb::batch::Payload::Delta(pb::Delta {
                            added: (first_new..first_new + churn)
                                .map(|i| socket(a, i))
                                .collect(),
                            removed: (d * churn..(d + 1) * churn)
                                .map(|i| pb::SocketKey {
                                    netns: 4_026_531_840,
                                    cookie: socket(a, i).cookie,
                                    ..Default::default()
                                })
                                .collect(),
                            changed: vec![],
                        })),
                        processes: processes(p.sockets + (p.deltas + 1) * churn),
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect();
    let delta_rows = (p.agents * p.deltas * churn * 2) as f64;
    let delta_s = rt.block_on(run_agents(&svc.addr, &last, 1, deltas))?;

    // Every agent restarts (a new run) and sends its first table again: most of it is
    // what the host already holds, the rest (the deltas' churn) opens and ends lifetimes.
    let again: Vec<Vec<pb::Batch>> = (0..p.agents)
        .map(|a| {
            full_table(
                a,
                p.sockets,
                2,
                t0 + 10_000 * (p.deltas as i64 + 1),
                p.chunk,
            )
        })
        .collect();
    let again_s = rt.block_on(run_agents(&svc.addr, &last, 2, again))?;
    let rss = svc.collector_peak_rss_mib();

    println!(
        "finwait-bench ingest: {} agents x {} sockets, {} rounds, {} deltas of {:.1} % churn each",
        p.agents,
        p.sockets,
        p.rounds,
        p.deltas,
        p.churn * 100.0
    );
    let (mf, mc) = (median(full_s), median(copy_s));
    println!(
        "  collector, full tables      {:>10.0} rows/s  (median of {} rounds, {full_rows} rows each)",
        full_rows / mf,
        p.rounds
    );
    println!(
        "  raw COPY, same rows/table   {:>10.0} rows/s  (median; {} connections)",
        full_rows / mc,
        p.agents
    );
    println!(
        "  collector / raw COPY        {:>10.2}   (median of the rounds' ratios; target >= 0.8)",
        median(ratios)
    );
    let cpu = |v: &[Cpu], f: fn(&Cpu) -> f64| median(v.iter().map(f).collect());
    println!(
        "  CPU s per round (median)    collector {:.2} + PostgreSQL {:.2} + bench {:.2};  raw COPY: PostgreSQL {:.2} + bench {:.2}",
        cpu(&full_cpu, |c| c.collector),
        cpu(&full_cpu, |c| c.postgres),
        cpu(&full_cpu, |c| c.bench),
        cpu(&copy_cpu, |c| c.postgres),
        cpu(&copy_cpu, |c| c.bench),
    );
    println!(
        "  collector, deltas           {:>10.0} rows/s  ({delta_rows} lifetime rows opened+ended in {delta_s:.2}s)",
        delta_rows / delta_s
    );
    println!(
        "  collector, table after a restart {:>5.0} rows/s  ({full_rows} rows, {:.0} % of them unchanged, in {again_s:.2}s)",
        full_rows / again_s,
        100.0 - (p.deltas * churn) as f64 * 100.0 / p.sockets as f64
    );
    println!(
        "  collector peak RSS          {rss:>10.1} MiB  (idle {idle_rss:.1}, after the full tables {full_rss:.1}; chunks of {} sockets)",
        p.chunk
    );
    Ok(())
}

//! `finwait-bench ingest`: many agents' full tables and deltas through a real collector
//! into PostgreSQL, against raw COPY of the same rows into the same indexed table, in
//! the same run; plus the collector's peak RSS.

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
}

fn parse(args: &[String]) -> Result<Params> {
    let mut p = Params {
        agents: 8,
        sockets: 20_000,
        deltas: 10,
        churn: 0.01,
        chunk: finwait_agent::wire::CHUNK_SOCKETS,
        collector_flags: Vec::new(),
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
            "--collector-flags" => {
                p.collector_flags = v.split(',').map(str::to_owned).collect();
            }
            other => bail!(
                "unknown flag {other}; usage: finwait-bench ingest [--agents N] [--sockets M] [--deltas D] [--churn F] [--chunk SOCKETS] [--collector-flags A,B]"
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

/// One agent's stream: hello, then each batch awaited for its ack.
async fn play(addr: String, agent: usize, batches: Vec<pb::Batch>) -> Result<()> {
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
                hostname: format!("bench-{agent}"),
                machine_id: format!("bench-machine-{agent}"),
                boot_id: "b".into(),
                ephemeral_port_low: 32768,
                ephemeral_port_high: 60999,
                ..Default::default()
            }),
            epoch: 1,
            instance_id: format!("bench-{agent}"),
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
            other => bail!("agent {agent} batch {seq}: {other:?}"),
        }
    }
    Ok(())
}

async fn run_agents(addr: &str, per_agent: Vec<Vec<pb::Batch>>) -> Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = per_agent
        .into_iter()
        .enumerate()
        .map(|(i, b)| tokio::spawn(play(addr.to_owned(), i, b)))
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
            .bind(format!("copy-machine-{a}"))
            .bind(format!("copy-{a}"))
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
    let fulls: Vec<Vec<pb::Batch>> = (0..p.agents)
        .map(|a| {
            let table = pb::Batch {
                epoch: 1,
                seq: 1,
                taken_at_ms: t0,
                payload: Some(pb::batch::Payload::Full(pb::FullTable {
                    sockets: (0..p.sockets).map(|i| socket(a, i)).collect(),
                })),
                processes: processes(p.sockets),
                ..Default::default()
            };
            if p.chunk == 0 {
                vec![table]
            } else {
                finwait_agent::wire::chunks(table, p.chunk)
            }
        })
        .collect();
    let full_rows = (p.agents * p.sockets) as f64;
    let full_s = rt.block_on(run_agents(&svc.addr, fulls))?;
    let full_rss = svc.collector_peak_rss_mib();

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
    let delta_s = rt.block_on(run_agents(&svc.addr, deltas))?;
    let rss = svc.collector_peak_rss_mib();
    let copy_s = rt.block_on(raw_copy(
        svc.connect_options("copyraw")?,
        p.agents,
        p.sockets,
    ))?;

    println!(
        "finwait-bench ingest: {} agents x {} sockets, {} deltas of {:.1} % churn each",
        p.agents,
        p.sockets,
        p.deltas,
        p.churn * 100.0
    );
    println!(
        "  collector, full tables      {:>10.0} rows/s  ({full_rows} rows in {full_s:.2}s)",
        full_rows / full_s
    );
    println!(
        "  raw COPY, same rows/table   {:>10.0} rows/s  ({full_rows} rows in {copy_s:.2}s, {} connections)",
        full_rows / copy_s,
        p.agents
    );
    println!(
        "  collector / raw COPY        {:>10.2}   (target >= 0.70)",
        copy_s / full_s
    );
    println!(
        "  collector, deltas           {:>10.0} rows/s  ({delta_rows} lifetime rows opened+ended in {delta_s:.2}s)",
        delta_rows / delta_s
    );
    println!(
        "  collector peak RSS          {rss:>10.1} MiB  (idle {idle_rss:.1}, after the full tables {full_rss:.1}; chunks of {} sockets)",
        p.chunk
    );
    Ok(())
}

//! The agent's own `/metrics` (Prometheus text format), served only when
//! `--metrics-listen ADDR` is given.
//!
//! Deliberately small: the figures live in process-wide atomics ([`AGENT`]) that the
//! sampler and sender bump once per cycle or per reconnect, the queue figures are read
//! from the outbox when scraped, the spool's are copied at the end of each cycle (on
//! the cycle's blocking thread: the spool's lock may be held across a sync, so a
//! scrape never takes it), and the text is written by hand. No metrics crate, no
//! HTTP framework: a scrape costs one short-lived task and a few hundred bytes, and the
//! steady cycle pays a handful of relaxed atomic adds. The server answers `GET
//! /metrics` over HTTP/1.1, one request per connection, with bounded request size,
//! read time and concurrent connections.
//!
//! Everything here is an aggregate (counts, bytes, durations): no address, port,
//! process or command line, so it needs no token; keep it on loopback or a node
//! address that only the scraper reaches.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::run::Shared;

/// Upper bounds (seconds) of the cycle and owner-scan histograms.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket histogram in atomics (microsecond sum, so no float CAS).
#[derive(Debug)]
pub struct Histogram {
    /// One count per bound plus one above them all (not cumulative).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation of `us` microseconds.
    pub fn record_us(&self, us: u64) {
        let secs = us as f64 / 1e6;
        let i = BUCKETS.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The agent's figures. One agent runs per process, so they are process-wide.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Cycles that produced a batch.
    pub cycles_ok: AtomicU64,
    /// Cycles whose table read failed.
    pub cycles_failed: AtomicU64,
    /// Whole-cycle durations.
    pub cycle: Histogram,
    /// Owner-scan durations.
    pub owner_scan: Histogram,
    /// Sockets in the last cycle.
    pub sockets: AtomicU64,
    /// Streams that ended and will be retried.
    pub reconnects: AtomicU64,
    /// 1 while a stream is open past the collector's welcome.
    pub connected: AtomicU64,
    /// The spool's figures as of the last cycle: bytes, records, dropped, torn,
    /// unspooled (all 0 without a spool).
    pub spool: [AtomicU64; 5],
}

/// The process's figures.
pub static AGENT: AgentMetrics = AgentMetrics {
    cycles_ok: AtomicU64::new(0),
    cycles_failed: AtomicU64::new(0),
    cycle: Histogram::new(),
    owner_scan: Histogram::new(),
    sockets: AtomicU64::new(0),
    reconnects: AtomicU64::new(0),
    connected: AtomicU64::new(0),
    spool: [const { AtomicU64::new(0) }; 5],
};

/// Copies the spool's figures (called by the cycle, after it queued its batch).
pub fn spool_seen(stats: Option<crate::spool::SpoolStats>) {
    let s = stats.unwrap_or_default();
    for (cell, v) in AGENT
        .spool
        .iter()
        .zip([s.bytes, s.records, s.dropped, s.torn, s.unspooled])
    {
        cell.store(v, Ordering::Relaxed);
    }
}

/// Records one successful cycle's account.
pub fn cycle_done(stats: &crate::sampler::CycleStats) {
    AGENT.cycles_ok.fetch_add(1, Ordering::Relaxed);
    AGENT.cycle.record_us(stats.cycle_us);
    AGENT.owner_scan.record_us(stats.owner_scan_us);
    AGENT.sockets.store(stats.sockets, Ordering::Relaxed);
}

/// The queue figures read from the outbox when scraped, and the spool's bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct Queue {
    /// The spool's bound in bytes (`--spool-max-bytes`; 0 without a spool).
    pub spool_limit_bytes: u64,
    /// Unacknowledged batches.
    pub batches: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// The outbox's bound in bytes (--buffer-mib).
    pub limit_bytes: u64,
    /// Batches dropped since start (buffer full, or refused as invalid).
    pub dropped: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The whole exposition.
pub fn render(m: &AgentMetrics, q: Queue) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    family(
        o,
        "finwait_agent_cycles_total",
        "counter",
        "Sampling cycles, by result: ok (a batch was queued) or failed (the table could not be read)",
    );
    let _ = writeln!(
        o,
        "finwait_agent_cycles_total{{result=\"failed\"}} {}",
        load(&m.cycles_failed)
    );
    let _ = writeln!(
        o,
        "finwait_agent_cycles_total{{result=\"ok\"}} {}",
        load(&m.cycles_ok)
    );
    family(
        o,
        "finwait_agent_cycle_seconds",
        "histogram",
        "Duration of a sampling cycle (table dump and owner scan)",
    );
    m.cycle.write(o, "finwait_agent_cycle_seconds");
    family(
        o,
        "finwait_agent_owner_scan_seconds",
        "histogram",
        "Duration of a cycle's owner scan (/proc/PID/fd)",
    );
    m.owner_scan.write(o, "finwait_agent_owner_scan_seconds");
    one(
        o,
        "finwait_agent_sockets",
        "gauge",
        "Sockets read in the last cycle, every state",
        load(&m.sockets),
    );
    one(
        o,
        "finwait_agent_outbox_batches",
        "gauge",
        "Batches queued and not yet acknowledged by the collector",
        q.batches,
    );
    one(
        o,
        "finwait_agent_outbox_bytes",
        "gauge",
        "Encoded bytes of the unacknowledged batches",
        q.bytes,
    );
    one(
        o,
        "finwait_agent_outbox_limit_bytes",
        "gauge",
        "Bound of the unacknowledged-batch buffer (--buffer-mib)",
        q.limit_bytes,
    );
    one(
        o,
        "finwait_agent_batches_dropped_total",
        "counter",
        "Batches dropped unacknowledged (buffer full, or refused by the collector as invalid); a full table follows",
        q.dropped,
    );
    let [bytes, records, dropped, torn, unspooled] = m.spool.each_ref().map(load);
    one(
        o,
        "finwait_agent_spool_bytes",
        "gauge",
        "Size of the disk spool's segment files (0 without a spool)",
        bytes,
    );
    one(
        o,
        "finwait_agent_spool_limit_bytes",
        "gauge",
        "Bound of the disk spool (--spool-max-bytes; 0 without a spool)",
        q.spool_limit_bytes,
    );
    one(
        o,
        "finwait_agent_spool_records",
        "gauge",
        "Batches in the spool not yet acknowledged",
        records,
    );
    one(
        o,
        "finwait_agent_spool_dropped_total",
        "counter",
        "Spooled batches dropped unacknowledged to stay within the spool's byte or age bound",
        dropped,
    );
    one(
        o,
        "finwait_agent_spool_torn_total",
        "counter",
        "Torn or corrupt spool records found at start-up and cut off",
        torn,
    );
    one(
        o,
        "finwait_agent_spool_unspooled_total",
        "counter",
        "Batches that could not be written to the spool (kept in memory only)",
        unspooled,
    );
    one(
        o,
        "finwait_agent_reconnects_total",
        "counter",
        "Streams to the collector that ended and were retried",
        load(&m.reconnects),
    );
    one(
        o,
        "finwait_agent_connected",
        "gauge",
        "1 while a stream to the collector is open (welcomed), else 0",
        load(&m.connected),
    );
    let usage = crate::usage::ProcessUsage::current();
    one(
        o,
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size of the agent",
        usage.rss_kib * 1024,
    );
    one(
        o,
        "finwait_agent_peak_resident_memory_bytes",
        "gauge",
        "Peak resident set size of the agent since start (VmHWM)",
        usage.peak_rss_kib * 1024,
    );
    one(
        o,
        "process_cpu_seconds_total",
        "counter",
        "CPU time of the agent, user and system",
        (usage.cpu_user_ms + usage.cpu_system_ms) as f64 / 1000.0,
    );
    out
}

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4;

/// The metrics listener, bound by [`crate::app::App::build`].
#[derive(Debug)]
pub struct Listener(std::net::TcpListener);

impl Listener {
    /// Binds `addr` (port 0 allowed).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(Listener(l))
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Serves `/metrics` until `stop`.
pub(crate) async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    limit_bytes: u64,
    spool_limit_bytes: u64,
    stop: CancellationToken,
) -> Result<(), String> {
    let listener =
        TcpListener::from_std(listener.0).map_err(|e| format!("metrics listener: {e}"))?;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            p = Arc::clone(&permits).acquire_owned() => p.map_err(|e| e.to_string())?,
        };
        let (conn, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            let queue = move || {
                let (batches, bytes, dropped) = {
                    let o = shared.outbox();
                    let (n, b) = o.len_bytes();
                    (n as u64, b as u64, o.dropped)
                };
                Queue {
                    spool_limit_bytes,
                    batches,
                    bytes,
                    limit_bytes,
                    dropped,
                }
            };
            if let Err(e) = answer(conn, queue).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut conn: TcpStream, queue: impl FnOnce() -> Queue) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
            if buf.len() >= MAX_REQUEST {
                return Err(std::io::Error::other("request head too large"));
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", render(&AGENT, queue())),
        (b"GET", _) => ("404 Not Found", "only /metrics is served here\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_every_family_has_help() {
        let m = AgentMetrics {
            cycles_ok: AtomicU64::new(2),
            cycles_failed: AtomicU64::new(0),
            cycle: Histogram::new(),
            owner_scan: Histogram::new(),
            sockets: AtomicU64::new(7),
            reconnects: AtomicU64::new(1),
            connected: AtomicU64::new(1),
            spool: [4096, 2, 1, 0, 0].map(AtomicU64::new),
        };
        m.cycle.record_us(800);
        m.cycle.record_us(3_000);
        m.cycle.record_us(60_000_000);
        let out = render(
            &m,
            Queue {
                spool_limit_bytes: 1 << 28,
                batches: 1,
                bytes: 300,
                limit_bytes: 1 << 20,
                dropped: 4,
            },
        );
        assert!(
            out.contains("finwait_agent_cycle_seconds_bucket{le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("finwait_agent_cycle_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(out.contains("finwait_agent_cycle_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(
            out.contains("finwait_agent_cycle_seconds_sum 60.0038\n"),
            "{out}"
        );
        assert!(out.contains("finwait_agent_batches_dropped_total 4\n"));
        assert!(out.contains("finwait_agent_outbox_bytes 300\n"));
        assert!(out.contains("finwait_agent_sockets 7\n"));
        assert!(out.contains("finwait_agent_spool_bytes 4096\n"));
        assert!(out.contains("finwait_agent_spool_limit_bytes 268435456\n"));
        assert!(out.contains("finwait_agent_spool_dropped_total 1\n"));
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                out.contains(&format!("# HELP {base} ")),
                "{name} has no HELP"
            );
        }
    }
}

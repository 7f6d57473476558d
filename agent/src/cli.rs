//! Command-line interface of `finwait-agent`: flags, environment variables and the
//! commands they run.

use std::io::{BufWriter, Write};

use clap::{Args, Parser, Subcommand};

use crate::AgentError;
use crate::delta::TimeWaitMode;
use crate::sampler::{Sample, SamplerConfig, SourceMode, TableSource};
use crate::snapshot::{self, Filter};
use crate::telemetry::LogFormat;

/// finwait host agent: every TCP socket, every state, with its owning processes.
#[derive(Debug, Parser)]
#[command(name = "finwait-agent", version, about)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FINWAIT_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Agent commands.
#[derive(Debug, Subcommand)]
// Parsed once at start-up and matched once: boxing `run`'s flags would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Print the local TCP table once, like `ss -tanp` with timers, owners and namespaces.
    Snapshot(SnapshotArgs),
    /// Sample every interval and stream the table to a collector.
    Run(RunArgs),
}

/// `finwait-agent run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How to read.
    #[command(flatten)]
    pub read: ReadArgs,
    /// Collector URL: https://HOST:PORT, or http://127.0.0.1:PORT with --insecure-loopback.
    /// Several collectors sharing one database: their URLs separated by commas; the
    /// first is tried first, and every reconnect goes to the next one in the list.
    #[arg(long, env = "FINWAIT_COLLECTOR")]
    pub collector: String,
    /// Sampling interval in seconds, 0.1 to 3600 (jittered by ±10 %); keep it well inside
    /// tcp_fin_timeout (60 s) so orphaned FIN_WAIT2 peers are seen.
    #[arg(long, env = "FINWAIT_INTERVAL", default_value_t = 10.0)]
    pub interval: f64,
    /// File holding the bearer token: one with the `ingest` role in the collector's
    /// tokens file.
    #[arg(long, env = "FINWAIT_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) that signed the collector's certificate (https only).
    #[arg(long, env = "FINWAIT_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Allow plaintext without a token, to a loopback collector only.
    #[arg(long, env = "FINWAIT_INSECURE_LOOPBACK")]
    pub insecure_loopback: bool,
    /// Bound of the buffer of unacknowledged batches, in MiB; when full the oldest are
    /// dropped (counted) and a full table follows.
    #[arg(long, env = "FINWAIT_BUFFER_MIB", default_value_t = 64)]
    pub buffer_mib: usize,
    /// TIME_WAIT sockets: summarised per (namespace, local, remote address, remote port),
    /// or sent individually.
    #[arg(long, value_enum, env = "FINWAIT_TIME_WAIT", default_value_t = TimeWaitMode::Summarise)]
    pub time_wait: TimeWaitMode,
    /// Report this hostname instead of the kernel's.
    #[arg(long, env = "FINWAIT_HOSTNAME")]
    pub hostname: Option<String>,
    /// Report this machine id instead of /etc/machine-id (hosts cloned from one image
    /// share one).
    #[arg(long, env = "FINWAIT_MACHINE_ID")]
    pub machine_id: Option<String>,
    /// A label key=value for this host (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::identity::parse_label)]
    pub labels: Vec<(String, String)>,
    /// The disk spool of unacknowledged batches.
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Serve the agent's own Prometheus metrics at http://ADDR/metrics (off unless
    /// given; e.g. 127.0.0.1:9465). No token: only aggregate figures are shown.
    #[arg(long, env = "FINWAIT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The disk spool's flags (`finwait-agent run`).
#[derive(Debug, Clone, Args)]
pub struct SpoolArgs {
    /// Directory of the crash-safe spool of unacknowledged batches, owned by one agent
    /// (a second agent on it is refused); replayed after a restart.
    #[arg(long, env = "FINWAIT_SPOOL_DIR", default_value = crate::config::DEFAULT_SPOOL_DIR)]
    pub spool_dir: std::path::PathBuf,
    /// Keep unacknowledged batches in memory only (lost when the agent stops).
    #[arg(long, env = "FINWAIT_NO_SPOOL")]
    pub no_spool: bool,
    /// Bound of the spool on disk: bytes, or with a KiB/MiB/GiB suffix; the oldest
    /// batches are dropped (counted) beyond it.
    #[arg(long, env = "FINWAIT_SPOOL_MAX_BYTES", default_value = "256MiB")]
    pub spool_max_bytes: String,
    /// Batches spooled longer ago than this are dropped (counted): seconds, or with an
    /// s/m/h/d suffix.
    #[arg(long, env = "FINWAIT_SPOOL_MAX_AGE", default_value = "24h")]
    pub spool_max_age: String,
}

/// How to read the table (shared by every command that reads it).
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Read every network namespace in use (containers), not only the agent's own.
    #[arg(long, env = "FINWAIT_ALL_NETNS")]
    pub all_netns: bool,
    /// Table source: netlink sock_diag with /proc fallback (auto), or one of them only.
    #[arg(long, value_enum, default_value_t = SourceMode::Auto, env = "FINWAIT_SOURCE")]
    pub source: SourceMode,
    /// Do not look for owning processes (faster; the Owners column stays empty).
    #[arg(long)]
    pub no_owners: bool,
    /// Threads for the owner scan (0 = one per core).
    #[arg(long, default_value_t = 0, env = "FINWAIT_OWNER_THREADS")]
    pub owner_threads: usize,
}

impl ReadArgs {
    /// The sampler configuration these flags describe.
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            source: self.source,
            all_netns: self.all_netns,
            owners: !self.no_owners,
            owner_threads: self.owner_threads,
        }
    }
}

/// `finwait-agent snapshot` flags.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// How to read.
    #[command(flatten)]
    pub read: ReadArgs,
    /// Only these states, comma-separated ss words: close-wait,fin-wait-2,...
    #[arg(long, value_name = "STATES")]
    pub state: Option<String>,
    /// Only sockets whose local or remote port is N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Only sockets held by process N.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// JSON Lines: one object per socket (fields in the README).
    #[arg(long)]
    pub json: bool,
    /// Print each cycle's own account (timings, counts, what was skipped) as JSON on
    /// stderr, then the process's peak RSS and CPU time.
    #[arg(long)]
    pub stats: bool,
    /// Read N times back to back (owner cache warm after the first) and print the last;
    /// with --stats, each cycle's account is printed. Measures the steady state.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: u32,
}

/// Runs `snapshot`. The table is handed back so that the caller decides when to pay
/// for freeing it (a process about to exit need not).
pub fn snapshot(args: &SnapshotArgs) -> Result<Option<Sample>, AgentError> {
    let filter = Filter {
        states: match &args.state {
            Some(list) => snapshot::parse_states(list).map_err(AgentError::InvalidArgument)?,
            None => Vec::new(),
        },
        port: args.port,
        pid: args.pid,
    };
    if args.repeat == 0 {
        return Err(AgentError::InvalidArgument(
            "--repeat must be at least 1".into(),
        ));
    }
    let mut source = new_source(args.read.sampler_config())?;
    let mut sample = None;
    for _ in 0..args.repeat {
        // Drop the previous table first: only one is needed at a time.
        drop(sample.take());
        let s = source.sample()?;
        if args.stats {
            let line = serde_json::to_string(&s.stats).map_err(std::io::Error::other)?;
            eprintln!("{line}");
        }
        sample = Some(s);
    }
    let Some(sample) = sample else {
        return Ok(None);
    };
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout);
    let res = if args.json {
        snapshot::write_json(&mut out, &sample, &filter)
    } else {
        snapshot::write_table(&mut out, &sample, &filter)
    };
    let res = match res.and_then(|()| out.flush()) {
        // `finwait-agent snapshot | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    };
    if args.stats {
        let usage = serde_json::json!({ "process": crate::usage::ProcessUsage::current() });
        eprintln!("{usage}");
    }
    res?;
    Ok(Some(sample))
}

/// The kernel's tables, read as `config` says.
#[cfg(target_os = "linux")]
pub(crate) fn new_source(config: SamplerConfig) -> Result<Box<dyn TableSource>, AgentError> {
    Ok(Box::new(crate::kernel::KernelSampler::new(config)?))
}

/// No kernel tables off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn new_source(_config: SamplerConfig) -> Result<Box<dyn TableSource>, AgentError> {
    Err(crate::sampler::SampleError::Unsupported.into())
}

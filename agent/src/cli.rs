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
    #[arg(long, env = "FINWAIT_COLLECTOR")]
    pub collector: String,
    /// Sampling interval in seconds (jittered by ±10 %); keep it well inside
    /// tcp_fin_timeout (60 s) so orphaned FIN_WAIT2 peers are seen.
    #[arg(long, env = "FINWAIT_INTERVAL", default_value_t = 10.0)]
    pub interval: f64,
    /// File holding the bearer token the collector accepts.
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
}

/// Runs `run` until SIGINT or SIGTERM.
pub fn run(args: &RunArgs) -> Result<(), AgentError> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(AgentError::InvalidArgument(
            "--interval must be at least 0.1 s".into(),
        ));
    }
    let interval = std::time::Duration::from_secs_f64(args.interval);
    let read_file = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| AgentError::InvalidArgument(format!("cannot read {}: {e}", p.display())))
    };
    let token = match &args.token_file {
        Some(p) => Some(String::from_utf8_lossy(&read_file(p)?).trim().to_owned()),
        None => None,
    };
    let overrides = crate::identity::IdentityOverrides {
        hostname: args.hostname.clone(),
        machine_id: args.machine_id.clone(),
        labels: args.labels.clone(),
    };
    let cfg = crate::run::RunConfig {
        collector: args.collector.clone(),
        interval,
        token,
        ca_pem: args.ca_file.as_deref().map(read_file).transpose()?,
        insecure_loopback: args.insecure_loopback,
        buffer_bytes: args.buffer_mib.max(1) * 1024 * 1024,
        time_wait: args.time_wait,
        identity: crate::identity::host_identity(&overrides, interval.as_millis() as u32)
            .map_err(AgentError::InvalidArgument)?,
        instance_id: crate::identity::instance_id(),
    };
    cfg.validate().map_err(AgentError::InvalidArgument)?;
    let source = new_source(&args.read)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping");
            signal_stop.cancel();
        });
        crate::run::run(cfg, source, stop).await
    })
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
    let mut source = new_source(&args.read)?;
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

#[cfg(target_os = "linux")]
fn new_source(read: &ReadArgs) -> Result<Box<dyn TableSource>, AgentError> {
    Ok(Box::new(crate::kernel::KernelSampler::new(
        read.sampler_config(),
    )?))
}

#[cfg(not(target_os = "linux"))]
fn new_source(_read: &ReadArgs) -> Result<Box<dyn TableSource>, AgentError> {
    Err(crate::sampler::SampleError::Unsupported.into())
}

//! finwait-agent: reads every TCP socket on a Linux host (all states, IPv4 and IPv6,
//! optionally every network namespace) with the processes that hold it, and turns
//! successive tables into deltas for the collector.
//!
//! Flow of one cycle: [`kernel::KernelSampler`] dumps each namespace's table through
//! netlink sock_diag ([`netlink`]) or /proc ([`procnet`]), attributes sockets to
//! processes ([`owners`]), and returns a [`sampler::Sample`]; [`delta`] compares it with
//! the previous table; [`snapshot`] prints one sample for people and scripts.
//!
//! The `run` mode is [`app::App`]: a checked [`config::Config`], a sampler task
//! ([`run`]) and a sender task ([`sender`]) around the bounded [`outbox`], backed by the
//! crash-safe disk [`spool`], one shutdown.

pub mod app;
pub(crate) mod backoff;
pub mod cli;
pub mod config;
pub mod decimal;
pub mod delta;
pub mod fleet;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod probe;
pub mod run;
pub mod sampler;
pub(crate) mod sender;
pub mod snapshot;
pub mod socket;
pub mod spool;
pub mod synthetic;
pub mod telemetry;
pub mod usage;
pub mod wire;

pub mod fasthash;
#[cfg(target_os = "linux")]
pub mod kernel;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod owners;
#[cfg(target_os = "linux")]
pub mod privilege;
#[cfg(target_os = "linux")]
pub mod procnet;
#[cfg(target_os = "linux")]
pub mod uts;

/// Errors at the agent's boundary (its commands).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Reading the socket table failed.
    #[error(transparent)]
    Sample(#[from] sampler::SampleError),
    /// A flag value is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The `run` configuration has problems (all of them listed).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The spool directory cannot be used (another agent holds it, or I/O failed).
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// A `run` task failed.
    #[error("stopped: {0}")]
    Task(String),
    /// Writing output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

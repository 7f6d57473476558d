//! The agent's `run` mode as a library: [`App::build`] checks the [`Config`] and
//! prepares the sampler and the collector endpoint (no network I/O: the sender
//! connects when it runs); [`App::run_until_stopped`] samples and streams until the
//! shutdown future resolves, then stops in one shape: the root cancellation token is
//! cancelled (the sampler stops, the sender drains its live stream), the tracked tasks
//! get [`GRACE`], and whatever is still running after it is aborted.
//!
//! The spool directory is opened and locked by [`App::build`], so a second agent on
//! the same directory fails there, before it samples or connects. This run's epoch is
//! after every epoch found in the spool: the earlier runs' batches go first, under
//! their own epochs, then this run's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Endpoint;

use crate::AgentError;
use crate::config::Config;
use crate::run::{self, Cycler, Shared};
use crate::sampler::TableSource;
use crate::sender::{self, Link};
use crate::spool::{Spool, Stored};

/// How long, after shutdown starts, the sender may wait for the collector to
/// acknowledge what it has been sent (short enough for a service manager's stop
/// timeout, long enough for a commit).
pub const GRACE: Duration = Duration::from_secs(3);

/// A built agent, ready to run.
pub struct App {
    /// The checked configuration.
    config: Config,
    /// The collectors (URL, endpoint), ready to connect to, in the order given.
    endpoints: Vec<(String, Endpoint)>,
    /// Where tables come from.
    source: Box<dyn TableSource>,
    /// The spool, open and locked, with what earlier runs left in it.
    spool: Option<(Spool, Vec<Stored>)>,
    /// The `/metrics` listener, when `--metrics-listen` was given.
    metrics: Option<crate::metrics::Listener>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Config`'s Debug redacts the token.
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Checks `config` and prepares the kernel sampler and the collector endpoint.
    pub fn build(config: Config) -> Result<App, AgentError> {
        config.validate()?;
        let source = crate::cli::new_source(config.sampler.clone())?;
        App::build_with_source(config, source)
    }

    /// Like [`App::build`], with tables from `source` instead of the kernel (tests,
    /// recordings).
    pub fn build_with_source(
        config: Config,
        source: Box<dyn TableSource>,
    ) -> Result<App, AgentError> {
        config.validate()?;
        let endpoints = config.endpoints().map_err(|e| {
            AgentError::Config(crate::config::ConfigError {
                problems: vec![format!("--collector {}: {e}", config.collector)],
            })
        })?;
        let spool = match &config.spool {
            Some(c) => Some(Spool::open(c)?),
            None => None,
        };
        // Bound now, so a taken address stops the agent before it starts.
        let metrics = match config.metrics_listen {
            Some(addr) => Some(crate::metrics::Listener::bind(addr).map_err(|e| {
                AgentError::Config(crate::config::ConfigError {
                    problems: vec![format!("--metrics-listen {addr}: cannot listen: {e}")],
                })
            })?),
            None => None,
        };
        Ok(App {
            config,
            endpoints,
            source,
            spool,
            metrics,
        })
    }

    /// Where `/metrics` is served (the bound address: port 0 resolved), if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Samples and streams until `shutdown` resolves (or a task fails), then stops
    /// within [`GRACE`]. Fails only when a task failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AgentError> {
        let App {
            config,
            endpoints,
            source,
            spool,
            metrics,
        } = self;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        // After every earlier run's epoch, even if the clock went back since.
        let spooled_epoch = spool
            .as_ref()
            .and_then(|(_, stored)| stored.iter().map(|s| s.epoch).max());
        let epoch = spooled_epoch.map_or(now, |e| now.max(e + 1));
        let mut shared = Shared::new(epoch, config.buffer_bytes);
        if let Some((spool, stored)) = spool {
            if !stored.is_empty() {
                tracing::info!(
                    batches = stored.len(),
                    epochs = stored
                        .iter()
                        .map(|s| s.epoch)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                    "spooled batches of earlier runs will be sent first"
                );
            }
            shared = shared.with_spool(spool, &stored);
        }
        let shared = Arc::new(shared);
        let link = Link {
            endpoints,
            token: config.token.clone(),
            identity: config.identity.clone(),
            instance_id: config.instance_id.clone(),
        };
        tracing::info!(
            collector = %config.collector,
            epoch,
            interval_ms = config.interval.as_millis() as u64,
            "agent running"
        );
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sampler = tracker.spawn(run::sample_loop(
            Cycler::new(source, config.time_wait),
            config.interval,
            Arc::clone(&shared),
            stop.clone(),
        ));
        let sender = tracker.spawn(sender::send_loop(link, Arc::clone(&shared), stop.clone()));
        if let Some(listener) = metrics {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving /metrics");
            }
            // Not worth stopping the agent for: a failed metrics server is logged.
            let serve = crate::metrics::serve(
                listener,
                Arc::clone(&shared),
                config.buffer_bytes as u64,
                config.spool.as_ref().map_or(0, |c| c.max_bytes),
                stop.clone(),
            );
            tracker.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
        tracker.close();

        tokio::select! {
            () = shutdown => tracing::info!("stopping"),
            // A task stopped the agent; its error is reported below.
            () = stop.cancelled() => {}
        }
        stop.cancel();
        if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
            let (n, _) = shared.outbox().len_bytes();
            tracing::warn!(
                unacknowledged = n,
                "grace period over: stopping without the collector's acknowledgement"
            );
            sampler.abort();
            sender.abort();
        }
        let mut failures = Vec::new();
        for (task, handle) in [("sampler", sampler), ("sender", sender)] {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) if e.is_cancelled() => {}
                Err(e) => failures.push(format!("{task} task: {e}")),
            }
        }
        let releasing = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || releasing.release_spooled()).await;
        if let Some(s) = shared.spool_stats() {
            tracing::info!(
                spool_records = s.records,
                spool_bytes = s.bytes,
                spool_dropped = s.dropped,
                spool_torn = s.torn,
                spool_unspooled = s.unspooled,
                "spool at exit"
            );
        }
        if failures.is_empty() {
            tracing::info!("stopped");
            Ok(())
        } else {
            Err(AgentError::Task(failures.join("; ")))
        }
    }
}

/// The agent's runtime: one async worker is plenty (the work is on blocking threads:
/// a cycle at a time, plus the owner scan's own threads).
pub fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)
}

/// Resolves on the first SIGINT or SIGTERM. A handler that cannot be installed is
/// logged and its signal ignored, rather than taken as a request to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

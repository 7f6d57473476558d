//! Is the database there? One supervisor task probes PostgreSQL every second on a
//! connection of its own (so a saturated pool does not look like an outage), and
//! publishes the answer: gRPC health (`grpc.health.v1`) turns NOT_SERVING while the
//! database does not answer and SERVING when it does again, `/api/v1/ready` answers
//! 503 or 200, and queries are refused at once instead of waiting for a connection.
//!
//! With the embedded PostgreSQL the same task is its supervisor: when the postmaster
//! exits (killed, crashed) it is restarted on the same port, with a backoff of 1, 2,
//! 4, 8 and 16 s between attempts; after [`MAX_RESTARTS`] failed attempts in a row the
//! collector gives up and exits non-zero naming the last error (a supervisor such as
//! systemd or Kubernetes then restarts the whole collector). A paused server (SIGSTOP)
//! is not restarted: it is reported unreachable until it answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::postgres::EmbeddedPostgres;

/// How often the database is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed restarts in a row after which the collector exits.
pub const MAX_RESTARTS: u32 = 5;
/// Wait before the first restart attempt; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Whether the database answered the last probe; cheap to clone and read.
#[derive(Debug, Clone)]
pub struct DbStatus(Arc<AtomicBool>);

impl DbStatus {
    /// A status that starts as `up`.
    pub fn new(up: bool) -> DbStatus {
        DbStatus(Arc::new(AtomicBool::new(up)))
    }

    /// True when the last probe was answered.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) -> bool {
        self.0.swap(up, Ordering::Relaxed) != up
    }
}

/// The embedded server, shared between the supervisor and the shutdown path (which
/// takes it out to stop it).
pub type SharedEmbedded = Arc<std::sync::Mutex<Option<EmbeddedPostgres>>>;

/// The gRPC services whose health follows the database (`""` is the whole server).
pub const SERVICES: &[&str] = &["", "finwait.v1.Ingest", "finwait.v1.Query"];

/// The supervisor: probes, publishes, restarts the embedded server.
pub struct Supervisor {
    /// The probe's own single-connection pool.
    probe: PgPool,
    /// What the rest of the collector reads.
    status: DbStatus,
    /// gRPC health.
    reporter: HealthReporter,
    /// The embedded server, when the collector runs its own.
    embedded: Option<SharedEmbedded>,
}

impl Supervisor {
    /// A supervisor probing the database at `options`.
    pub fn new(
        options: PgConnectOptions,
        status: DbStatus,
        reporter: HealthReporter,
        embedded: Option<SharedEmbedded>,
    ) -> Supervisor {
        let probe = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(PROBE_TIMEOUT)
            .connect_lazy_with(options);
        Supervisor {
            probe,
            status,
            reporter,
            embedded,
        }
    }

    /// Runs until `stop` is cancelled (Ok) or the embedded server cannot be restarted
    /// (Err, saying why: the collector must exit non-zero).
    #[tracing::instrument(name = "db_supervisor", skip_all)]
    pub async fn run(self, stop: CancellationToken) -> Result<(), String> {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Some(how) = self.embedded_exited() {
                tracing::error!(how = %how, "embedded postgresql exited; restarting it");
                self.publish(false).await;
                self.restart(&stop).await?;
            }
            let up = self.probe().await;
            self.publish(up).await;
        }
        self.probe.close().await;
        Ok(())
    }

    fn embedded_exited(&self) -> Option<String> {
        let shared = self.embedded.as_ref()?;
        let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_mut()?.exited()
    }

    /// Restarts the embedded server with a doubling backoff, at most [`MAX_RESTARTS`]
    /// attempts.
    async fn restart(&self, stop: &CancellationToken) -> Result<(), String> {
        let Some(shared) = self.embedded.clone() else {
            return Ok(());
        };
        let mut wait = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=MAX_RESTARTS {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            let shared = shared.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                match guard.as_mut() {
                    Some(pg) => pg.restart().map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("restart task failed: {e}")));
            let result = if outcome.is_ok() { "ok" } else { "failed" };
            metrics::counter!("finwait_database_restarts_total", "result" => result).increment(1);
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "embedded postgresql restart failed");
                    last = e;
                }
            }
            wait = wait.saturating_mul(2);
        }
        Err(format!(
            "embedded postgresql exited and {MAX_RESTARTS} restarts failed; last: {last}"
        ))
    }

    async fn probe(&self) -> bool {
        let q = sqlx::query("SELECT 1").execute(&self.probe);
        match tokio::time::timeout(PROBE_TIMEOUT, q).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "database probe failed");
                false
            }
            Err(_) => {
                tracing::debug!("database probe timed out");
                false
            }
        }
    }

    /// Records `up`; on a change, logs it and sets gRPC health.
    async fn publish(&self, up: bool) {
        if !self.status.set(up) {
            return;
        }
        // finwait_database_up is read from `status` when /metrics is scraped.
        let status = if up {
            tracing::info!("database reachable again; health SERVING");
            ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable; health NOT_SERVING");
            ServingStatus::NotServing
        };
        for service in SERVICES {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

//! The collector as a library: [`App::build`] checks the configuration, starts or
//! connects to PostgreSQL, applies migrations and binds the listener (port 0 allowed,
//! the bound address exposed); [`App::run_until_stopped`] serves until the shutdown
//! future resolves, then stops in one shape: health NOT_SERVING, streams cancelled,
//! tasks given a grace period, the embedded PostgreSQL stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use finwait_proto::v1 as pb;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

use crate::auth::{LiveTokens, Tokens};
use crate::budget::Budget;
use crate::config::Config;
use crate::conn_limit::{ConnLimits, ConnStats};
use crate::db_health::{DbStatus, SERVICES, Supervisor};
use crate::ingest::{Capacity, IngestService};
use crate::ingest_server::IngestServer;
use crate::postgres::{EmbeddedOptions, EmbeddedPostgres};
use crate::store::{Pools, Store};
use crate::validate::Limits;

/// How long tasks get to finish after shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

/// A built collector, listening but not yet serving.
pub struct App {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
    store: Store,
    embedded: Option<EmbeddedPostgres>,
    /// How the health probe connects (the store's options).
    db_options: PgConnectOptions,
    database_url: String,
    tokens: Option<LiveTokens>,
    /// The certificate served (`--tls-cert`), replaced on reload.
    certs: Option<Arc<crate::tls::CertStore>>,
    /// The connection cap in force (the flag, lowered to fit the open-file limit).
    max_connections: usize,
    /// Connections refused or closed by a limit.
    conn_stats: Arc<ConnStats>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The database the collector uses.
struct Database {
    /// What the store connects with.
    options: PgConnectOptions,
    /// The same as a URL, for people and tools that take only a string (psql).
    url: String,
    /// The embedded server, when the collector runs its own.
    embedded: Option<EmbeddedPostgres>,
}

/// Where the database comes from: a URL file, DATABASE_URL, or the embedded server.
async fn database(config: &Config) -> anyhow::Result<Database> {
    let given = match &config.database_url_file {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
            path.display().to_string(),
        )),
        None => std::env::var("DATABASE_URL")
            .ok()
            .map(|url| (url, "DATABASE_URL".to_owned())),
    };
    if let Some((url, source)) = given {
        // The URL is a secret: errors name where it came from, never the URL.
        let options = PgConnectOptions::from_str(&url)
            .with_context(|| format!("invalid PostgreSQL URL in {source}"))?;
        return Ok(Database {
            options,
            url,
            embedded: None,
        });
    }
    let opts = EmbeddedOptions {
        data_dir: config.data_dir.join("postgres"),
        bin_dir: config.pg_bin_dir.clone(),
        run_as: None,
        port: 0,
        listen_tcp: false,
    };
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(opts))
        .await
        .context("embedded postgresql start-up task")??;
    // The collector's own database inside the embedded cluster.
    let admin =
        Store::connect_with(pg.connect_options("postgres"), 1, Duration::from_secs(1)).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'finwait')")
            .fetch_one(admin.pool())
            .await?;
    if !exists {
        sqlx::raw_sql("CREATE DATABASE finwait")
            .execute(admin.pool())
            .await?;
    }
    admin.pool().close().await;
    Ok(Database {
        options: pg.connect_options("finwait"),
        url: pg.url("finwait"),
        embedded: Some(pg),
    })
}

impl App {
    /// Validates `config`, prepares storage and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        if let Err(problems) = config.validate() {
            bail!("invalid configuration:\n  {}", problems.join("\n  "));
        }
        // Before anything records: the macros feed the recorder installed first.
        crate::metrics::install();
        let tokens = match &config.tokens_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading tokens file {}", p.display()))?;
                let t =
                    Tokens::parse(&text).with_context(|| format!("tokens file {}", p.display()))?;
                crate::auth::log_roles(&t);
                Some(LiveTokens::new(t))
            }
            None => None,
        };
        // Checked before anything binds; served by crate::tls so SIGHUP can replace it.
        let certs = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let c =
                    std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                let k = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                let pair = crate::tls::certified_key(&c, &k).with_context(|| {
                    format!(
                        "--tls-cert {} / --tls-key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
                Some(crate::tls::CertStore::new(pair))
            }
            _ => None,
        };
        let Database {
            options,
            url: database_url,
            embedded,
        } = database(&config).await?;
        let pools = Pools {
            ingest: config.db_connections,
            query: config.query_connections,
            query_timeout: Some(Duration::from_secs(config.query_timeout_seconds)),
        };
        let store = Store::connect_pools(options.clone(), pools, config.lease())
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("applying migrations")?;
        if config.citus {
            crate::distribution::distribute(store.pool()).await?;
        }
        store
            .maintain_partitions(2, i64::from(config.retention_days))
            .await
            .context("creating partitions")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let max_connections = crate::conn_limit::fitting_cap(
            config.max_connections,
            u64::from(config.db_connections) + u64::from(config.query_connections) + 2,
        );
        if max_connections < config.max_connections {
            tracing::warn!(
                wanted = config.max_connections,
                cap = max_connections,
                "--max-connections lowered to fit under the open-file limit"
            );
        }
        Ok(App {
            config,
            listener,
            addr,
            store,
            embedded,
            db_options: options,
            database_url,
            tokens,
            certs,
            max_connections,
            conn_stats: Arc::new(ConnStats::default()),
        })
    }

    /// What SIGHUP does (the collector does it itself; tests may call it directly):
    /// reload the tokens file and the certificate into the sets in force.
    pub fn reloader(&self) -> crate::reload::Reloader {
        let mut r = crate::reload::Reloader::default();
        if let (Some(path), Some(live)) = (&self.config.tokens_file, &self.tokens) {
            r = r.with_tokens(path.clone(), live.clone());
        }
        if let (Some(cert), Some(key), Some(store)) =
            (&self.config.tls_cert, &self.config.tls_key, &self.certs)
        {
            r = r.with_tls(cert.clone(), key.clone(), store.clone());
        }
        r
    }

    /// The bound gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Counters of connections refused or closed by a limit.
    pub fn conn_stats(&self) -> Arc<ConnStats> {
        self.conn_stats.clone()
    }

    /// The database in use as a URL, for tools that take only a string (psql); the
    /// collector itself connects with options.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reloader = self.reloader();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (reporter, health) = tonic_health::server::health_reporter();
        for service in SERVICES {
            reporter
                .set_service_status(*service, tonic_health::ServingStatus::Serving)
                .await;
        }
        // The database supervisor: health follows the database; the embedded server is
        // restarted, and if it cannot be, the collector stops with the reason.
        let db_status = DbStatus::new(true);
        let embedded = self
            .embedded
            .map(|pg| Arc::new(std::sync::Mutex::new(Some(pg))));
        let fatal = CancellationToken::new();
        let fatal_reason: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        {
            let supervisor = Supervisor::new(
                self.db_options.clone(),
                db_status.clone(),
                reporter.clone(),
                embedded.clone(),
            );
            let (stop, fatal, reason) = (stop.clone(), fatal.clone(), fatal_reason.clone());
            tracker.spawn(async move {
                if let Err(why) = supervisor.run(stop).await {
                    tracing::error!(reason = %why, "giving up on the database");
                    *reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    fatal.cancel();
                }
            });
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building reflection service")?;
        // Reflection is a reader's tool; health stays open for load balancers' probes.
        let reflection = tonic::service::interceptor::InterceptedService::new(
            reflection,
            crate::auth::interceptor(self.tokens.clone(), crate::auth::Role::Read),
        );
        let limits = Limits {
            max_sockets_per_batch: self.config.max_batch_sockets,
            max_clock_ahead_ms: i64::from(self.config.max_clock_ahead_seconds) * 1000,
        };
        let ingest = IngestService::new(
            self.store.clone(),
            limits,
            self.tokens.clone(),
            Capacity {
                max_streams: self.config.max_streams,
                budget: Budget::new(self.config.ingest_memory_bytes),
                db_connections: self.config.db_connections as usize,
                shed: self.config.shed(),
            },
            stop.clone(),
            tracker.clone(),
        )
        .with_db_status(db_status.clone());
        let ingest = IngestServer::new(
            ingest,
            self.config.max_message_bytes,
            self.config.max_message_bytes,
        )
        .with_wire_budget(self.config.ingest_wire_bytes);

        // The fleet gauges of /metrics, refreshed by maintenance after each rollup.
        let fleet_gauges = Arc::new(crate::metrics::fleet::FleetGauges::default());
        let maintenance = {
            let fleet_gauges = fleet_gauges.clone();
            let (store, stop, lease, retention, every, threshold) = (
                self.store.clone(),
                stop.clone(),
                self.config.lease(),
                i64::from(self.config.retention_days),
                Duration::from_secs(self.config.maintenance_seconds),
                self.config.leak_threshold_seconds,
            );
            tracker.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            match store.close_silent(lease).await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(lifetimes = n, "ended lifetimes of silent agents at their last report"),
                                Err(e) => {
                                    crate::metrics::maintenance_failed("silent_sweep");
                                    tracing::warn!(error = %e, "silent-agent sweep failed");
                                }
                            }
                            if let Err(e) = store.maintain_partitions(2, retention).await {
                                crate::metrics::maintenance_failed("retention");
                                tracing::warn!(error = %e, "partition maintenance failed");
                            }
                            if let Err(e) = store.record_fleet_minute(threshold, retention).await {
                                crate::metrics::maintenance_failed("fleet_rollup");
                                tracing::warn!(error = %e, "fleet rollup failed");
                            } else if fleet_gauges.refresh(store.pool(), threshold).await.is_err() {
                                // Logged by its span.
                                crate::metrics::maintenance_failed("fleet_rollup");
                            }
                            if let Err(e) = store.roll_state_hours(retention).await {
                                crate::metrics::maintenance_failed("state_hours");
                                tracing::warn!(error = %e, "hourly state peaks rollup failed");
                            }
                        }
                    }
                }
            })
        };

        // Rows from before the pair-key migration get their key in the background
        // (bounded steps; a no-op once done).
        {
            let (pool, stop) = (self.store.pool().clone(), stop.clone());
            tracker.spawn(async move {
                let pause = Duration::from_millis(50);
                if let Err(e) = crate::distribution::backfill_pair_keys(&pool, pause, &stop).await {
                    tracing::warn!(error = %e, "pair-key backfill stopped; the next start resumes it");
                }
            });
        }

        let handshake = Duration::from_secs(self.config.handshake_seconds);
        let keepalive = Duration::from_secs(self.config.keepalive_seconds);
        // Pings find peers that went away without a word; the idle time in
        // conn_limit closes those that stay but ask nothing.
        let server = Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive.min(Duration::from_secs(20))));
        let server = if self.config.max_connection_age_seconds > 0 {
            // GOAWAY at the age, so streams rebalance across collectors; the grace lets
            // a batch in flight finish before the stream is cut (agents resend).
            server
                .max_connection_age(Duration::from_secs(self.config.max_connection_age_seconds))
                .max_connection_age_grace(Duration::from_secs(
                    self.config.max_connection_age_grace_seconds,
                ))
        } else {
            server
        };
        let tls = match &self.certs {
            Some(store) => {
                Some(crate::tls::server_config(store.clone()).context("TLS configuration")?)
            }
            None => None,
        };
        tracker.spawn(crate::reload::on_sighup(reloader, stop.clone()));
        tracing::info!(addr = %self.addr, tls = self.config.tls_cert.is_some(), "collector serving");
        let signal_stop = stop.clone();
        // gRPC and the HTTP/1.1 JSON API share the port. With a tokens file, reading
        // needs a read token on every listener, loopback included: an agent's token
        // must not read there either.
        let read_tokens = self.tokens.clone();
        let ctx = crate::query::Context {
            pool: self.store.query_pool().clone(),
            db: db_status.clone(),
            query_timeout: Duration::from_secs(self.config.query_timeout_seconds),
            leak_threshold_s: self.config.leak_threshold_seconds,
            slack_s: self.config.correlation_slack_seconds,
            public_url: self.config.public_url.as_deref().map(Arc::from),
        };
        let reports = if self.config.no_reports {
            None
        } else {
            let schedules = self
                .config
                .schedules()
                .map_err(|p| anyhow::anyhow!("report schedules:\n  {}", p.join("\n  ")))?;
            Some(tracker.spawn(crate::report::scheduler::run(
                ctx.clone(),
                Arc::new(schedules),
                stop.clone(),
            )))
        };
        let query = pb::query_server::QueryServer::new(crate::query_service::QueryService::new(
            ctx.clone(),
            read_tokens.clone(),
        ));
        // Pages and the API: sessions (with tokens) are signed with a key derived
        // from the same tokens, and the API accepts them too (the charts' fetches).
        let dash_auth = read_tokens.clone();
        let metrics_routes = crate::metrics::router(crate::metrics::MetricsState {
            registry: crate::metrics::install(),
            tokens: read_tokens.clone(),
            store: self.store.clone(),
            db: db_status.clone(),
            fleet: fleet_gauges,
        });
        let api = crate::api::router(crate::api::ApiState {
            ctx: ctx.clone(),
            tokens: read_tokens,
            sessions: dash_auth.clone(),
        })
        .merge(crate::dashboard::router(crate::dashboard::DashState {
            ctx,
            auth: dash_auth,
        }))
        .merge(metrics_routes);
        let routes = tonic::service::Routes::from(api)
            .add_service(health)
            .add_service(reflection)
            .add_service(ingest)
            .add_service(query)
            .into_axum_router()
            .layer(axum::middleware::from_fn(crate::conn_limit::track_requests));
        let routes = tonic::service::Routes::from(routes);
        let incoming = crate::conn_limit::incoming(
            self.listener,
            ConnLimits {
                max_connections: self.max_connections,
                handshake,
                idle: Duration::from_secs(self.config.idle_seconds),
            },
            self.conn_stats.clone(),
            stop.clone(),
        );
        let incoming = crate::tls::serve(incoming, tls, handshake);
        let serve = server
            .accept_http1(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                tokio::select! {
                    _ = shutdown => tracing::info!("shutting down"),
                    _ = fatal.cancelled() => tracing::error!("shutting down: the database is gone"),
                }
                for service in SERVICES {
                    reporter
                        .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                signal_stop.cancel();
            });
        let served = serve.await;
        stop.cancel();
        tracker.close();
        if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
            tracing::warn!("tasks still running after the grace period");
        }
        drop(maintenance);
        drop(reports);
        self.store.close().await;
        let pg =
            embedded.and_then(|shared| shared.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(pg) = pg {
            tokio::task::spawn_blocking(move || pg.stop())
                .await
                .context("embedded postgresql stop task")??;
        }
        served.context("gRPC server")?;
        if let Some(why) = fatal_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bail!("{why}");
        }
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

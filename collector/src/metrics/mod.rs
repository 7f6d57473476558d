//! `GET /metrics`: the collector's own health and the fleet's aggregates in the
//! Prometheus text format, on the gRPC/HTTP port.
//!
//! Series recorded through the `metrics` crate's macros land in one process-wide
//! [`registry::Registry`] (installed by [`install`], described by [`describe`] so every
//! family has `# HELP` from the first scrape). A few families are read when scraped
//! rather than recorded: whether the database answers and the pools' connections (per
//! collector, from its [`Store`] and [`DbStatus`]), and the fleet gauges, replaced
//! whole once a minute by the maintenance task ([`fleet::FleetGauges`]) so a service
//! that leaves the top list leaves the exposition too.
//!
//! Labels come from bounded sets only (results, reasons, pools, questions, states,
//! leak kinds, the top services): never a host, socket, process or endpoint.
//!
//! With a tokens file, scraping needs a token with the `read` role (Prometheus:
//! `authorization: { credentials_file: ... }`); there is no opt-out, since a scraper
//! can always send one. Without a tokens file (`--insecure-loopback`) it is open like
//! the rest of the API.

pub mod fleet;
pub mod registry;

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{self, LiveTokens};
use crate::db_health::DbStatus;
use crate::store::Store;
use registry::{Handle, Kind, Registry, header as help_header, label_set};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process-wide registry, once installed.
static REGISTRY: OnceLock<Option<Arc<Registry>>> = OnceLock::new();

/// Installs the recorder (once per process; later calls return the same registry) and
/// describes every family. `None` when another recorder was installed first: the
/// macros then feed that one and `/metrics` shows only what is read when scraped.
pub fn install() -> Option<Arc<Registry>> {
    REGISTRY
        .get_or_init(|| {
            let registry = Arc::new(Registry::default());
            match metrics::set_global_recorder(Handle(Arc::clone(&registry))) {
                Ok(()) => {
                    describe();
                    Some(registry)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics shows only scrape-time gauges");
                    None
                }
            }
        })
        .clone()
}

/// Every family the collector records, with its help text; series that must exist
/// before their first event (so `rate()` and alerts see a 0) are created here.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "finwait_ingest_batches_total",
        "Batches settled, by result: committed, duplicate (already committed, acknowledged again), resync (a full table was asked for), ignored (a delta while a full table was awaited)"
    );
    describe_counter!(
        "finwait_ingest_rows_total",
        "Socket records in committed batches"
    );
    describe_counter!(
        "finwait_ingest_rejects_total",
        "Hellos, batches and streams refused, by reason"
    );
    describe_histogram!(
        "finwait_ingest_ack_seconds",
        "Time from a batch's arrival to its answer (ack after commit, resync or refusal)"
    );
    describe_gauge!(
        "finwait_ingest_streams_active",
        "Agent streams past hello, now"
    );
    describe_counter!(
        "finwait_ingest_shed_total",
        "Batches or streams turned away with UNAVAILABLE and a retry delay because the database was saturated (load shedding)"
    );
    describe_counter!(
        "finwait_accept_errors_total",
        "Failed accept() calls on the listener (EMFILE and the like)"
    );
    describe_counter!(
        "finwait_connections_closed_total",
        "Connections closed by a limit, by reason"
    );
    describe_counter!(
        "finwait_database_restarts_total",
        "Restarts of the embedded PostgreSQL, by result"
    );
    describe_histogram!(
        "finwait_db_acquire_seconds",
        "Time to take a connection from a pool and begin a transaction (ingest batches)"
    );
    describe_counter!(
        "finwait_db_pool_timeouts_total",
        "Waits for a pool connection that timed out, by pool"
    );
    describe_histogram!(
        "finwait_query_seconds",
        "Time to answer a question of the query API (HTTP, gRPC, pages), by question"
    );
    describe_counter!(
        "finwait_query_failures_total",
        "Questions not answered, by question and error code"
    );
    describe_counter!(
        "finwait_retention_partitions_dropped_total",
        "Daily partitions dropped past retention, by table"
    );
    describe_counter!(
        "finwait_retention_rows_deleted_total",
        "Rows removed past retention, by table (rows of dropped partitions included)"
    );
    describe_gauge!(
        "finwait_retention_last_run_timestamp_seconds",
        "Unix time of the last partition and retention pass that succeeded"
    );
    describe_counter!(
        "finwait_maintenance_failures_total",
        "Failed steps of the once-a-minute maintenance task, by task"
    );
    describe_counter!(
        "finwait_reloads_total",
        "SIGHUP reloads of the tokens file and certificate, by result: ok or refused (the old set kept)"
    );
    for result in ["ok", "refused"] {
        metrics::counter!("finwait_reloads_total", "result" => result).absolute(0);
    }
    for reason in crate::shed::ShedReason::ALL {
        metrics::counter!("finwait_ingest_shed_total", "reason" => reason.label()).absolute(0);
    }
    metrics::counter!("finwait_ingest_rows_total").absolute(0);
    metrics::counter!("finwait_accept_errors_total").absolute(0);
    metrics::gauge!("finwait_ingest_streams_active").increment(0.0);
    for result in ["committed", "duplicate", "resync", "ignored"] {
        metrics::counter!("finwait_ingest_batches_total", "result" => result).absolute(0);
    }
    for pool in ["ingest", "query"] {
        metrics::counter!("finwait_db_pool_timeouts_total", "pool" => pool).absolute(0);
    }
    for table in ["socket_lifetimes", "state_counts", "time_wait_counts"] {
        metrics::counter!("finwait_retention_partitions_dropped_total", "table" => table)
            .absolute(0);
        metrics::counter!("finwait_retention_rows_deleted_total", "table" => table).absolute(0);
    }
    for table in ["ingest_batches", "fleet_minutes", "state_hours"] {
        metrics::counter!("finwait_retention_rows_deleted_total", "table" => table).absolute(0);
    }
    for task in ["silent_sweep", "retention", "fleet_rollup", "state_hours"] {
        metrics::counter!("finwait_maintenance_failures_total", "task" => task).absolute(0);
    }
    metrics::gauge!("finwait_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_gauge!(
        "finwait_build_info",
        "Always 1; the collector's version as a label"
    );
}

/// Counts a failed maintenance step (`task` from a fixed set).
pub fn maintenance_failed(task: &'static str) {
    metrics::counter!("finwait_maintenance_failures_total", "task" => task).increment(1);
}

/// What `/metrics` reads when scraped.
#[derive(Clone)]
pub struct MetricsState {
    /// The recorder's registry (`None`: another recorder is installed).
    pub registry: Option<Arc<Registry>>,
    /// Accepted tokens (scraping needs the read role); `None`: open.
    pub tokens: Option<LiveTokens>,
    /// The pools, for their connection gauges.
    pub store: Store,
    /// Whether the database answers (the supervisor's probe).
    pub db: DbStatus,
    /// The fleet gauges the maintenance task refreshes.
    pub fleet: Arc<fleet::FleetGauges>,
}

/// The `/metrics` route.
pub fn router(state: MetricsState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

/// `GET /metrics`.
async fn scrape(State(s): State<MetricsState>, headers: HeaderMap) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    // The set in force now: a SIGHUP reload applies to the next scrape.
    let set = s.tokens.as_ref().map(LiveTokens::current);
    if let Err(refused) = auth::check(set.as_deref(), given, auth::Role::Read) {
        let e = crate::query::QueryError::from(refused);
        e.code.log("metrics", &e.message);
        let status = StatusCode::from_u16(e.code.http()).unwrap_or(StatusCode::FORBIDDEN);
        let mut r = (status, format!("{}\n", e.message)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header value"),
            );
        }
        return r;
    }
    let body = render(&s);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// The whole exposition: recorded families, then the ones read now.
pub fn render(s: &MetricsState) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if let Some(r) = &s.registry {
        r.render(&mut out);
    }
    help_header(
        &mut out,
        "finwait_database_up",
        Kind::Gauge,
        "1 while the database answers the supervisor's probe (every second), else 0",
    );
    out.push_str(&format!("finwait_database_up {}\n", u8::from(s.db.is_up())));
    let pools = [("ingest", s.store.pool()), ("query", s.store.query_pool())];
    help_header(
        &mut out,
        "finwait_db_pool_connections",
        Kind::Gauge,
        "Open connections per pool, by state: busy (lent out) or idle",
    );
    for (name, pool) in pools {
        let idle = pool.num_idle() as u64;
        let busy = u64::from(pool.size()).saturating_sub(idle);
        for (state, n) in [("busy", busy), ("idle", idle)] {
            let labels = label_set(&[("pool", name), ("state", state)], None);
            out.push_str(&format!("finwait_db_pool_connections{labels} {n}\n"));
        }
    }
    help_header(
        &mut out,
        "finwait_db_pool_max_connections",
        Kind::Gauge,
        "Size limit of each pool (--db-connections, --query-connections)",
    );
    for (name, pool) in pools {
        let labels = label_set(&[("pool", name)], None);
        let max = pool.options().get_max_connections();
        out.push_str(&format!("finwait_db_pool_max_connections{labels} {max}\n"));
    }
    s.fleet.render(&mut out);
    out
}

//! The on-call questions, answered once for both transports.
//!
//! Every question is a `*Query` built by `parse` from named parameters ([`Params`])
//! and answered by `run` against the store. The HTTP/JSON API ([`crate::api`])
//! serialises the answers as they are; the gRPC `finwait.v1.Query` service
//! ([`crate::query_service`]) turns its request fields into the same parameters and the
//! answers into messages. So both transports accept the same values, reject the same
//! ones with the same message, and answer alike.

pub mod coverage;
pub mod fleet;
pub mod groups;
pub mod hosts;
pub mod leaks;
mod params;
pub mod reports;
mod socket;
pub mod sockets;
pub mod timeline;
pub mod who;

pub use params::{MAX_LIMIT, Params};
pub use socket::{endpoint, socket_from_row};

use serde::Serialize;
use sqlx::PgPool;

use crate::error::ErrorCode;

/// TIME_WAIT towards one destination above this share of the ephemeral port range is
/// reported as pressure: new connections to it are close to failing with EADDRNOTAVAIL.
pub const TIME_WAIT_PRESSURE_RATIO: f64 = 0.5;

/// What every query needs.
#[derive(Clone)]
pub struct Context {
    /// The query pool (statement timeout set; never the ingest pool).
    pub pool: PgPool,
    /// Whether the database answers, as the health probe last saw it.
    pub db: crate::db_health::DbStatus,
    /// The statement timeout; a question gets it plus the wait for a connection and a
    /// margin before it is abandoned here, for when the server cannot enforce it (a
    /// paused or unreachable server).
    pub query_timeout: std::time::Duration,
    /// Default minimum age of a leak, seconds.
    pub leak_threshold_s: f64,
    /// Allowed gap between holder and peer lifetimes, seconds.
    pub slack_s: f64,
    /// The collector's public URL, for absolute links in reports.
    pub public_url: Option<std::sync::Arc<str>>,
}

/// A query error: a stable code and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The code, mapped to HTTP and gRPC.
    pub code: ErrorCode,
    /// For people; starts with the parameter's name when one is at fault.
    pub message: String,
}

impl QueryError {
    /// A bad parameter.
    pub fn bad(param: &str, why: impl std::fmt::Display) -> QueryError {
        QueryError {
            code: ErrorCode::InvalidArgument,
            message: format!("{param}: {why}"),
        }
    }

    /// Something named that does not exist.
    pub fn not_found(param: &str, why: impl std::fmt::Display) -> QueryError {
        QueryError {
            code: ErrorCode::NotFound,
            message: format!("{param}: {why}"),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QueryError {}

/// SQLSTATE of a statement cancelled by `statement_timeout` (query_canceled).
const QUERY_CANCELED: &str = "57014";

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        // The three outcomes a client can act on differently; never driver text.
        let message = match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some(QUERY_CANCELED) => {
                "query ran past the collector's statement timeout (--query-timeout-seconds); \
                 narrow it (host, since, limit) or retry later"
            }
            sqlx::Error::PoolTimedOut => {
                metrics::counter!("finwait_db_pool_timeouts_total", "pool" => "query").increment(1);
                "too many queries at once; retry later"
            }
            _ => "storage unavailable; retry later",
        };
        tracing::warn!(error = %e, "query failed");
        QueryError {
            code: ErrorCode::Unavailable,
            message: message.into(),
        }
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageReq {
    /// Items to skip.
    pub offset: i64,
    /// At most this many.
    pub limit: i64,
}

impl PageReq {
    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts fetched rows (at most [`PageReq::fetch`]) to the page; returns the token of
    /// the next page, if there is one.
    pub fn finish<T>(&self, rows: &mut Vec<T>) -> Option<String> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        more.then(|| params::page_token(self.offset + self.limit))
    }

    /// Takes this page out of a complete list; returns the token of the next page.
    pub fn slice<T>(&self, mut all: Vec<T>) -> (Vec<T>, Option<String>) {
        let start = (self.offset as usize).min(all.len());
        let mut page = all.split_off(start);
        let token = self.finish(&mut page);
        (page, token)
    }
}

/// The hosts row of a hostname: the one that reported last when several machines
/// share the name.
pub(crate) async fn host_id(pool: &PgPool, hostname: &str) -> Result<i64, QueryError> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT host_id FROM hosts WHERE hostname = $1 \
         ORDER BY last_report DESC NULLS LAST, host_id DESC LIMIT 1",
    )
    .bind(hostname)
    .fetch_optional(pool)
    .await?;
    id.ok_or_else(|| QueryError::not_found("host", format!("no host named {hostname:?}")))
}

/// One on-call question: its parameters, how it reads them, how it is answered.
pub trait Question: Sized {
    /// The parameter names it accepts (anything else is refused, named).
    const PARAMS: &'static [&'static str];
    /// Its name in metrics (`finwait_query_seconds{question=...}`): a fixed word.
    const NAME: &'static str;
    /// Its answer, serialised as is by the HTTP API.
    type Answer: Serialize + Send;
    /// Reads and checks the parameters.
    fn parse(p: &Params, ctx: &Context) -> Result<Self, QueryError>;
    /// How long it may take before it is abandoned: the statement timeout plus the
    /// wait for a connection and a margin, unless the question says otherwise.
    fn budget(ctx: &Context) -> std::time::Duration {
        ctx.query_timeout + ABANDON_MARGIN
    }
    /// Answers it.
    fn run(
        &self,
        ctx: &Context,
    ) -> impl std::future::Future<Output = Result<Self::Answer, QueryError>> + Send;
}

/// Parses and answers question `Q`; while the database is known to be unreachable the
/// answer is an immediate 503 instead of a wait for a connection that will not come.
pub async fn ask<Q: Question>(p: &Params, ctx: &Context) -> Result<Q::Answer, QueryError> {
    let q = Q::parse(p, ctx)?;
    if !ctx.db.is_up() {
        return Err(QueryError {
            code: ErrorCode::Unavailable,
            message: "database unreachable; retry later".into(),
        });
    }
    let bound = Q::budget(ctx);
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(bound, q.run(ctx)).await;
    metrics::histogram!("finwait_query_seconds", "question" => Q::NAME)
        .record(started.elapsed().as_secs_f64());
    let failed = |code: ErrorCode| {
        metrics::counter!("finwait_query_failures_total", "question" => Q::NAME, "code" => code.name())
            .increment(1);
    };
    match answer {
        Ok(Err(e)) => {
            failed(e.code);
            Err(e)
        }
        Ok(answer) => answer,
        Err(_) => {
            failed(ErrorCode::Unavailable);
            tracing::warn!(
                after_s = bound.as_secs(),
                "query abandoned: no answer from the database"
            );
            Err(QueryError {
                code: ErrorCode::Unavailable,
                message: "no answer from the database in time; retry later".into(),
            })
        }
    }
}

/// What a question gets beyond the statement timeout: the wait for a free connection
/// (5 s) and a margin.
const ABANDON_MARGIN: std::time::Duration = std::time::Duration::from_secs(7);

//! `sockets`: one host's sockets now, or as they were at a past instant, rebuilt from
//! lifetimes as of the host's last report at or before that instant.

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::SocketsPage;

use super::{Context, PageReq, Params, QueryError, Question, host_id, socket_from_row};

/// Parameters `sockets` accepts.
pub const PARAMS: &[&str] = &[
    "host",
    "state",
    "port",
    "pid",
    "process",
    "service",
    "at",
    "limit",
    "page_token",
];

/// A host's sockets, filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketsQuery {
    /// Hostname.
    pub host: String,
    /// State.
    pub state: Option<TcpState>,
    /// Local or remote port.
    pub port: Option<i64>,
    /// Owning pid.
    pub pid: Option<i64>,
    /// Owning command name.
    pub process: Option<String>,
    /// Owning service (or the namespace's).
    pub service: Option<String>,
    /// The instant; `None` for now.
    pub at: Option<DateTime<Utc>>,
    /// The page.
    pub page: PageReq,
}

impl Question for SocketsQuery {
    const NAME: &'static str = "sockets";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = SocketsPage;

    /// Reads and checks the parameters.
    fn parse(p: &Params, _ctx: &Context) -> Result<SocketsQuery, QueryError> {
        Ok(SocketsQuery {
            host: p.required("host")?,
            state: p.state("state")?,
            port: p.number("port", 1..=65_535)?,
            pid: p.number("pid", 1..=i64::from(u32::MAX))?,
            process: p.text("process"),
            service: p.text("service"),
            at: p.instant("at")?,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_sockets", skip_all, fields(host = ?self.host, at = ?self.at))]
    async fn run(&self, ctx: &Context) -> Result<SocketsPage, QueryError> {
        let host_id = host_id(&ctx.pool, &self.host).await?;
        let as_of: Option<DateTime<Utc>> = match self.at {
            None => {
                sqlx::query_scalar("SELECT last_report FROM hosts WHERE host_id = $1")
                    .bind(host_id)
                    .fetch_one(&ctx.pool)
                    .await?
            }
            Some(at) => Some(report_at_or_before(ctx, host_id, &self.host, at).await?),
        };
        let rows = sqlx::query(include_str!("../sql/sockets.sql"))
            .bind(host_id)
            .bind(self.at.and(as_of))
            .bind(self.state.map(|s| i16::from(s.as_kernel())))
            .bind(self.port.map(|p| p as i32))
            .bind(self.pid)
            .bind(&self.process)
            .bind(self.page.fetch())
            .bind(self.page.offset)
            .bind(&self.service)
            .fetch_all(&ctx.pool)
            .await?;
        let mut sockets = Vec::with_capacity(rows.len());
        for row in &rows {
            sockets.extend(socket_from_row(row, "")?);
        }
        let next_page_token = self.page.finish(&mut sockets);
        Ok(SocketsPage {
            host: self.host.clone(),
            as_of,
            sockets,
            next_page_token,
        })
    }
}

/// The taken-at time of the host's last report at or before `at`.
async fn report_at_or_before(
    ctx: &Context,
    host_id: i64,
    host: &str,
    at: DateTime<Utc>,
) -> Result<DateTime<Utc>, QueryError> {
    let r: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(taken_at) FROM ingest_batches WHERE host_id = $1 AND taken_at <= $2",
    )
    .bind(host_id)
    .bind(at)
    .fetch_one(&ctx.pool)
    .await?;
    r.ok_or_else(|| {
        QueryError::not_found(
            "at",
            format!(
                "host {host:?} has no stored report at or before {}",
                at.to_rfc3339()
            ),
        )
    })
}

//! `who`: every socket on any host with an endpoint as its local or remote address,
//! now or at a past instant, both ends of each connection side by side.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Context, NextPage, PageReq, Params, QueryError, Question, Socket, endpoint};

/// Parameters `who` accepts.
pub const PARAMS: &[&str] = &["endpoint", "at", "limit", "page_token"];

/// Who holds an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WhoQuery {
    /// The address.
    pub addr: IpAddr,
    /// The port.
    pub port: u16,
    /// The instant; `None` for now.
    pub at: Option<DateTime<Utc>>,
    /// The page.
    pub page: PageReq,
}

/// One connection: the socket with the endpoint as local address, and the one with
/// it as remote address; either may be unseen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// The endpoint's own socket.
    pub local: Option<Socket>,
    /// The other end's socket.
    pub remote: Option<Socket>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhoAnswer {
    /// The endpoint asked about.
    pub endpoint: String,
    /// The instant asked about; null for now.
    pub as_of: Option<DateTime<Utc>>,
    /// The connections.
    pub connections: Vec<Connection>,
    /// Paging.
    #[serde(flatten)]
    pub next: NextPage,
}

impl Question for WhoQuery {
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = WhoAnswer;

    /// Reads and checks the parameters.
    fn parse(p: &Params, _ctx: &Context) -> Result<WhoQuery, QueryError> {
        let (addr, port) = p.endpoint("endpoint")?;
        Ok(WhoQuery {
            addr,
            port,
            at: p.instant("at")?,
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_who", skip_all, fields(addr = %self.addr, port = self.port, at = ?self.at), err)]
    async fn run(&self, ctx: &Context) -> Result<WhoAnswer, QueryError> {
        let rows = sqlx::query(include_str!("../sql/who.sql"))
            .bind(ipnetwork::IpNetwork::from(self.addr))
            .bind(i32::from(self.port))
            .bind(self.at)
            .bind(self.page.fetch())
            .bind(self.page.offset)
            .fetch_all(&ctx.pool)
            .await?;
        let mut connections = Vec::with_capacity(rows.len());
        for row in &rows {
            connections.push(Connection {
                local: Socket::from_row(row, "l_")?,
                remote: Socket::from_row(row, "r_")?,
            });
        }
        let next_page_token = self.page.finish(&mut connections);
        Ok(WhoAnswer {
            endpoint: endpoint(&self.addr.to_string(), i32::from(self.port)),
            as_of: self.at,
            connections,
            next: NextPage { next_page_token },
        })
    }
}

//! `who`: every socket on any host with an endpoint as its local or remote address,
//! now or at a past instant, both ends of each connection side by side.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{Connection, WhoPage};

use super::{Context, PageReq, Params, QueryError, Question, endpoint, socket_from_row};

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

impl Question for WhoQuery {
    const NAME: &'static str = "who";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = WhoPage;

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
    #[tracing::instrument(name = "query_who", skip_all, fields(addr = %self.addr, port = self.port, at = ?self.at))]
    async fn run(&self, ctx: &Context) -> Result<WhoPage, QueryError> {
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
                local: socket_from_row(row, "l_")?,
                remote: socket_from_row(row, "r_")?,
            });
        }
        let next_page_token = self.page.finish(&mut connections);
        Ok(WhoPage {
            endpoint: endpoint(&self.addr.to_string(), i32::from(self.port)),
            as_of: self.at,
            connections,
            next_page_token,
        })
    }
}

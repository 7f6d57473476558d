//! `hosts`: every host with its last report, per-state counts and TIME_WAIT pressure.

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::{Host, HostsPage, PortRange};
use sqlx::Row;

use super::coverage::coverage;
use super::leaks::pressure_from_row;
use super::{Context, PageReq, Params, QueryError, Question, TIME_WAIT_PRESSURE_RATIO};
use crate::model::CycleAccount;

/// Parameters `hosts` accepts.
pub const PARAMS: &[&str] = &["host", "limit", "page_token"];

/// Lists hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct HostsQuery {
    /// Only this hostname.
    pub host: Option<String>,
    /// The page.
    pub page: PageReq,
}

impl Question for HostsQuery {
    const NAME: &'static str = "hosts";
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = HostsPage;

    /// Reads and checks the parameters.
    fn parse(p: &Params, _ctx: &Context) -> Result<HostsQuery, QueryError> {
        Ok(HostsQuery {
            host: p.text("host"),
            page: p.page()?,
        })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_hosts", skip_all)]
    async fn run(&self, ctx: &Context) -> Result<HostsPage, QueryError> {
        let rows = sqlx::query(include_str!("../sql/hosts.sql"))
            .bind(self.page.fetch())
            .bind(self.page.offset)
            .bind(TIME_WAIT_PRESSURE_RATIO)
            .bind(&self.host)
            .fetch_all(&ctx.pool)
            .await?;
        let mut hosts = Vec::with_capacity(rows.len());
        for row in &rows {
            let hostname: String = row.try_get("hostname")?;
            let states: serde_json::Value = row.try_get("states")?;
            let states = states
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let n = k.parse::<i16>().ok()?;
                    Some((TcpState::from_number(n)?, v.as_i64()?))
                })
                .collect();
            let low: i32 = row.try_get("ephemeral_low")?;
            let high: i32 = row.try_get("ephemeral_high")?;
            let time_wait_pressure = match row.try_get::<Option<i64>, _>("tw_count")? {
                Some(_) => Some(pressure_from_row(row, "tw_")?),
                None => None,
            };
            let labels: serde_json::Value = row.try_get("labels")?;
            let account: Option<sqlx::types::Json<CycleAccount>> = row.try_get("account")?;
            let account_at: Option<DateTime<Utc>> = row.try_get("account_at")?;
            hosts.push(Host {
                hostname,
                machine_id: row.try_get("machine_id")?,
                agent_version: row.try_get("agent_version")?,
                last_seen: row.try_get("last_seen")?,
                reporting: row.try_get("reporting")?,
                labels: serde_json::from_value(labels).unwrap_or_default(),
                states,
                ephemeral_ports: PortRange { low, high },
                time_wait_pressure,
                coverage: account.zip(account_at).map(|(a, at)| coverage(&a.0, at)),
            });
        }
        let next_page_token = self.page.finish(&mut hosts);
        Ok(HostsPage {
            hosts,
            next_page_token,
        })
    }
}

//! `hosts`: every host with its last report, per-state counts and TIME_WAIT pressure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::leaks::{TimeWaitPressure, pressure_from_row};
use super::{
    Context, NextPage, PageReq, Params, QueryError, Question, TIME_WAIT_PRESSURE_RATIO, state_name,
};

/// Parameters `hosts` accepts.
pub const PARAMS: &[&str] = &["limit", "page_token"];

/// Lists hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct HostsQuery {
    /// The page.
    pub page: PageReq,
}

/// A host's ephemeral port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// Lowest port.
    pub low: i32,
    /// Highest port.
    pub high: i32,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    /// Hostname.
    pub hostname: String,
    /// Machine id.
    pub machine_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Taken-at time of its last stored report.
    pub last_seen: Option<DateTime<Utc>>,
    /// Operator labels.
    pub labels: serde_json::Value,
    /// Per-state socket counts at the last report.
    pub states: BTreeMap<&'static str, i64>,
    /// Ephemeral port range.
    pub ephemeral_ports: PortRange,
    /// The worst TIME_WAIT destination at the last report, when it fills much of the
    /// ephemeral range.
    pub time_wait_pressure: Option<TimeWaitPressure>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostsAnswer {
    /// Hosts by name.
    pub hosts: Vec<Host>,
    /// Paging.
    #[serde(flatten)]
    pub next: NextPage,
}

impl Question for HostsQuery {
    const PARAMS: &'static [&'static str] = PARAMS;
    type Answer = HostsAnswer;

    /// Reads and checks the parameters.
    fn parse(p: &Params, _ctx: &Context) -> Result<HostsQuery, QueryError> {
        Ok(HostsQuery { page: p.page()? })
    }

    /// Answers it.
    #[tracing::instrument(name = "query_hosts", skip_all, err)]
    async fn run(&self, ctx: &Context) -> Result<HostsAnswer, QueryError> {
        let rows = sqlx::query(include_str!("../sql/hosts.sql"))
            .bind(self.page.fetch())
            .bind(self.page.offset)
            .bind(TIME_WAIT_PRESSURE_RATIO)
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
                    Some((state_name(n), v.as_i64()?))
                })
                .collect();
            let low: i32 = row.try_get("ephemeral_low")?;
            let high: i32 = row.try_get("ephemeral_high")?;
            let time_wait_pressure = match row.try_get::<Option<i64>, _>("tw_count")? {
                Some(_) => Some(pressure_from_row(row, "tw_")?),
                None => None,
            };
            hosts.push(Host {
                hostname,
                machine_id: row.try_get("machine_id")?,
                agent_version: row.try_get("agent_version")?,
                last_seen: row.try_get("last_seen")?,
                labels: row.try_get("labels")?,
                states,
                ephemeral_ports: PortRange { low, high },
                time_wait_pressure,
            });
        }
        let next_page_token = self.page.finish(&mut hosts);
        Ok(HostsAnswer {
            hosts,
            next: NextPage { next_page_token },
        })
    }
}

//! A host's page (its table now or at a past instant, filtered like `ss`; its state
//! timeline; its leaks; its coverage and agent) and the endpoint search (`who`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use chrono::Utc;
use finwait_vocab::TcpState;
use finwait_vocab::answer::{Coverage, Host};

use super::view::{self, End, Time};
use super::{DashState, Layout, PageResult, ask, params, render};
use crate::query::Params;
use crate::query::hosts::HostsQuery;
use crate::query::leaks::{self, LeakQuery};
use crate::query::sockets::SocketsQuery;
use crate::query::who::WhoQuery;
use crate::query::{PageReq, QueryError, Question};

/// Chart ranges offered on a host's page.
const RANGES: [&str; 4] = ["1h", "6h", "24h", "7d"];

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    layout: Layout,
    name: String,
    host: Host,
    last_seen: Option<Time>,
    coverage: Option<Coverage>,
    f: HashMap<String, String>,
    states: Vec<&'static str>,
    as_of: Option<Time>,
    sockets: Vec<End>,
    next: String,
    leaks: Vec<(String, End, Option<End>)>,
    range: String,
    span: i64,
    ranges: Vec<(&'static str, String)>,
    chart: String,
    data: String,
}

impl HostPage {
    /// A filter's current value ("" when unset).
    fn fv(&self, k: &str) -> &str {
        self.f.get(k).map_or("", String::as_str)
    }

    /// True when filter `k` is set to `v`.
    fn sel(&self, k: &str, v: &str) -> bool {
        self.fv(k).eq_ignore_ascii_case(v)
    }
}

/// `GET /host?name=&at=&state=&port=&pid=&process=&service=&range=`.
pub async fn page(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let mut allowed: Vec<&str> = crate::query::sockets::PARAMS.to_vec();
    allowed.extend(["name", "range"]);
    allowed.retain(|k| *k != "host");
    let p = params(raw.clone(), &allowed)?;
    let name = p.required("name")?;
    let range = p.text("range").unwrap_or_else(|| "24h".to_owned());
    if !RANGES.contains(&range.as_str()) {
        return Err(QueryError::bad("range", format!("one of {}", RANGES.join(", "))).into());
    }
    let mut sq = raw.clone();
    sq.remove("name");
    sq.remove("range");
    sq.insert("host".into(), name.clone());
    let sp = params(sq.clone(), crate::query::sockets::PARAMS)?;
    let hosts_q = HostsQuery {
        host: Some(name.clone()),
        page: PageReq {
            offset: 0,
            limit: 1,
        },
    };
    let leaks_q = LeakQuery {
        host: Some(name.clone()),
        ..LeakQuery::since(&s.ctx, Utc::now() - chrono::Duration::hours(24))
    };
    let (hosts, sockets, leaks) = tokio::join!(
        hosts_q.run(&s.ctx),
        ask::<SocketsQuery>(&s, &sp),
        leaks::leaks(&s.ctx.pool, &leaks_q)
    );
    let host = hosts?
        .hosts
        .into_iter()
        .next()
        .ok_or_else(|| QueryError::not_found("name", format!("no host named {name:?}")))?;
    let sockets = sockets?;
    let leaks = leaks.map_err(QueryError::from)?;
    let next = sockets
        .next_page_token
        .as_deref()
        .map(|t| view::relink("/host", &raw, "page_token", t))
        .unwrap_or_default();
    let page = HostPage {
        layout: Layout::new(&s, format!("Host {name}"), "hosts"),
        last_seen: host.last_seen.map(Time::of),
        coverage: host.coverage.clone(),
        states: TcpState::ALL.iter().map(|s| s.name()).collect(),
        as_of: sockets.as_of.map(Time::of),
        sockets: sockets.sockets.iter().map(End::of_socket).collect(),
        next,
        leaks: leaks
            .iter()
            .map(|l| {
                (
                    l.kind.name().to_owned(),
                    End::of_side(&l.holder),
                    l.peer.as_ref().map(End::of_side),
                )
            })
            .collect(),
        ranges: RANGES
            .iter()
            .map(|r| (*r, view::relink("/host", &raw, "range", r)))
            .collect(),
        chart: view::link("/api/v1/timeline", &[("host", &name), ("since", &range)]),
        data: view::relink("/api/v1/sockets", &sq, "", ""),
        span: finwait_vocab::time::parse_duration(&range).map_or(86_400, |s| s as i64),
        range,
        f: raw,
        host,
        name,
    };
    render(&page)
}

#[derive(Template)]
#[template(path = "who.html")]
struct WhoPage {
    layout: Layout,
    endpoint: String,
    at: String,
    rows: Vec<(Option<End>, Option<End>)>,
    asked: bool,
    data: String,
}

/// `GET /who?endpoint=&at=`: both ends of every connection of an endpoint.
pub async fn who(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let endpoint = raw.get("endpoint").cloned().unwrap_or_default();
    let at = raw.get("at").cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let asked = !endpoint.trim().is_empty();
    if asked {
        let p = params(raw.clone(), crate::query::who::PARAMS)?;
        let answer = ask::<WhoQuery>(&s, &p).await?;
        rows = answer
            .connections
            .iter()
            .map(|c| {
                (
                    c.local.as_ref().map(End::of_socket),
                    c.remote.as_ref().map(End::of_socket),
                )
            })
            .collect();
    }
    let page = WhoPage {
        layout: Layout::new(&s, "Who holds an endpoint", "who"),
        data: view::link("/api/v1/who", &[("endpoint", &endpoint), ("at", &at)]),
        endpoint,
        at,
        rows,
        asked,
    };
    render(&page)
}

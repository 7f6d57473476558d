//! The leak pages: the list (holder and peer side by side, every filter in the URL),
//! one leak (both ends, the holder's other leaks, what it means, the CLI command that
//! shows the same), and a service's leaks over time.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use finwait_vocab::answer::Leak;
use finwait_vocab::explain::{self, Topic};

use super::view::{self, End, Time};
use super::{DashState, Layout, PageResult, ask, params, render};
use crate::query::Params;
use crate::query::QueryError;
use crate::query::leaks::{self, LeakQuery};

/// One row of a leak table.
struct LeakRow {
    kind: &'static str,
    confidence: &'static str,
    holder: End,
    peer: Option<End>,
    until: Option<Time>,
    link: String,
    hint: String,
}

fn leak_link(l: &Leak, min_age: &str) -> String {
    let h = &l.holder;
    let since = h.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    view::link(
        "/leak",
        &[
            ("host", &h.host),
            ("netns", &h.netns.to_string()),
            ("local", &h.local),
            ("remote", &h.remote),
            ("since", &since),
            ("min_age", min_age),
        ],
    )
}

fn rows(leaks: &[Leak]) -> Vec<LeakRow> {
    rows_with(leaks, "")
}

/// Rows whose links carry the list's `min_age` (empty: the collector's threshold).
fn rows_with(leaks: &[Leak], min_age: &str) -> Vec<LeakRow> {
    leaks
        .iter()
        .map(|l| LeakRow {
            kind: l.kind.name(),
            confidence: l.confidence.name(),
            holder: End::of_side(&l.holder),
            peer: l.peer.as_ref().map(End::of_side),
            until: l.until.map(Time::of),
            link: leak_link(l, min_age),
            hint: l.hint.clone(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "leaks.html")]
struct LeaksPage {
    layout: Layout,
    f: HashMap<String, String>,
    rows: Vec<LeakRow>,
    open: usize,
    next: String,
    data: String,
}

impl LeaksPage {
    /// A filter's current value ("" when unset).
    fn fv(&self, k: &str) -> &str {
        self.f.get(k).map_or("", String::as_str)
    }

    /// True when filter `k` is set to `v`.
    fn sel(&self, k: &str, v: &str) -> bool {
        self.fv(k).eq_ignore_ascii_case(v)
    }
}

/// `GET /leaks`: the API's `leaks` question, as a table.
pub async fn list(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let p = params(raw.clone(), leaks::PARAMS)?;
    let answer = ask::<LeakQuery>(&s, &p).await?;
    let next = answer
        .next_page_token
        .as_deref()
        .map(|t| view::relink("/leaks", &raw, "page_token", t))
        .unwrap_or_default();
    let page = LeaksPage {
        layout: Layout::new(&s, "Leaks", "leaks"),
        open: answer.leaks.iter().filter(|l| l.until.is_none()).count(),
        rows: rows_with(&answer.leaks, raw.get("min_age").map_or("", String::as_str)),
        next,
        data: view::relink("/api/v1/leaks", &raw, "", ""),
        f: raw,
    };
    render(&page)
}

#[derive(Template)]
#[template(path = "leak.html")]
struct OnePage {
    layout: Layout,
    leak: LeakRow,
    explain: Vec<(String, Vec<(&'static str, &'static str)>)>,
    others: Vec<LeakRow>,
    cli: Vec<String>,
}

/// `GET /leak?host=&netns=&local=&remote=&since=`: one leak, both ends.
pub async fn one(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let p = params(
        raw,
        &["host", "netns", "local", "remote", "since", "min_age"],
    )?;
    let host = p.required("host")?;
    let (local, remote) = (p.required("local")?, p.required("remote")?);
    let netns = p.number("netns", 0..=i64::MAX)?;
    let since: DateTime<Utc> = p
        .instant("since")?
        .ok_or_else(|| QueryError::bad("since", "required"))?;
    // The threshold keeps the search on the index of lasting lifetimes; a list asked
    // with a lower `min_age` passes it on in its links.
    let q = LeakQuery {
        min_age_s: p.seconds("min_age")?.unwrap_or(s.ctx.leak_threshold_s),
        host: Some(host.clone()),
        ..LeakQuery::since(&s.ctx, since - chrono::Duration::seconds(1))
    };
    let all = leaks::leaks(&s.ctx.pool, &q)
        .await
        .map_err(QueryError::from)?;
    let found = all.iter().find(|l| {
        let h = &l.holder;
        h.local == local
            && h.remote == remote
            && netns.is_none_or(|n| h.netns == n)
            && (h.since - since).num_milliseconds().abs() < 1000
    });
    let Some(leak) = found else {
        return Err(QueryError::not_found(
            "local",
            format!("no leak held on {host} at {local} from {remote} since {since}"),
        )
        .into());
    };
    let others: Vec<Leak> = all
        .iter()
        .filter(|l| {
            l.holder.pid.is_some()
                && l.holder.pid == leak.holder.pid
                && !(l.holder.local == local && l.holder.remote == remote)
        })
        .take(50)
        .cloned()
        .collect();
    let mut cli = vec![format!("finwait who {}", leak.holder.remote)];
    if let Some(comm) = &leak.holder.comm {
        cli.push(format!("finwait leaks --host {host} --process {comm}"));
    }
    cli.push(format!("finwait explain {}", leak.kind.name()));
    // The same texts as `finwait explain`, from the shared vocabulary.
    let explain = [Topic::Kind(leak.kind), Topic::Confidence(leak.confidence)]
        .into_iter()
        .map(|t| {
            let e = explain::entry(t);
            (
                format!("{} ({})", t.name(), t.category()),
                vec![
                    ("What it means", e.means),
                    ("Who is at fault", e.fault),
                    ("What fixes it", e.fixes),
                    ("What does not", e.not),
                ],
            )
        })
        .collect();
    let page = OnePage {
        layout: Layout::new(&s, format!("Leak on {host}"), "leaks"),
        leak: rows(std::slice::from_ref(leak)).remove(0),
        explain,
        others: rows(&others),
        cli,
    };
    render(&page)
}

#[derive(Template)]
#[template(path = "service.html")]
struct ServicePage {
    layout: Layout,
    name: String,
    rows: Vec<LeakRow>,
    open: usize,
    hosts: Vec<(String, String)>,
    peers: Vec<(String, String, usize)>,
    data: String,
    since: Time,
    span: i64,
}

/// `GET /service?name=&since=`: a service's leaks over time, its hosts and peers.
pub async fn service(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let p = params(raw, &["name", "since"])?;
    let name = p.required("name")?;
    let since = p
        .instant("since")?
        .unwrap_or_else(|| Utc::now() - chrono::Duration::days(7));
    let q = LeakQuery {
        service: Some(name.clone()),
        ..LeakQuery::since(&s.ctx, since)
    };
    let all = leaks::leaks(&s.ctx.pool, &q)
        .await
        .map_err(QueryError::from)?;
    let mut hosts: Vec<String> = all.iter().map(|l| l.holder.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let mut peers: HashMap<(String, String), usize> = HashMap::new();
    for p in all.iter().filter_map(|l| l.peer.as_ref()) {
        let svc = view::service(p.service.as_deref(), p.container.as_deref());
        *peers.entry((p.host.clone(), svc)).or_default() += 1;
    }
    let mut peers: Vec<(String, String, usize)> =
        peers.into_iter().map(|((h, s), n)| (h, s, n)).collect();
    peers.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let since_s = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page = ServicePage {
        layout: Layout::new(&s, format!("Service {name}"), "leaks"),
        open: all.iter().filter(|l| l.until.is_none()).count(),
        rows: rows(&all),
        hosts: hosts
            .into_iter()
            .map(|h| (view::host_link(&h), h))
            .collect(),
        peers,
        data: view::link(
            "/api/v1/leaks",
            &[("service", &name), ("since", &since_s), ("limit", "10000")],
        ),
        since: Time::of(since),
        span: (Utc::now() - since).num_seconds().max(60),
        name,
    };
    render(&page)
}

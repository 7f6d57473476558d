//! The reports pages: the stored reports with their delivery states, and one report
//! as its self-contained HTML (the same document a schedule mails).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use finwait_vocab::report::ReportFormat;

use super::view::{self, Time};
use super::{DashState, Layout, PageError, PageResult, ask, params, render};
use crate::query::reports::ReportsQuery;
use crate::query::{Params, QueryError, Question};
use crate::report::{render::render as render_report, store};

struct Row {
    id: i64,
    schedule: String,
    start: Time,
    end: Time,
    baseline: bool,
    new: i64,
    resolved: i64,
    open: i64,
    hosts: i64,
    deliveries: BTreeMap<String, String>,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    layout: Layout,
    rows: Vec<Row>,
    next: Option<String>,
    data: String,
}

/// `GET /reports`: stored reports, newest first.
pub async fn list(State(s): State<DashState>, RawQuery(query): RawQuery) -> PageResult {
    let raw = Params::pairs(query.as_deref())?;
    let p = params(raw.clone(), ReportsQuery::PARAMS)?;
    let page = ask::<ReportsQuery>(&s, &p).await?;
    let rows = page
        .reports
        .into_iter()
        .map(|r| Row {
            id: r.id,
            schedule: r.schedule,
            start: Time::of(r.window.start),
            end: Time::of(r.window.end),
            baseline: r.baseline,
            new: r.now.new,
            resolved: r.now.resolved,
            open: r.now.open_at_end,
            hosts: r.now.hosts_affected,
            deliveries: r.deliveries,
        })
        .collect();
    let next = page
        .next_page_token
        .map(|t| view::relink("/reports", &raw, "page_token", &t));
    render(&ReportsPage {
        layout: Layout::new(&s, "Reports", "reports"),
        rows,
        next,
        data: view::relink("/api/v1/reports", &raw, "", ""),
    })
}

/// `GET /reports/{id}`: one report's HTML rendering, under a policy that allows its
/// inline styles and no script.
pub async fn one(
    State(s): State<DashState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| QueryError::bad("id", format!("{id:?} is not a report id")))?;
    let report = store::get(&s.ctx.pool, id).await?;
    let mut res = (
        [(header::CONTENT_TYPE, ReportFormat::Html.content_type())],
        render_report(&report, ReportFormat::Html),
    )
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::security::REPORT_CSP),
    );
    Ok(res)
}

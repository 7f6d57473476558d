//! The fleet dashboard: pages rendered on the server from the same query layer as the
//! API (one question, one parser, one query), readable without JavaScript; the
//! embedded script adds live refresh, local times and charts, whose data are the
//! API's JSON, linked from each chart. Every filter lives in the URL.
//!
//! Without a tokens file (`--insecure-loopback` only) the pages are open, like the
//! API. Otherwise a login page takes a token with the read role (an agent's ingest
//! token is refused with a 403) and sets a session cookie ([`session`]); every page
//! without one redirects there. Every response carries the security headers ([`security`]).

pub mod assets;
mod host;
mod leaks;
mod overview;
mod reports;
pub mod security;
pub mod session;
pub mod view;

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::auth::{self, LiveTokens};
use crate::error::ErrorCode;
use crate::query::{Context, Params, QueryError, Question};
use session::SessionKey;

/// What the pages share.
#[derive(Clone)]
pub struct DashState {
    /// The queries' context.
    pub ctx: Context,
    /// Tokens (login needs the read role; the session key is derived from the set in
    /// force, so a reload that changes them ends every session); `None` when the pages
    /// are open (no tokens file).
    pub auth: Option<LiveTokens>,
}

/// The frame around every page.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The page's title.
    pub title: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// Show the logout button (sessions are on).
    pub logout: bool,
    /// Offer live refresh: pages whose data change. Not the login form, where a
    /// refresh would wipe the token being typed, nor an error page.
    pub refresh: bool,
}

impl Layout {
    fn new(s: &DashState, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            logout: s.auth.is_some(),
            refresh: true,
        }
    }
}

/// A page that could not be shown, as an HTML page with the API's status code.
#[derive(Debug)]
pub struct PageError(QueryError);

impl From<QueryError> for PageError {
    fn from(e: QueryError) -> Self {
        PageError(e)
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "template failed");
        PageError(QueryError {
            code: ErrorCode::Internal,
            message: "the page could not be rendered".into(),
        })
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.code.log("page", &self.0.message);
        let status = self.0.code.http();
        let page = ErrorPage {
            layout: Layout {
                title: "Error".into(),
                nav: "",
                logout: false,
                refresh: false,
            },
            status,
            message: self.0.message,
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match page.render() {
            Ok(html) => (code, Html(html)).into_response(),
            Err(_) => (code, "error").into_response(),
        }
    }
}

/// A page's result.
pub type PageResult = Result<Html<String>, PageError>;

/// Renders a template.
fn render(t: &impl Template) -> PageResult {
    Ok(Html(t.render()?))
}

/// The query parameters of a page, checked against `allowed` (unknown ones are a
/// 400 naming them, as in the API).
fn params(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Params, QueryError> {
    Params::new(raw, allowed)
}

/// Parses and answers question `Q` from a page's parameters.
async fn ask<Q: Question>(s: &DashState, p: &Params) -> Result<Q::Answer, QueryError> {
    Q::parse(p, &s.ctx)?.run(&s.ctx).await
}

/// Sends pages without a session to the login page (when sessions are on).
async fn require_session(State(s): State<DashState>, req: Request, next: Next) -> Response {
    let Some(a) = &s.auth else {
        return next.run(req).await;
    };
    if SessionKey::new(&a.current()).admits(req.headers()) {
        return next.run(req).await;
    }
    let here = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    Redirect::to(&view::link("/login", &[("next", &here)])).into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    /// The last token was not accepted.
    failed: bool,
    /// The last token was accepted but may not read (an agent's).
    denied: bool,
}

/// The login page's frame: no navigation, no live refresh (it would wipe the token
/// being typed).
fn login_layout() -> Layout {
    Layout {
        title: "Log in".into(),
        nav: "",
        logout: false,
        refresh: false,
    }
}

async fn login_form(
    State(s): State<DashState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Params::pairs(query.as_deref()).unwrap_or_default();
    if s.auth.is_none() {
        return Redirect::to("/").into_response();
    }
    let page = LoginPage {
        layout: login_layout(),
        next: session::safe_next(q.get("next").map(String::as_str)),
        failed: q.contains_key("failed"),
        denied: false,
    };
    render(&page).into_response()
}

/// The login form's fields.
#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(State(s): State<DashState>, Form(f): Form<LoginForm>) -> Response {
    let Some(a) = &s.auth else {
        return Redirect::to("/").into_response();
    };
    let next = session::safe_next(Some(&f.next));
    let presented = format!("Bearer {}", f.token.trim());
    let set = a.current();
    match auth::check(Some(&set), Some(&presented), auth::Role::Read) {
        Ok(()) => {}
        Err(refused @ auth::Refused::WrongRole(_)) => {
            // An agent's token: a 403 saying which role is missing, and no session.
            refused.code().log("page", &refused.to_string());
            let page = LoginPage {
                layout: login_layout(),
                next,
                failed: false,
                denied: true,
            };
            return (StatusCode::FORBIDDEN, render(&page)).into_response();
        }
        Err(_) => {
            tracing::info!("dashboard login refused");
            return Redirect::to(&view::link("/login", &[("next", &next), ("failed", "1")]))
                .into_response();
        }
    }
    let cookie = session::set_cookie(&SessionKey::new(&set).issue(chrono::Utc::now().timestamp()));
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

async fn logout(headers: HeaderMap) -> Response {
    let _ = headers;
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

/// The dashboard's router: pages behind the session check, login, assets; all with
/// the security headers.
pub fn router(state: DashState) -> axum::Router {
    let pages = axum::Router::new()
        .route("/", get(overview::page))
        .route("/leaks", get(leaks::list))
        .route("/leak", get(leaks::one))
        .route("/service", get(leaks::service))
        .route("/host", get(host::page))
        .route("/who", get(host::who))
        .route("/reports", get(reports::list))
        .route("/reports/{id}", get(reports::one))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    axum::Router::new()
        .merge(pages)
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .with_state(state)
        .layer(axum::middleware::from_fn(security::headers))
}

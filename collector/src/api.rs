//! The HTTP/JSON query API under `/api/v1`, served on the gRPC port (HTTP/1.1).
//!
//! Each handler checks the token, reads its parameters through the question's
//! allow-list ([`crate::query`]) and serialises the answer as it is. Errors carry
//! [`ErrorCode`]'s HTTP status and a message naming the parameter at fault; never
//! driver text. When a tokens file is given, reading needs a token with the read role
//! (an agent's ingest token is a 403) or a dashboard session.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{self, LiveTokens};
use crate::dashboard::session::SessionKey;
use crate::error::ErrorCode;
use crate::query::fleet::FleetQuery;
use crate::query::groups::GroupsQuery;
use crate::query::hosts::HostsQuery;
use crate::query::leaks::LeakQuery;
use crate::query::reports::{Rendered, ReportQuery, ReportsQuery, RunReportQuery};
use crate::query::sockets::SocketsQuery;
use crate::query::timeline::TimelineQuery;
use crate::query::who::WhoQuery;
use crate::query::{self, Context, Params, QueryError, Question};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The queries' context.
    pub ctx: Context,
    /// Accepted tokens (reading needs the read role); `None` when reading is open
    /// (`--insecure-loopback` without a tokens file).
    pub tokens: Option<LiveTokens>,
    /// The dashboard's session key: a browser logged in to the pages may read too.
    pub sessions: Option<LiveTokens>,
}

/// Seconds a 503's `Retry-After` asks the client to wait.
const RETRY_AFTER_SECONDS: &str = "5";

/// An API error: a [`QueryError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(QueryError);

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.code.log("http", &self.0.message);
        let status =
            StatusCode::from_u16(self.0.code.http()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": { "code": format!("{:?}", self.0.code), "message": self.0.message }
        });
        if self.0.code == ErrorCode::Unauthenticated {
            // RFC 9110: a 401 names the scheme it wants.
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer")];
            return (status, challenge, Json(body)).into_response();
        }
        if self.0.code == ErrorCode::Unavailable {
            // Overload, a statement timeout or a database outage: all pass.
            let retry = [(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECONDS)];
            return (status, retry, Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

/// Token and parameters of one request.
fn admit(
    state: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
    allowed: &[&str],
) -> Result<Params, ApiError> {
    admit_with(state, headers, query, allowed, None)
}

/// [`admit`], with one more parameter taken from the path (which the query string
/// may not repeat).
fn admit_with(
    state: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
    allowed: &[&str],
    from_path: Option<(&str, String)>,
) -> Result<Params, ApiError> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    let session = || {
        given.is_none()
            && state
                .sessions
                .as_ref()
                .is_some_and(|s| SessionKey::new(&s.current()).admits(headers))
    };
    let set = state.tokens.as_ref().map(LiveTokens::current);
    match auth::check(set.as_deref(), given, auth::Role::Read) {
        Ok(()) => {}
        Err(_) if session() => {}
        Err(refused) => return Err(QueryError::from(refused).into()),
    }
    let mut pairs = Params::pairs(query)?;
    if let Some((k, v)) = from_path {
        if pairs.contains_key(k) {
            return Err(QueryError::bad(k, "given in the path; not again in the query").into());
        }
        pairs.insert(k.to_owned(), v);
    }
    Ok(Params::new(pairs, allowed)?)
}

/// A rendered report with its content type.
fn rendered(r: Rendered) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, r.format.content_type())],
        r.body,
    )
        .into_response()
}

/// `GET /api/v1/reports/{id}`.
async fn report_get(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let p = admit_with(
        &s,
        &headers,
        query.as_deref(),
        ReportQuery::PARAMS,
        Some(("id", id)),
    )?;
    Ok(rendered(query::ask::<ReportQuery>(&p, &s.ctx).await?))
}

/// `GET /api/v1/reports/run`.
async fn report_run(
    State(s): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let p = admit(&s, &headers, query.as_deref(), RunReportQuery::PARAMS)?;
    Ok(rendered(query::ask::<RunReportQuery>(&p, &s.ctx).await?))
}

/// `GET` of question `Q`: token, parameters, answer.
async fn handle<Q: Question>(
    State(s): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Q::Answer>, ApiError> {
    let p = admit(&s, &headers, query.as_deref(), Q::PARAMS)?;
    Ok(Json(query::ask::<Q>(&p, &s.ctx).await?))
}

/// `GET /api/v1/ready`: 200 `{"ready":true}` while the database answers, else 503
/// (with Retry-After) in the API's error shape. No token: it is for load balancers and
/// orchestrators, and says nothing but whether to send traffic here.
async fn ready(State(s): State<ApiState>) -> Response {
    if s.ctx.db.is_up() {
        return Json(serde_json::json!({ "ready": true })).into_response();
    }
    ApiError(QueryError {
        code: ErrorCode::Unavailable,
        message: "database unreachable; retry later".into(),
    })
    .into_response()
}

/// Any other path under `/api/v1`: a 404 in the API's error shape.
async fn unknown_path(uri: axum::http::Uri) -> ApiError {
    ApiError(QueryError::not_found(
        uri.path(),
        "no such endpoint; see /api/v1/{hosts,sockets,leaks,leaks/groups,who,timeline,fleet,reports,ready}",
    ))
}

/// The `/api/v1` router.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/hosts", get(handle::<HostsQuery>))
        .route("/api/v1/sockets", get(handle::<SocketsQuery>))
        .route("/api/v1/leaks", get(handle::<LeakQuery>))
        .route("/api/v1/leaks/groups", get(handle::<GroupsQuery>))
        .route("/api/v1/who", get(handle::<WhoQuery>))
        .route("/api/v1/timeline", get(handle::<TimelineQuery>))
        .route("/api/v1/fleet", get(handle::<FleetQuery>))
        .route("/api/v1/reports", get(handle::<ReportsQuery>))
        .route("/api/v1/reports/run", get(report_run))
        .route("/api/v1/reports/{id}", get(report_get))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/{*rest}", get(unknown_path))
        .with_state(state)
}

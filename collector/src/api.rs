//! The HTTP/JSON query API under `/api/v1`, served on the gRPC port (HTTP/1.1).
//!
//! Parameters come from an allow-list per endpoint; anything else, or a value that does
//! not parse, is a 400 naming the parameter. Errors use [`ErrorCode`]'s HTTP status and
//! never carry driver text. Reading needs a bearer token unless the collector listens on
//! loopback only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::ErrorCode;
use crate::ingest::Tokens;
use crate::leaks::{self, LeakQuery};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub pool: PgPool,
    /// Accepted read tokens; `None` when reading is open (loopback).
    pub tokens: Option<Arc<Tokens>>,
    /// Default minimum age of a leak, seconds.
    pub leak_threshold_s: f64,
    /// Allowed gap between holder and peer lifetimes, seconds.
    pub slack_s: f64,
}

/// An API error: status, stable code and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn bad(param: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError {
            code: ErrorCode::InvalidArgument,
            message: format!("{param}: {why}"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "query failed");
        ApiError {
            code: ErrorCode::Unavailable,
            message: "storage unavailable; retry later".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.http()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "code": format!("{:?}", self.code), "message": self.message } });
        (status, Json(body)).into_response()
    }
}

/// Query parameters, checked against an allow-list.
struct Params(HashMap<String, String>);

impl Params {
    fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
        if let Some(k) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad(
                k,
                format!("unknown parameter; allowed: {}", allowed.join(", ")),
            ));
        }
        Ok(Params(raw))
    }

    fn text(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }

    /// Seconds from `90`, `90s`, `15m`, `2h` or `1d`.
    fn seconds(&self, k: &str) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        parse_duration(&v).map(Some).ok_or_else(|| {
            ApiError::bad(k, format!("{v:?} is not a duration like 90, 15m, 2h or 1d"))
        })
    }

    /// An instant: RFC 3339, or a duration meaning that long ago.
    fn instant(&self, k: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        match parse_duration(&v) {
            Some(s) => Ok(Some(
                Utc::now() - chrono::Duration::milliseconds((s * 1000.0) as i64),
            )),
            None => Err(ApiError::bad(
                k,
                format!("{v:?} is neither RFC 3339 nor a duration like 2h"),
            )),
        }
    }

    fn limit(&self) -> Result<i64, ApiError> {
        match self.text("limit") {
            None => Ok(1000),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=10_000).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    "limit",
                    format!("{v:?} is not a whole number from 1 to 10000"),
                )),
            },
        }
    }
}

/// Parses `90`, `90s`, `15m`, `2h`, `1d` into seconds.
pub fn parse_duration(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Some(n * mult)
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(tokens) = &state.tokens else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if tokens.accepts(t.trim()) => Ok(()),
        _ => Err(ApiError {
            code: ErrorCode::Unauthenticated,
            message: "reading needs `Authorization: Bearer <token>`".into(),
        }),
    }
}

/// `GET /api/v1/leaks`.
#[derive(Serialize)]
struct LeaksBody {
    leaks: Vec<leaks::Leak>,
}

async fn get_leaks(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<LeaksBody>, ApiError> {
    authorize(&state, &headers)?;
    let p = Params::new(raw, &["since", "min_age", "host", "process", "limit"])?;
    let q = LeakQuery {
        since: p
            .instant("since")?
            .unwrap_or_else(|| Utc::now() - chrono::Duration::hours(24)),
        min_age_s: p.seconds("min_age")?.unwrap_or(state.leak_threshold_s),
        slack_s: state.slack_s,
        host: p.text("host"),
        process: p.text("process"),
        limit: p.limit()?,
    };
    let span = tracing::info_span!("api_leaks", host = ?q.host, process = ?q.process);
    let _e = span.enter();
    Ok(Json(LeaksBody {
        leaks: leaks::leaks(&state.pool, &q).await?,
    }))
}

/// One host in `GET /api/v1/hosts`.
#[derive(Serialize, sqlx::FromRow)]
struct HostRow {
    hostname: String,
    machine_id: String,
    agent_version: String,
    last_seen: Option<DateTime<Utc>>,
    labels: serde_json::Value,
    states: serde_json::Value,
}

#[derive(Serialize)]
struct HostsBody {
    hosts: Vec<HostRow>,
}

async fn get_hosts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<HostsBody>, ApiError> {
    authorize(&state, &headers)?;
    let p = Params::new(raw, &["limit"])?;
    let hosts = sqlx::query_as::<_, HostRow>(include_str!("sql/hosts.sql"))
        .bind(p.limit()?)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(HostsBody { hosts }))
}

/// The `/api/v1` router.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/leaks", get(get_leaks))
        .route("/api/v1/hosts", get(get_hosts))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_nonsense_does_not() {
        assert_eq!(parse_duration("90"), Some(90.0));
        assert_eq!(parse_duration("15m"), Some(900.0));
        assert_eq!(parse_duration("2h"), Some(7200.0));
        assert_eq!(parse_duration("1d"), Some(86_400.0));
        assert_eq!(parse_duration("-5"), None);
        assert_eq!(parse_duration("5 weeks"), None);
        assert_eq!(parse_duration("h"), None);
    }
}

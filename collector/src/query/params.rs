//! Named query parameters, checked against an allow-list, with the parsers every
//! question shares. Each error names its parameter.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::time::{DURATION_HELP, INSTANT_HELP, InstantSpec, parse_duration};

use super::{PageReq, QueryError};

/// Longest parameter value accepted, bytes.
pub const MAX_VALUE: usize = 1024;
/// Longest duration accepted (ten years), seconds: longer ones overflow an interval.
pub const MAX_DURATION_S: f64 = 10.0 * 365.0 * 86_400.0;

/// Default page length.
pub const DEFAULT_LIMIT: i64 = 1000;
/// Longest page.
pub const MAX_LIMIT: i64 = 10_000;

/// The parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Reads a URL query string (`a=1&b=2`, percent-encoded) as pairs: a parameter
    /// given twice is refused (which one was meant?), as is one that does not decode.
    pub fn pairs(query: Option<&str>) -> Result<HashMap<String, String>, QueryError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| QueryError::bad("query", format!("does not decode: {e}")))?;
        let mut out = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if out.contains_key(&k) {
                return Err(QueryError::bad(&k, "given more than once"));
            }
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Takes raw name/value pairs; a name outside `allowed` is an error naming it, and
    /// so is a value over [`MAX_VALUE`] bytes or holding a NUL (no column can hold it).
    pub fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Params, QueryError> {
        let mut bad: Vec<(&String, &str)> = raw
            .iter()
            .filter_map(|(k, v)| {
                if v.len() > MAX_VALUE {
                    Some((k, "longer than 1024 bytes"))
                } else if v.contains('\0') {
                    Some((k, "contains a NUL character"))
                } else {
                    None
                }
            })
            .collect();
        bad.sort();
        if let Some((k, why)) = bad.first() {
            return Err(QueryError::bad(k, why));
        }
        let mut unknown: Vec<&String> = raw
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(QueryError::bad(
                k,
                format!("unknown parameter; allowed: {}", allowed.join(", ")),
            ));
        }
        Ok(Params(raw))
    }

    /// Builds from pairs whose empty values mean "not given" (gRPC fields).
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, String)>,
        allowed: &[&str],
    ) -> Result<Params, QueryError> {
        let raw = fields
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Params::new(raw, allowed)
    }

    /// A text value, absent when empty.
    pub fn text(&self, k: &str) -> Option<String> {
        self.0
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A required text value.
    pub fn required(&self, k: &str) -> Result<String, QueryError> {
        self.text(k).ok_or_else(|| QueryError::bad(k, "required"))
    }

    /// Seconds from `90`, `90s`, `15m`, `2h` or `1d`.
    pub fn seconds(&self, k: &str) -> Result<Option<f64>, QueryError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        match parse_duration(&v) {
            Some(s) if s <= MAX_DURATION_S => Ok(Some(s)),
            Some(_) => Err(QueryError::bad(k, format!("{v:?} is longer than 3650d"))),
            None => Err(QueryError::bad(k, format!("{v:?} is not {DURATION_HELP}"))),
        }
    }

    /// An instant: RFC 3339, or a duration meaning that long ago.
    pub fn instant(&self, k: &str) -> Result<Option<DateTime<Utc>>, QueryError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        InstantSpec::parse(&v)
            .map(|i| Some(i.resolve(Utc::now())))
            .ok_or_else(|| QueryError::bad(k, format!("{v:?} is not {INSTANT_HELP}")))
    }

    /// A whole number in `range`.
    pub fn number(
        &self,
        k: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, QueryError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        match v.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(QueryError::bad(
                k,
                format!(
                    "{v:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A value of a vocabulary type (a TCP state in any spelling, a leak kind, a
    /// confidence), its parse error naming the choices.
    pub fn parsed<T: std::str::FromStr<Err = String>>(
        &self,
        k: &str,
    ) -> Result<Option<T>, QueryError> {
        self.text(k)
            .map(|v| v.parse::<T>().map_err(|e| QueryError::bad(k, e)))
            .transpose()
    }

    /// A TCP state in any spelling.
    pub fn state(&self, k: &str) -> Result<Option<TcpState>, QueryError> {
        self.parsed(k)
    }

    /// One of `choices`.
    pub fn choice(
        &self,
        k: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, QueryError> {
        let Some(v) = self.text(k) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&v))
            .copied()
            .map(Some)
            .ok_or_else(|| {
                QueryError::bad(k, format!("{v:?} is not one of {}", choices.join(", ")))
            })
    }

    /// An `addr:port` endpoint (IPv6 as `[addr]:port`).
    pub fn endpoint(&self, k: &str) -> Result<(IpAddr, u16), QueryError> {
        let v = self.required(k)?;
        let sa: SocketAddr = v.parse().map_err(|_| {
            QueryError::bad(
                k,
                format!("{v:?} is not addr:port (IPv6 as [addr]:port, e.g. [fd00::1]:443)"),
            )
        })?;
        // An IPv4 peer of an IPv6 socket is stored as ::ffff:a.b.c.d; ask as written.
        Ok((sa.ip(), sa.port()))
    }

    /// A span of time cut into buckets: `since` (default 24 h before `until`), `until`
    /// (default now) and `step` (at least `min_step_s`; default about `points` buckets,
    /// never more than ten pages of them). Returns (since, until, step in seconds).
    pub fn span(
        &self,
        points: i64,
        min_step_s: i64,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>, i64), QueryError> {
        let until = self.instant("until")?.unwrap_or_else(Utc::now);
        let since = self
            .instant("since")?
            .unwrap_or_else(|| until - chrono::Duration::hours(24));
        if since >= until {
            return Err(QueryError::bad("since", "must be before until"));
        }
        let span = (until - since).num_seconds().max(1);
        let step_s = match self.seconds("step")? {
            Some(s) if s < min_step_s as f64 => {
                return Err(QueryError::bad(
                    "step",
                    format!("must be at least {min_step_s}s"),
                ));
            }
            Some(s) => s as i64,
            None => ((span + points - 1) / points).max(min_step_s),
        };
        if span / step_s > MAX_LIMIT * 10 {
            return Err(QueryError::bad(
                "step",
                format!(
                    "{step_s}s gives {} buckets over the span; at most {}",
                    span / step_s,
                    MAX_LIMIT * 10
                ),
            ));
        }
        Ok((since, until, step_s))
    }

    /// `limit` and `page_token`.
    pub fn page(&self) -> Result<PageReq, QueryError> {
        let limit = self
            .number("limit", 1..=MAX_LIMIT)?
            .unwrap_or(DEFAULT_LIMIT);
        let offset = match self.text("page_token") {
            None => 0,
            Some(t) => t
                .strip_prefix('o')
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    QueryError::bad("page_token", "not a next_page_token from an earlier answer")
                })?,
        };
        Ok(PageReq { offset, limit })
    }
}

/// The token of the page starting at `offset`.
pub(super) fn page_token(offset: i64) -> String {
    format!("o{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, QueryError> {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allowed,
        )
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e = p(&[("limit", "5"), ("hots", "a")], &["limit", "host"]).expect_err("must fail");
        assert!(e.message.starts_with("hots: unknown parameter"), "{e}");
    }

    #[test]
    fn pages_round_trip_and_bad_tokens_are_named() {
        let q = p(
            &[("limit", "2"), ("page_token", "o4")],
            &["limit", "page_token"],
        )
        .and_then(|p| p.page())
        .expect("page");
        assert_eq!(
            q,
            PageReq {
                offset: 4,
                limit: 2
            }
        );
        let (page, next) = q.slice(vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(page, vec![4, 5]);
        assert_eq!(next.as_deref(), Some("o6"));
        let (page, next) = q.slice(vec![0, 1, 2, 3, 4, 5]);
        assert_eq!((page, next), (vec![4, 5], None));
        for bad in ["x", "o-1", "7"] {
            let e = p(&[("page_token", bad)], &["page_token"])
                .and_then(|p| p.page())
                .expect_err("must fail");
            assert!(e.message.starts_with("page_token:"), "{e}");
        }
        let e = p(&[("limit", "0")], &["limit"])
            .and_then(|p| p.page())
            .expect_err("must fail");
        assert!(e.message.starts_with("limit:"), "{e}");
    }

    #[test]
    fn endpoints_states_and_instants() {
        let q = p(
            &[
                ("endpoint", "[fd77::a]:8080"),
                ("state", "close-wait"),
                ("at", "2h"),
            ],
            &["endpoint", "state", "at"],
        )
        .expect("params");
        assert_eq!(
            q.endpoint("endpoint").expect("endpoint"),
            ("fd77::a".parse().expect("ip"), 8080)
        );
        assert_eq!(q.state("state").expect("state"), Some(TcpState::CloseWait));
        let at = q.instant("at").expect("at").expect("some");
        let ago = (Utc::now() - at).num_seconds();
        assert!((7195..=7205).contains(&ago), "{ago}");
        let bad = p(&[("endpoint", "10.0.0.1")], &["endpoint"]).expect("params");
        assert!(
            bad.endpoint("endpoint")
                .expect_err("must fail")
                .message
                .starts_with("endpoint:")
        );
        let bad = p(&[("state", "HALF_OPEN")], &["state"]).expect("params");
        assert!(
            bad.state("state")
                .expect_err("must fail")
                .message
                .starts_with("state:")
        );
    }
}

//! The collector's base URL (`--server`) and query strings.
//!
//! Query values are percent-encoded by hand: everything but RFC 3986's unreserved
//! characters is escaped, so `[`, `]` and `:` of IPv6 endpoints and the `+` of an
//! RFC 3339 offset (which form decoding would read as a space) reach the server intact.

use std::fmt;

use hyper::Uri;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1 over TCP.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
}

/// Where the collector's API is: scheme, host, port and an optional path prefix (for a
/// collector behind a reverse proxy under `/finwait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    scheme: Scheme,
    /// Host name or IP address, without IPv6 brackets: what is dialled and what the
    /// TLS certificate must name.
    host: String,
    port: u16,
    /// `host:port` as written (brackets kept), for the `Host` header.
    authority: String,
    /// Path prefix without a trailing slash; empty for none.
    prefix: String,
    /// The URL as given, without a trailing slash, for messages.
    shown: String,
}

impl ServerUrl {
    /// Parses `http://host[:port][/prefix]` or `https://…`.
    pub fn parse(text: &str) -> Result<ServerUrl, String> {
        let trimmed = text.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("{text:?} is not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(format!("{text:?} must start with http:// or https://"));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(format!("{text:?} has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: user names in the URL are not supported; use FINWAIT_TOKEN or --token-file"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?} must not have a query string"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        Ok(ServerUrl {
            scheme,
            host,
            port,
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            shown: trimmed.to_string(),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host to dial and to check the certificate against (no brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to dial.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The value of the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target for `path` (e.g. `/api/v1/leaks`) with `query`.
    pub fn target(&self, path: &str, query: &Query) -> String {
        format!("{}{}{}", self.prefix, path, query.encode())
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Query parameters in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    /// An empty query.
    pub fn new() -> Query {
        Query::default()
    }

    /// Adds `key=value`.
    pub fn push(&mut self, key: &'static str, value: impl fmt::Display) {
        self.0.push((key, value.to_string()));
    }

    /// Adds `key=value` when there is a value.
    pub fn push_opt(&mut self, key: &'static str, value: Option<impl fmt::Display>) {
        if let Some(v) = value {
            self.push(key, v);
        }
    }

    /// `?k=v&k2=v2` with keys and values percent-encoded, or empty for no parameters.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
        }
        out
    }
}

/// Escapes every byte except RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_endpoints_and_offsets_survive_encoding() {
        assert_eq!(
            percent_encode("[2001:db8::1]:8080"),
            "%5B2001%3Adb8%3A%3A1%5D%3A8080"
        );
        assert_eq!(
            percent_encode("2026-11-23T03:12:00+01:00"),
            "2026-11-23T03%3A12%3A00%2B01%3A00"
        );
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(percent_encode("close_wait-1.x~"), "close_wait-1.x~");
    }

    #[test]
    fn target_keeps_parameter_order_and_prefix() {
        let s = ServerUrl::parse("https://collector.example:8443/finwait/").expect("valid");
        let mut q = Query::new();
        q.push("endpoint", "[::1]:80");
        q.push_opt("at", None::<&str>);
        q.push_opt("limit", Some(5));
        assert_eq!(
            s.target("/api/v1/who", &q),
            "/finwait/api/v1/who?endpoint=%5B%3A%3A1%5D%3A80&limit=5"
        );
        assert_eq!(
            s.target("/api/v1/hosts", &Query::new()),
            "/finwait/api/v1/hosts"
        );
        assert_eq!(s.to_string(), "https://collector.example:8443/finwait");
    }

    #[test]
    fn server_urls_are_checked() {
        let s = ServerUrl::parse("http://127.0.0.1:7070").expect("valid");
        assert_eq!(
            (s.scheme(), s.host(), s.port()),
            (Scheme::Http, "127.0.0.1", 7070)
        );
        assert_eq!(s.target("/api/v1/hosts", &Query::new()), "/api/v1/hosts");
        let s = ServerUrl::parse("http://[::1]:7070").expect("valid");
        assert_eq!((s.host(), s.authority()), ("::1", "[::1]:7070"));
        let s = ServerUrl::parse("https://collector").expect("valid");
        assert_eq!(s.port(), 443);
        for bad in [
            "127.0.0.1:7070",
            "ftp://x",
            "http://",
            "http://u:p@x",
            "http://x/?a=b",
            "not a url",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}

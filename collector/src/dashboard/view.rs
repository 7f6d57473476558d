//! What templates show, pre-formatted: times (UTC text the browser turns into local
//! time, UTC kept on hover), ages, endpoints, services, and links whose query strings
//! are encoded here, once.

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{Side, Socket};
use finwait_vocab::time::format_age;

/// An instant as a `<time>` element shows it.
#[derive(Debug, Clone, Default)]
pub struct Time {
    /// RFC 3339, for the `datetime` attribute (the browser's local time is derived).
    pub iso: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC, shown without script and on hover.
    pub utc: String,
}

impl Time {
    /// Formats `t`.
    pub fn of(t: DateTime<Utc>) -> Time {
        Time {
            iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            utc: t.format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }
}

/// Seconds as `3m12s`, `2h05m`, `3d04h`.
pub fn age(seconds: i64) -> String {
    format_age(seconds)
}

/// `service (container)`, the container left out when the service names it already.
pub fn service(service: Option<&str>, container: Option<&str>) -> String {
    match (service, container) {
        (Some(s), Some(c)) if !s.contains(c) => format!("{s} ({c})"),
        (Some(s), _) => s.to_owned(),
        (None, Some(c)) => format!("({c})"),
        (None, None) => String::new(),
    }
}

/// Percent-encodes a query component (everything but RFC 3986's unreserved set).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&...`, skipping empty values.
pub fn link(path: &str, params: &[(&str, &str)]) -> String {
    let q: Vec<String> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// `path` with a request's parameters (sorted, so links are stable), `key` set to
/// `value` (replacing any earlier one); an empty `key` adds nothing.
pub fn relink(
    path: &str,
    raw: &std::collections::HashMap<String, String>,
    key: &str,
    value: &str,
) -> String {
    let mut q: Vec<(&str, &str)> = raw
        .iter()
        .filter(|(k, _)| k.as_str() != key)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !key.is_empty() {
        q.push((key, value));
    }
    q.sort();
    link(path, &q)
}

/// The host page's link.
pub fn host_link(host: &str) -> String {
    link("/host", &[("name", host)])
}

/// The service page's link; empty when there is no service.
pub fn service_link(service: Option<&str>) -> String {
    service.map_or_else(String::new, |s| link("/service", &[("name", s)]))
}

/// One end of a connection, as a table shows it.
#[derive(Debug, Clone, Default)]
pub struct End {
    /// Hostname.
    pub host: String,
    /// Its page.
    pub host_link: String,
    /// `service (container)`.
    pub service: String,
    /// The service's page, empty without one.
    pub service_link: String,
    /// Holding pid, empty when none.
    pub pid: String,
    /// Command name.
    pub comm: String,
    /// Command line.
    pub cmdline: String,
    /// Descriptor.
    pub fd: String,
    /// State name.
    pub state: String,
    /// Local endpoint.
    pub local: String,
    /// Remote endpoint.
    pub remote: String,
    /// Entered its state.
    pub since: Time,
    /// Time in state.
    pub age: String,
    /// Unread bytes.
    pub rx: String,
    /// Left its state, when it did.
    pub until: Option<Time>,
    /// Network namespace inode.
    pub netns: String,
}

impl End {
    /// From a leak's side.
    pub fn of_side(s: &Side) -> End {
        End {
            host: s.host.clone(),
            host_link: host_link(&s.host),
            service: service(s.service.as_deref(), s.container.as_deref()),
            service_link: service_link(s.service.as_deref()),
            pid: s.pid.map(|p| p.to_string()).unwrap_or_default(),
            comm: s.comm.clone().unwrap_or_default(),
            cmdline: s.cmdline.clone().unwrap_or_default(),
            fd: s.fd.map(|f| f.to_string()).unwrap_or_default(),
            state: s.state.name().to_owned(),
            local: s.local.clone(),
            remote: s.remote.clone(),
            since: Time::of(s.since),
            age: age(s.age_s),
            rx: s.rx_queue.to_string(),
            until: s.until.map(Time::of),
            netns: s.netns.to_string(),
        }
    }

    /// From a socket view.
    pub fn of_socket(s: &Socket) -> End {
        End {
            host: s.host.clone(),
            host_link: host_link(&s.host),
            service: service(s.service.as_deref(), s.container.as_deref()),
            service_link: service_link(s.service.as_deref()),
            pid: s.pid.map(|p| p.to_string()).unwrap_or_default(),
            comm: s.comm.clone().unwrap_or_default(),
            cmdline: s.cmdline.clone().unwrap_or_default(),
            fd: s.fd.map(|f| f.to_string()).unwrap_or_default(),
            state: s.state.name().to_owned(),
            local: s.local.clone(),
            remote: s.remote.clone(),
            since: Time::of(s.since),
            age: age(s.age_s),
            rx: s.rx_queue.to_string(),
            until: s.until.map(Time::of),
            netns: s.netns.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_their_values_once() {
        assert_eq!(
            link(
                "/leaks",
                &[("service", "pod/web 1"), ("host", ""), ("x", "a&b=c")]
            ),
            "/leaks?service=pod%2Fweb%201&x=a%26b%3Dc"
        );
        assert_eq!(link("/leaks", &[]), "/leaks");
        assert_eq!(
            service(Some("docker/abc123"), Some("abc123")),
            "docker/abc123"
        );
        assert_eq!(service(Some("pod/web"), Some("abc123")), "pod/web (abc123)");
    }
}

//! The real `finwait` binary against a tiny HTTP server started by each test on
//! 127.0.0.1 (a std `TcpListener` thread answering canned, contract-shaped JSON), and
//! once over TLS with a throwaway CA. The real collector end to end is tested with the
//! collector.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{Leak, LeaksPage, Side};
use finwait_vocab::{Confidence, LeakKind, TcpState};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// `GET /path?query HTTP/1.1`.
    line: String,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status line after `HTTP/1.1 ` and body.
type Answer = (&'static str, String);

/// A canned HTTP server; it lives until the test process ends.
struct Canned {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Canned {
    fn start(answer: impl Fn(&Seen) -> Answer + Send + 'static) -> Canned {
        Canned::start_with(answer, |stream| Box::new(stream))
    }

    /// `wrap` turns an accepted connection into the stream spoken on (TLS or not).
    fn start_with(
        answer: impl Fn(&Seen) -> Answer + Send + 'static,
        wrap: impl Fn(TcpStream) -> Box<dyn ReadWrite> + Send + 'static,
    ) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut stream = wrap(stream);
                let Some(request) = read_head(&mut stream) else {
                    continue;
                };
                let (status, body) = answer(&request);
                record.lock().expect("not poisoned").push(request);
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.flush();
            }
        });
        Canned { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads a request head (a GET has no body).
fn read_head(stream: &mut dyn ReadWrite) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.split("\r\n");
    let line = lines.next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Seen { line, headers })
}

/// Runs `finwait` with a clean environment plus `env`.
fn finwait(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finwait"));
    for var in [
        "FINWAIT_SERVER",
        "FINWAIT_TOKEN",
        "FINWAIT_TOKEN_FILE",
        "FINWAIT_CA",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("finwait runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CLOSE_WAIT leak held on `host`, built from the shared answer types so that it is
/// shaped exactly as the collector writes it.
fn leak(host: &str) -> Leak {
    let since = DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc);
    Leak {
        kind: LeakKind::CloseWait,
        confidence: Confidence::Exact,
        holder: Side {
            host: host.into(),
            netns: 4_026_531_840,
            pid: Some(4242),
            comm: Some("srv".into()),
            cmdline: Some("srv".into()),
            fd: Some(7),
            service: Some("srv.service".into()),
            container: None,
            state: TcpState::CloseWait,
            local: "10.77.0.10:8080".into(),
            remote: "10.77.0.11:40000".into(),
            since,
            age_s: 192,
            rx_queue: 0,
            until: None,
        },
        peer: None,
        until: None,
        hint: LeakKind::CloseWait.hint().into(),
    }
}

fn leaks_page(leak_hosts: &[&str], next: Option<&str>) -> String {
    let page = LeaksPage {
        leaks: leak_hosts.iter().map(|h| leak(h)).collect(),
        time_wait_pressure: vec![],
        next_page_token: next.map(String::from),
    };
    serde_json::to_string(&page).expect("answers serialise")
}

#[test]
fn json_prints_the_body_byte_for_byte() {
    // Odd spacing, key order, non-ASCII and no final newline must all survive.
    let body = format!(
        "{{ \"next_page_token\" : null,\n  \"leaks\": [{}] , \"time_wait_pressure\":[], \"note\": \"h\u{00e9}\" }}",
        serde_json::to_string_pretty(&leak("app-1")).expect("answers serialise")
    );
    let expected = body.clone();
    let server = Canned::start(move |_| ("200 OK", body.clone()));
    let out = finwait(&["--server", &server.url(), "leaks", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, expected.as_bytes());
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert_eq!(server.seen()[0].target(), "/api/v1/leaks");
}

#[test]
fn the_token_from_finwait_token_is_sent_as_bearer() {
    let server = Canned::start(|_| ("200 OK", r#"{"hosts": [], "next_page_token": null}"#.into()));
    let out = finwait(
        &["--server", &server.url(), "hosts"],
        &[("FINWAIT_TOKEN", "s3cret-token\n")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "no hosts have reported to this collector yet\n"
    );
    let out = finwait(&["--server", &server.url(), "hosts"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = server.seen();
    assert_eq!(seen[0].header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(seen[1].header("authorization"), None, "no token, no header");
    assert_eq!(
        seen[0].header("host"),
        Some(server.addr.to_string().as_str())
    );
}

#[test]
fn a_token_file_takes_precedence_and_is_never_printed() {
    let dir = std::env::temp_dir().join(format!("finwait-cli-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("token");
    std::fs::write(&file, "from-file\n").expect("write token");
    let server = Canned::start(|_| {
        (
            "401 Unauthorized",
            r#"{"error": {"code": "Unauthenticated", "message": "reading needs `Authorization: Bearer <token>`"}}"#
                .into(),
        )
    });
    let path = file.to_str().expect("utf-8 path");
    let out = finwait(
        &["--server", &server.url(), "--token-file", path, "hosts"],
        &[("FINWAIT_TOKEN", "from-env")],
    );
    assert_eq!(
        server.seen()[0].header("authorization"),
        Some("Bearer from-file")
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "finwait: reading needs `Authorization: Bearer <token>` (HTTP 401 Unauthenticated)\n"
    );
    assert!(!stderr(&out).contains("from-file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_400_becomes_one_line_with_the_servers_message() {
    let server = Canned::start(|_| {
        (
            "400 Bad Request",
            r#"{"error": {"code": "InvalidArgument", "message": "kind: unknown parameter; allowed: since, min_age, host, process, limit"}}"#
                .into(),
        )
    });
    let out = finwait(
        &["--server", &server.url(), "leaks", "--kind", "close_wait"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr(&out),
        "finwait: kind: unknown parameter; allowed: since, min_age, host, process, limit (HTTP 400 InvalidArgument)\n"
    );
    assert_eq!(server.seen()[0].target(), "/api/v1/leaks?kind=close_wait");
}

#[test]
fn service_by_and_any_state_spelling_reach_the_query_string() {
    let server = Canned::start(|req| {
        let body = if req.target().starts_with("/api/v1/leaks/groups") {
            r#"{"groups": [], "next_page_token": null}"#
        } else {
            r#"{"host": "a", "as_of": null, "sockets": [], "next_page_token": null}"#
        };
        ("200 OK", body.into())
    });
    let url = server.url();
    let runs: [&[&str]; 2] = [
        &[
            "leaks",
            "--groups",
            "--by",
            "service",
            "--service",
            "pod/1f2e",
        ],
        &[
            "sockets",
            "--host",
            "a",
            "--state",
            "estab",
            "--service",
            "srv.service",
        ],
    ];
    for args in runs {
        let out = finwait(&[&["--server", url.as_str()], args].concat(), &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let targets: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.target().to_string())
        .collect();
    assert_eq!(
        targets,
        [
            "/api/v1/leaks/groups?service=pod%2F1f2e&by=service",
            "/api/v1/sockets?host=a&state=ESTABLISHED&service=srv.service",
        ]
    );
}

#[test]
fn an_endpoint_the_collector_lacks_is_named() {
    let server = Canned::start(|_| ("404 Not Found", String::new()));
    let out = finwait(&["--server", &server.url(), "who", "[::1]:8080"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "finwait: {} answered HTTP 404 Not Found for /api/v1/who\n",
            server.url()
        )
    );
    assert_eq!(
        server.seen()[0].target(),
        "/api/v1/who?endpoint=%5B%3A%3A1%5D%3A8080"
    );
}

#[test]
fn connection_refused_names_the_server() {
    // A port that was just free: bind, note it, release it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = finwait(&["--server", &url, "leaks"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("finwait: cannot connect to {url}: ")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_silent_server_times_out_in_one_line() {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let url = format!("http://{addr}");
    let started = std::time::Instant::now();
    let out = finwait(&["--server", &url, "--timeout", "1", "hosts"], &[]);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("finwait: no complete answer from {url} within 1s\n")
    );
}

#[test]
fn all_follows_next_page_token_to_the_last_page() {
    let server = Canned::start(|req| {
        let body = if req.target().contains("page_token=p%2F2%2B") {
            leaks_page(&["app-3"], None)
        } else if req.target().contains("page_token=") {
            // Any other token is a client bug: answer like the collector would.
            return (
                "400 Bad Request",
                r#"{"error": {"code": "InvalidArgument", "message": "page_token: not one of ours"}}"#
                    .into(),
            );
        } else {
            leaks_page(&["app-1", "app-2"], Some("p/2+"))
        };
        ("200 OK", body)
    });
    let url = server.url();

    let out = finwait(&["--server", &url, "--limit", "2", "leaks", "--all"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for host in ["app-1", "app-2", "app-3"] {
        assert!(text.contains(host), "{host} missing:\n{text}");
    }
    assert_eq!(text.matches("  hint: ").count(), 3, "{text}");
    assert!(!text.contains("the server has more"), "{text}");
    let targets: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.target().to_string())
        .collect();
    assert_eq!(
        targets,
        [
            "/api/v1/leaks?limit=2",
            "/api/v1/leaks?limit=2&page_token=p%2F2%2B"
        ]
    );

    // --json --all: one object of the same shape holding every page's leaks.
    let out = finwait(
        &["--server", &url, "--json", "--all", "--limit", "2", "leaks"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(merged["leaks"].as_array().map(Vec::len), Some(3));
    assert_eq!(merged["next_page_token"], serde_json::Value::Null);
    assert_eq!(merged["leaks"][2]["holder"]["host"], "app-3");

    // Without --all: the first page and a note that there is more.
    let out = finwait(&["--server", &url, "--limit", "2", "leaks"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("app-2") && !text.contains("app-3"), "{text}");
    assert!(
        text.ends_with("(the server has more: add --all to fetch every page, or raise --limit)\n")
    );
}

#[test]
fn a_page_token_that_repeats_stops_the_walk() {
    let server = Canned::start(|_| ("200 OK", leaks_page(&["app-1"], Some("same"))));
    let out = finwait(&["--server", &server.url(), "leaks", "--all"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("repeated a page token"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn a_non_json_success_is_reported_not_printed_as_a_table() {
    let server = Canned::start(|_| ("200 OK", "<html>proxy login</html>".into()));
    let out = finwait(&["--server", &server.url(), "hosts"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "finwait: unexpected answer from {} for /api/v1/hosts: not a JSON object",
            server.url()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_flags_are_one_line_and_status_2() {
    for args in [
        &["leaks", "--since", "last tuesday"][..],
        &["who", "10.0.0.1"],
        &["--limit", "0", "hosts"],
        &["--server", "127.0.0.1:7070", "hosts"],
        &["explain", "FIN_WAIT3"],
        &[],
    ] {
        let out = finwait(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("finwait: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = finwait(&["leaks", "--help"], &[]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("Which processes leak connections"));
}

#[test]
fn https_with_the_given_ca() {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "finwait test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .expect("server config");
    let config = Arc::new(config);
    let server = Canned::start_with(
        |_| ("200 OK", r#"{"hosts": [], "next_page_token": null}"#.into()),
        move |tcp| {
            let conn = rustls::ServerConnection::new(config.clone()).expect("TLS session");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        },
    );

    let dir = std::env::temp_dir().join(format!("finwait-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let url = format!("https://{}", server.addr);
    let ca_path = ca_file.to_str().expect("utf-8 path");

    let out = finwait(
        &["--server", &url, "--json", "hosts"],
        &[("FINWAIT_CA", ca_path)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), r#"{"hosts": [], "next_page_token": null}"#);

    // A CA that did not sign the server's certificate: refused, in one line.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|mut p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.self_signed(&other_key)
        })
        .expect("other CA");
    let other_file = dir.join("other.pem");
    std::fs::write(&other_file, other.pem()).expect("write other CA");
    let other_path = other_file.to_str().expect("utf-8 path");
    let out = finwait(&["--server", &url, "--ca", other_path, "hosts"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("finwait: TLS handshake with {url} failed: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

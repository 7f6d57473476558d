//! Hostile requests to the query API and the pages (issue 11): parameters carrying
//! SQL, NUL, CR/LF are values, never code or headers; request lines and headers too
//! large for the server are refused (414, 431) before any handler runs; and nothing
//! already stored is touched, on HTTP and gRPC alike.

use finwait_proto::v1 as pb;
use finwait_proto::v1::TcpState::{CloseWait, Established};
use finwait_testkit::{Privilege, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{AgentStream, Collector, full, identity, now_ms, sock};

/// One HTTP/1.1 answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Status code; 0 when the server closed without one.
    pub(crate) status: u16,
    /// Header lines as sent (name: value).
    pub(crate) headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub(crate) body: String,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics, naming it, when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Writes `raw` (a whole request) and reads the answer until the server closes.
pub(crate) async fn request(addr: std::net::SocketAddr, raw: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading a large request to its end.
    let _ = s.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers within 10 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn get(c: &Collector, path: &str) -> Reply {
    request(
        c.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// One host with a CLOSE_WAIT held by proc4 and an ESTABLISHED socket.
async fn seeded() -> (Collector, AgentStream) {
    let c = Collector::start(&[]).await;
    let mut a = AgentStream::open(c.addr, identity("h1"), 1, "h1", None)
        .await
        .expect("hello");
    let b = full(
        1,
        1,
        now_ms() - 5_000,
        vec![
            sock(1, CloseWait, 80, 1000, Some(4)),
            sock(2, Established, 80, 1001, Some(5)),
        ],
    );
    assert!(matches!(
        a.send(b).await.expect("answer"),
        pb::collector_message::Body::Ack(_)
    ));
    (c, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_nul_and_newlines_in_parameters_are_values_never_code_or_headers() {
    if require_root("sql_nul_and_newlines_in_parameters_are_values_never_code_or_headers")
        == Privilege::OptedOut
    {
        return;
    }
    let (c, mut agent) = seeded().await;
    let db = c.db().await;
    let leaks = |r: &Reply| r.json()["leaks"].as_array().map_or(usize::MAX, Vec::len);

    // The filter works, so an empty answer below means "no match", not "broken".
    let r = get(&c, "/api/v1/leaks?min_age=0s&process=proc4").await;
    assert_eq!((r.status, leaks(&r)), (200, 1), "{r:?}");
    // SQL in a value is a value: no match, no error, no bypass.
    for q in [
        "process=%27%20OR%201%3D1--",
        "process=proc4%27%20OR%20%271%27%3D%271",
        "service=x%27%3B%20DELETE%20FROM%20hosts%3B--",
        "host=h1%27%20OR%20%27a%27%3D%27a",
    ] {
        let r = get(&c, &format!("/api/v1/leaks?min_age=0s&{q}")).await;
        assert_eq!((r.status, leaks(&r)), (200, 0), "{q}: {r:?}");
    }
    let r = get(
        &c,
        "/api/v1/sockets?host=x%27%3B%20DROP%20TABLE%20hosts%3B--",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("host: ")),
        "{r:?}"
    );
    let r = get(
        &c,
        "/api/v1/sockets?host=h1&process=%27%3B%20SELECT%20pg_sleep(1)--",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["sockets"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{r:?}"
    );
    for (q, param) in [
        ("/api/v1/sockets?host=h1&state=estab%27%3B--", "state"),
        ("/api/v1/who?endpoint=10.0.0.1:80%27--", "endpoint"),
        ("/api/v1/sockets?host=h1&port=80%20OR%201%3D1", "port"),
        ("/api/v1/leaks?page_token=%27%3B--", "page_token"),
        ("/api/v1/leaks?page_token=a%0Ab", "page_token"),
        ("/api/v1/leaks?process=a%00b", "process"),
    ] {
        let r = get(&c, q).await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(msg.starts_with(&format!("{param}: ")), "{q}: {msg}");
    }

    // CR/LF in a value never becomes a header: the answer is JSON with the value
    // escaped inside it, and the header block holds no injected line.
    let r = get(
        &c,
        "/api/v1/sockets?host=h1%0D%0ASet-Cookie:%20pwned=1%0D%0A",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.starts_with("host: ") && msg.contains("Set-Cookie") && !msg.contains(['\r', '\n']),
        "named, escaped: {msg:?}"
    );
    // The page's login redirect keeps only a local path (no header, no other host).
    let r = get(&c, "/login?next=%0D%0ASet-Cookie:%20pwned=1").await;
    assert!(r.header("set-cookie").is_none(), "{r:?}");

    // gRPC: the same values, the same verdicts.
    let mut q = pb::query_client::QueryClient::connect(format!("http://{}", c.addr))
        .await
        .expect("connect");
    let e = q
        .sockets(pb::SocketsRequest {
            host: "h1\0".into(),
            ..Default::default()
        })
        .await
        .expect_err("NUL");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("host: "), "{e:?}");
    let e = q
        .sockets(pb::SocketsRequest {
            host: "x'; DROP TABLE hosts;--".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown host");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let l = q
        .leaks(pb::LeaksRequest {
            min_age: "0s".into(),
            process: "' OR 1=1--".into(),
            ..Default::default()
        })
        .await
        .expect("leaks")
        .into_inner();
    assert!(l.leaks.is_empty(), "{l:?}");

    // Everything stored is intact and the agent's next batch is acknowledged.
    let (hosts, open): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM hosts), (SELECT count(*) FROM current_sockets)",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert_eq!((hosts, open), (1, 2));
    let b = full(1, 2, now_ms(), vec![sock(1, CloseWait, 80, 1000, Some(4))]);
    assert!(matches!(
        agent.send(b).await.expect("answer"),
        pb::collector_message::Body::Ack(_)
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_lines_and_headers_are_refused_with_414_and_431() {
    if require_root("oversized_request_lines_and_headers_are_refused_with_414_and_431")
        == Privilege::OptedOut
    {
        return;
    }
    let (c, _agent) = seeded().await;
    let long_uri = format!("/api/v1/leaks?process={}", "a".repeat(80 * 1024));
    let r = get(&c, &long_uri).await;
    assert_eq!(r.status, 414, "{:?}", (r.status, &r.headers));
    let huge = format!(
        "GET /api/v1/hosts HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(1024 * 1024)
    );
    let r = request(c.addr, huge.as_bytes()).await;
    assert_eq!(r.status, 431, "{:?}", (r.status, &r.headers));
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = request(
        c.addr,
        format!("GET /api/v1/hosts HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431, "{:?}", (r.status, &r.headers));
    // A value just inside the API's own bound is its 400, not the server's refusal.
    let r = get(&c, &format!("/api/v1/leaks?process={}", "a".repeat(1025))).await;
    assert_eq!(r.status, 400, "{r:?}");
    // The collector still answers.
    let r = get(&c, "/api/v1/hosts").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"hostname\":\"h1\""), "{}", r.body);
    c.stop().await;
}

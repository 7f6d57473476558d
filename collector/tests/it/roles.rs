//! Credentials separate roles on every transport (issue 11): an agent's (ingest)
//! token cannot read the HTTP API, the gRPC Query service, reflection or the
//! dashboard, and a reader's token cannot stream; a wrong role is 403 /
//! PERMISSION_DENIED naming the missing role, a missing or unknown token 401 /
//! UNAUTHENTICATED, and no refusal names a token. Health stays open. Sessions die
//! when the tokens (or their roles) change. The collector listens on loopback, where
//! a tokens file is enforced like anywhere else.

use finwait_proto::v1 as pb;
use finwait_proto::v1::TcpState::{CloseWait, Established};
use finwait_testkit::{Privilege, require_root};

use crate::hostile_api::{Reply, request};
use crate::support::{AgentStream, Collector, full, identity, now_ms, sock};

const TOKENS: &str =
    "# agents\ningest:agent-t\n# readers\nread:reader-t\ningest,read:both-t\nlegacy-t\n";
/// Every token in [`TOKENS`]: no refusal may contain one.
const ALL: [&str; 4] = ["agent-t", "reader-t", "both-t", "legacy-t"];

fn tokens_file(tag: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("roles-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tokens");
    std::fs::write(&file, text).expect("tokens file");
    file
}

async fn start(tag: &str, text: &str) -> Collector {
    let file = tokens_file(tag, text);
    Collector::start(&["--tokens-file", file.to_str().expect("utf-8")]).await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// GET with extra header lines.
async fn get(c: &Collector, path: &str, headers: &str) -> Reply {
    request(
        c.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

async fn login(c: &Collector, token: &str) -> Reply {
    let body = format!("token={token}&next=%2F");
    request(
        c.addr,
        format!(
            "POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
}

fn assert_names_no_token(what: &str, text: &str) {
    for t in ALL {
        assert!(!text.contains(t), "{what} reveals a token: {text}");
    }
}

fn grpc_with(
    token: Option<&'static str>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut r: tonic::Request<()>| {
        if let Some(t) = token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        Ok(r)
    }
}

async fn channel(c: &Collector) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn reflection(
    ch: tonic::transport::Channel,
    token: Option<&'static str>,
) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::with_interceptor(ch, grpc_with(token))
        .server_reflection_info(tokio_stream::iter([req]))
        .await?
        .into_inner();
    let reply = replies.message().await?.expect("one reply");
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_token_cannot_read_and_a_readers_token_cannot_stream() {
    if require_root("an_agents_token_cannot_read_and_a_readers_token_cannot_stream")
        == Privilege::OptedOut
    {
        return;
    }
    let c = start("split", TOKENS).await;
    let db = c.db().await;
    let t0 = now_ms();

    // Ingest: a reader's token is PERMISSION_DENIED and writes nothing; an unknown one
    // is UNAUTHENTICATED; agent, legacy (bare line) and both-role tokens stream.
    let denied = AgentStream::open(c.addr, identity("r"), 1, "r", Some("reader-t"))
        .await
        .err()
        .expect("a reader's token may not stream");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("`ingest` role"), "{denied:?}");
    assert_names_no_token("ingest refusal", denied.message());
    let unknown = AgentStream::open(c.addr, identity("r"), 1, "r", Some("nope"))
        .await
        .err()
        .expect("an unknown token may not stream");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated, "{unknown:?}");
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(hosts, 0, "a refused stream writes nothing");
    let mut agent = AgentStream::open(c.addr, identity("a"), 1, "a", Some("agent-t"))
        .await
        .expect("the agent's token streams");
    let b = full(1, 1, t0, vec![sock(1, CloseWait, 80, 1000, Some(4))]);
    assert!(matches!(
        agent.send(b).await.expect("answer"),
        pb::collector_message::Body::Ack(_)
    ));
    for (name, token) in [("legacy", "legacy-t"), ("both", "both-t")] {
        AgentStream::open(c.addr, identity(name), 1, name, Some(token))
            .await
            .unwrap_or_else(|e| panic!("{token} streams: {e:?}"));
    }

    // HTTP API: 403 for ingest-only tokens (the bare legacy line included), 401 without
    // or with an unknown token, 200 for read roles.
    for (token, status, code) in [
        (Some("agent-t"), 403, "PermissionDenied"),
        (Some("legacy-t"), 403, "PermissionDenied"),
        (None, 401, "Unauthenticated"),
        (Some("nope"), 401, "Unauthenticated"),
    ] {
        let r = get(&c, "/api/v1/hosts", &token.map(bearer).unwrap_or_default()).await;
        assert_eq!(r.status, status, "{token:?}: {r:?}");
        let body = r.json();
        assert_eq!(body["error"]["code"], code, "{token:?}: {body}");
        assert_names_no_token("HTTP refusal", &r.body);
        if status == 403 {
            assert!(r.body.contains("`read` role"), "{}", r.body);
        } else {
            assert!(r.header("www-authenticate").is_some(), "{r:?}");
        }
    }
    for token in ["reader-t", "both-t"] {
        let r = get(&c, "/api/v1/hosts", &bearer(token)).await;
        assert_eq!(r.status, 200, "{token}: {r:?}");
        assert!(r.body.contains("\"hostname\":\"a\""), "{}", r.body);
    }

    // gRPC Query: the same.
    let ch = channel(&c).await;
    let e = pb::query_client::QueryClient::with_interceptor(ch.clone(), grpc_with(Some("agent-t")))
        .hosts(pb::HostsRequest::default())
        .await
        .expect_err("an agent's token may not read over gRPC");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_names_no_token("gRPC refusal", e.message());
    let hosts =
        pb::query_client::QueryClient::with_interceptor(ch.clone(), grpc_with(Some("reader-t")))
            .hosts(pb::HostsRequest::default())
            .await
            .expect("a reader reads over gRPC")
            .into_inner();
    assert!(hosts.hosts.iter().any(|h| h.hostname == "a"), "{hosts:?}");

    // Reflection needs a read token; health answers anyone.
    let e = reflection(ch.clone(), None).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = reflection(ch.clone(), Some("agent-t"))
        .await
        .expect_err("agent");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let names = reflection(ch.clone(), Some("reader-t"))
        .await
        .expect("reader");
    assert!(names.contains(&"finwait.v1.Query".to_owned()), "{names:?}");
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "finwait.v1.Ingest".into(),
        })
        .await
        .expect("health without a token")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Dashboard: a bearer header is no session; an agent's token at the login is a
    // 403 with no cookie; a reader's buys a session the pages and the API accept.
    let r = get(&c, "/", &bearer("agent-t")).await;
    assert_eq!(r.status, 303, "{r:?}");
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/login")),
        "{r:?}"
    );
    for token in ["agent-t", "legacy-t"] {
        let r = login(&c, token).await;
        assert_eq!(r.status, 403, "{token}: {r:?}");
        assert!(
            r.header("set-cookie").is_none(),
            "{token} got a session: {r:?}"
        );
        assert!(r.body.contains("may not read"), "{}", r.body);
        assert_names_no_token("login refusal", &r.body);
    }
    let r = login(&c, "nope").await;
    assert_eq!(r.status, 303, "{r:?}");
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    let r = login(&c, "reader-t").await;
    assert_eq!(r.status, 303, "{r:?}");
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session")
        .to_owned();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    assert_eq!(get(&c, "/", &with_cookie).await.status, 200);
    assert_eq!(get(&c, "/api/v1/hosts", &with_cookie).await.status, 200);
    // Credentials presented explicitly win over the cookie: an agent's token is
    // refused even beside a session.
    let both = format!("{with_cookie}{}", bearer("agent-t"));
    assert_eq!(get(&c, "/api/v1/hosts", &both).await.status, 403);

    // Nothing was lost on the way: the agent's stream goes on, its rows are there.
    let b = full(
        1,
        2,
        t0 + 1000,
        vec![
            sock(1, CloseWait, 80, 1000, Some(4)),
            sock(2, Established, 80, 1001, Some(4)),
        ],
    );
    assert!(matches!(
        agent.send(b).await.expect("answer"),
        pb::collector_message::Body::Ack(_)
    ));
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM current_sockets c JOIN hosts h USING (host_id) WHERE h.hostname = 'a'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(open, 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_a_token_or_its_role_changes() {
    if require_root("sessions_end_when_a_token_or_its_role_changes") == Privilege::OptedOut {
        return;
    }
    let first = start("rot1", TOKENS).await;
    let r = login(&first, "reader-t").await;
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session")
        .to_owned();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    // Another collector reading the same tokens (comments aside) accepts the session;
    // one whose read token was replaced, or whose token changed role, does not.
    let cases = [
        (
            "same",
            format!(
                "# reordered\n{}",
                TOKENS.lines().rev().collect::<Vec<_>>().join("\n")
            ),
            200,
        ),
        (
            "rotated",
            TOKENS.replace("read:reader-t", "read:reader-2"),
            401,
        ),
        (
            "reroled",
            TOKENS.replace("ingest:agent-t", "ingest,read:agent-t"),
            401,
        ),
    ];
    for (tag, text, want) in cases {
        let c = start(tag, &text).await;
        let r = get(&c, "/api/v1/hosts", &with_cookie).await;
        assert_eq!(r.status, want, "{tag}: {r:?}");
        let page = get(&c, "/", &with_cookie).await;
        assert_eq!(
            page.status,
            if want == 200 { 200 } else { 303 },
            "{tag}: {page:?}"
        );
        c.stop().await;
    }
    first.stop().await;
}

#[tokio::test]
async fn an_unusable_tokens_file_stops_the_collector_naming_the_line_not_the_token() {
    use clap::Parser;
    let file = tokens_file("unusable", "read:fine-t\nadmin:s3cret-t\n");
    let config = finwait_collector::config::Config::try_parse_from([
        "finwait-collector",
        "--insecure-loopback",
        "--tokens-file",
        file.to_str().expect("utf-8"),
    ])
    .expect("flags");
    let e = finwait_collector::app::App::build(config)
        .await
        .expect_err("an unknown role stops the start");
    let text = format!("{e:#}");
    assert!(text.contains("line 2: unknown role \"admin\""), "{text}");
    assert!(
        !text.contains("s3cret-t") && !text.contains("fine-t"),
        "{text}"
    );
}

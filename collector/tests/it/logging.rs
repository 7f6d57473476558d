//! What the collector logs when a client is at fault: the refusal at INFO with its
//! error code, never at ERROR (that level is for the collector's own failures).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};

use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::support::{AgentStream, Collector, identity};

/// One logged event: its level and fields (values as `Debug` prints them).
#[derive(Debug)]
struct Logged {
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

/// The events logged on the thread that asked for them (see [`capture`]).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

thread_local! {
    /// Where this thread's events go, if anywhere.
    static CAPTURING: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// The global subscriber's one layer: hands each event to its thread's capture.
struct ToThreadCapture;

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for ToThreadCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        CAPTURING.with(|c| {
            if let Some(capture) = c.borrow().as_ref() {
                let mut fields = BTreeMap::new();
                event.record(&mut Fields(&mut fields));
                capture
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Logged {
                        level: *event.metadata().level(),
                        fields,
                    });
            }
        });
    }
}

/// Captures what is logged on this thread from now on, at INFO and above.
///
/// A global subscriber, not a thread's scoped one: tracing caches per call site
/// whether anyone listens, and a call site first reached on another test's thread
/// would be cached as unheard while only a scoped subscriber exists.
fn capture() -> Capture {
    static GLOBAL: Once = Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(ToThreadCapture.with_filter(LevelFilter::INFO)),
        );
    });
    let capture = Capture::default();
    CAPTURING.with(|c| *c.borrow_mut() = Some(capture.clone()));
    capture
}

impl Capture {
    /// What was captured since the last call.
    fn events(&self) -> Vec<Logged> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// `GET path` over HTTP/1.1 with the read token; the status line.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer reader\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
        .await
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("answer");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Asserts one event at INFO carries `code` and none of `events` is an ERROR.
fn refused_at_info(events: &[Logged], code: &str, what: &str) {
    let errors: Vec<&Logged> = events
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .collect();
    assert!(errors.is_empty(), "{what} logged at ERROR: {errors:?}");
    assert!(
        events
            .iter()
            .any(|e| e.level == tracing::Level::INFO
                && e.fields.get("code").is_some_and(|c| c == code)),
        "{what} not logged at INFO with code {code}: {events:?}"
    );
}

// current_thread (tokio::test's default): the collector's tasks run on this thread,
// whose events are captured.
#[tokio::test]
async fn client_mistakes_are_logged_at_info_with_their_code_not_at_error() {
    if require_root("client_mistakes_are_logged_at_info") != Privilege::Root {
        return;
    }
    let capture = capture();
    let dir = std::env::temp_dir().join(format!("fw-logging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "s3cret\nread:reader\n").expect("tokens file");
    let c = Collector::start(&["--tokens-file", tokens.to_str().expect("utf-8")]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut query =
        pb::query_client::QueryClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", "Bearer reader".parse().expect("header"));
            Ok(r)
        });
    capture.events();

    let status = http_get(c.addr, "/api/v1/leaks?min_age=soon").await;
    assert!(status.contains(" 400 "), "{status}");
    refused_at_info(&capture.events(), "InvalidArgument", "a bad HTTP parameter");

    let e = query
        .leaks(pb::LeaksRequest {
            min_age: "soon".into(),
            ..Default::default()
        })
        .await
        .expect_err("a bad parameter is refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    refused_at_info(&capture.events(), "InvalidArgument", "a bad gRPC parameter");

    let status = http_get(c.addr, "/api/v1/sockets?host=nowhere").await;
    assert!(status.contains(" 404 "), "{status}");
    refused_at_info(&capture.events(), "NotFound", "an unknown host over HTTP");

    let e = query
        .sockets(pb::SocketsRequest {
            host: "nowhere".into(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown host is not found");
    assert_eq!(e.code(), tonic::Code::NotFound);
    refused_at_info(&capture.events(), "NotFound", "an unknown host over gRPC");

    let e = AgentStream::open(c.addr, identity("t"), 1, "t", Some("wrong"))
        .await
        .err()
        .expect("a wrong token is refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    refused_at_info(&capture.events(), "Unauthenticated", "a wrong agent token");

    let e = AgentStream::open(c.addr, identity("t"), 1, "t", Some("reader"))
        .await
        .err()
        .expect("a reader's token may not stream");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    refused_at_info(
        &capture.events(),
        "PermissionDenied",
        "a reader's token streaming",
    );

    c.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

//! Rotation without a restart: the real collector binary, set up by
//! `finwait-collector init`, serving TLS with tokens; its tokens file and certificate
//! are replaced and SIGHUP sent, as `systemctl reload` does. A new connection with the
//! removed token is refused, the new token streams (the real agent), a broken file is
//! refused with the old set kept, and a new certificate is served to new connections.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, TempDir, require_root, workspace_bin};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::e2e::{Proc, spawn_announced};
use crate::support::{TestDb, identity};

/// `finwait-collector init DIR ARGS…`; panics with its output when it fails.
pub(crate) fn init(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_finwait-collector"))
        .arg("init")
        .arg(dir)
        .args(args)
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// How a hello over a new TLS connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    Welcome,
    Refused(tonic::Code),
    /// No TLS connection (an untrusted certificate).
    NoConnection,
}

/// Opens a new connection to `port` trusting `ca`, says hello with `token`.
async fn hello(port: u16, ca: &Path, token: &str) -> Hello {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
        .domain_name("localhost");
    let Ok(channel) = Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
    else {
        return Hello::NoConnection;
    };
    let mut client = pb::ingest_client::IngestClient::new(channel);
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            host: Some(identity("reload-probe")),
            epoch: 1,
            instance_id: "probe".into(),
        })),
    })
    .await
    .expect("queue hello");
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let answer = match client.stream(req).await {
        Ok(r) => r.into_inner().message().await,
        Err(s) => Err(s),
    };
    match answer {
        Ok(Some(pb::CollectorMessage {
            body: Some(pb::collector_message::Body::Welcome(_)),
        })) => Hello::Welcome,
        Ok(other) => panic!("expected a welcome or a refusal, got {other:?}"),
        Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
            Hello::NoConnection
        }
        Err(s) => Hello::Refused(s.code()),
    }
}

/// Polls `probe` every 200 ms for at most 20 s until it returns `want`.
async fn until<F, Fut>(what: &str, want: Hello, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Hello>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real agent streaming to `url` as `hostname`.
fn agent(url: &str, ca: &Path, token: &Path, hostname: &str, log: &Path) -> Proc {
    Proc(
        Command::new(workspace_bin("finwait-agent").expect("agent binary"))
            .args(["run", "--interval", "0.3", "--collector", url])
            .arg("--ca-file")
            .arg(ca)
            .arg("--token-file")
            .arg(token)
            .args(["--hostname", hostname, "--machine-id", hostname])
            // Each agent its own spool: the default directory admits one agent.
            .arg("--spool-dir")
            .arg(log.with_extension("spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("agent log"))
            .spawn()
            .expect("start agent"),
    )
}

/// Waits until `hostname` has committed at least two batches.
async fn streams(db: &sqlx::PgPool, hostname: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT max(last_seq) FROM hosts WHERE hostname = $1")
                .bind(hostname)
                .fetch_one(db)
                .await
                .expect("query");
        if seq.unwrap_or(0) >= 2 {
            return;
        }
        assert!(Instant::now() < deadline, "{hostname}: no batch committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hup(collector: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &collector.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "SIGHUP delivered");
}

/// Lines of the collector's log that say `needle`.
fn logged(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test]
async fn tokens_and_certificate_rotate_on_sighup_and_a_bad_file_keeps_the_old_set() {
    if require_root("tokens_and_certificate_rotate_on_sighup_and_a_bad_file_keeps_the_old_set")
        == Privilege::OptedOut
    {
        return;
    }
    let scratch = TempDir::new("reload").expect("scratch");
    let dir = scratch.path().join("etc");
    init(&dir, &["--name", "localhost", "--ip", "127.0.0.1"]);
    let p = |n: &str| -> PathBuf { dir.join(n) };
    let token_a = std::fs::read_to_string(p("agent.token")).expect("A");
    let token_a = token_a.trim().to_owned();
    let database = TestDb::create();
    let log = scratch.path().join("collector.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finwait-collector"));
    cmd.args(["--listen", "127.0.0.1:0", "--database-url-file"])
        .arg(&database.url_file)
        .arg("--tls-cert")
        .arg(p("tls/server.pem"))
        .arg("--tls-key")
        .arg(p("tls/server.key"))
        .arg("--tokens-file")
        .arg(p("tokens"))
        .args(["--data-dir"])
        .arg(scratch.path().join("data"))
        .stdin(Stdio::null());
    let (collector, line) = spawn_announced(cmd, &log);
    assert!(
        line.contains("listening on"),
        "{line:?}; see {}",
        log.display()
    );
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("port");
    let url = format!("https://localhost:{port}");
    let db = database.pool().await;

    // Token A (init's agent token) streams.
    let _a = agent(
        &url,
        &p("ca.pem"),
        &p("agent.token"),
        "reload-a",
        &scratch.path().join("a.log"),
    );
    streams(&db, "reload-a").await;
    assert_eq!(hello(port, &p("ca.pem"), &token_a).await, Hello::Welcome);

    // The file now holds only B: after SIGHUP a new connection with A is refused.
    let token_b = "b".repeat(40);
    std::fs::write(p("tokens"), format!("ingest:{token_b}\n")).expect("tokens B");
    let b_file = scratch.path().join("b.token");
    std::fs::write(&b_file, format!("{token_b}\n")).expect("b token");
    hup(&collector);
    let ca = p("ca.pem");
    until(
        "A refused after the reload",
        Hello::Refused(tonic::Code::Unauthenticated),
        || hello(port, &ca, &token_a),
    )
    .await;
    assert_eq!(hello(port, &p("ca.pem"), &token_b).await, Hello::Welcome);
    let _b = agent(
        &url,
        &p("ca.pem"),
        &b_file,
        "reload-b",
        &scratch.path().join("b.log"),
    );
    streams(&db, "reload-b").await;

    // A broken file is refused, logged, and B stays in force (A stays out).
    let refused_before = logged(&log, "reload refused");
    std::fs::write(p("tokens"), "admin:c\n").expect("bad tokens");
    hup(&collector);
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged(&log, "reload refused") == refused_before {
        assert!(
            Instant::now() < deadline,
            "no refusal logged; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("unknown role"),
        "the reason is logged:\n{text}"
    );
    assert!(!text.contains(&token_b), "no token in the log");
    assert_eq!(hello(port, &p("ca.pem"), &token_b).await, Hello::Welcome);
    assert_eq!(
        hello(port, &p("ca.pem"), &token_a).await,
        Hello::Refused(tonic::Code::Unauthenticated)
    );

    // A new CA and certificate: new connections get it (the old CA no longer
    // verifies it, the new one does); the tokens file is fixed in the same reload.
    let next = scratch.path().join("next");
    init(&next, &["--name", "localhost"]);
    std::fs::write(p("tokens"), format!("ingest:{token_b}\n")).expect("tokens B");
    for f in ["tls/server.pem", "tls/server.key"] {
        std::fs::copy(next.join(f), p(f)).expect("new pair");
    }
    hup(&collector);
    let next_ca = next.join("ca.pem");
    until("the new certificate served", Hello::Welcome, || {
        hello(port, &next_ca, &token_b)
    })
    .await;
    assert_eq!(
        hello(port, &p("ca.pem"), &token_b).await,
        Hello::NoConnection
    );
    // The real agent trusts the new CA too.
    let _b2 = agent(
        &url,
        &next.join("ca.pem"),
        &b_file,
        "reload-b2",
        &scratch.path().join("b2.log"),
    );
    streams(&db, "reload-b2").await;
    db.close().await;
    drop(collector);
}

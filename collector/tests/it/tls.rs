//! TLS and tokens together: the real agent binary streams to a collector that serves
//! TLS with a certificate from a test CA and accepts one token.

use std::process::Stdio;
use std::time::{Duration, Instant};

use finwait_testkit::{Privilege, require_root, workspace_bin};

use crate::support::{Collector, certificates};

#[tokio::test]
async fn the_agent_streams_over_tls_with_a_token() {
    if require_root("the_agent_streams_over_tls_with_a_token") == Privilege::OptedOut {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, cert, key) = certificates("localhost");
    let path = |n: &str| dir.join(n).to_str().expect("utf-8").to_owned();
    std::fs::write(path("ca.pem"), ca).expect("ca");
    std::fs::write(path("cert.pem"), cert).expect("cert");
    std::fs::write(path("key.pem"), key).expect("key");
    std::fs::write(path("tokens"), "ingest:agent-token-1\n").expect("tokens");
    std::fs::write(path("token"), "agent-token-1\n").expect("token");
    let c = Collector::start(&[
        "--tls-cert",
        &path("cert.pem"),
        "--tls-key",
        &path("key.pem"),
        "--tokens-file",
        &path("tokens"),
    ])
    .await;
    let url = format!("https://localhost:{}", c.addr.port());
    let run = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(workspace_bin("finwait-agent").expect("agent"));
        cmd.args([
            "run",
            "--interval",
            "0.3",
            "--collector",
            &url,
            "--ca-file",
            &path("ca.pem"),
        ])
        .args([
            "--hostname",
            token.map_or("tls-untrusted", |_| "tls-agent"),
            "--machine-id",
            "tls",
            "--no-spool",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(t) = token {
            cmd.args(["--token-file", t]);
        }
        cmd.spawn().expect("start agent")
    };
    let wrong_token = dir.join("wrong");
    std::fs::write(&wrong_token, "nope\n").expect("wrong token");
    let mut good = run(Some(&path("token")));
    let mut bad = run(Some(wrong_token.to_str().expect("utf-8")));
    let db = c.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT max(last_seq) FROM hosts WHERE hostname = 'tls-agent'")
                .fetch_one(&db)
                .await
                .expect("query");
        if seq.unwrap_or(0) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no batch arrived over TLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let untrusted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM hosts WHERE hostname = 'tls-untrusted'")
            .fetch_one(&db)
            .await
            .expect("query");
    assert_eq!(untrusted, 0, "an agent with a wrong token never registers");
    for child in [&mut good, &mut bad] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    db.close().await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

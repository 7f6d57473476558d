//! Shared helpers: a PostgreSQL cluster per test (copied from one initdb'd and migrated
//! template, so initdb runs once per test binary), the collector built in-process on
//! port 0, and a real gRPC client speaking finwait.v1.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use finwait_collector::app::App;
use finwait_collector::config::Config;
use finwait_collector::postgres::{EmbeddedOptions, EmbeddedPostgres};
use finwait_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("collector-it-{}", std::process::id()))
}

/// A cluster data directory initialised (initdb + finwait database) once per binary.
fn template() -> PathBuf {
    let mut t = TEMPLATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = &*t {
        return p.clone();
    }
    // Earlier runs' scratch directories (test binaries run one at a time).
    if let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("collector-it-") && e.path() != scratch()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = scratch().join("template");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create template dir");
    let pg = EmbeddedPostgres::start(options(&dir)).expect(
        "start PostgreSQL: install the server (apt-get install postgresql) and run the tests as root",
    );
    let out = std::process::Command::new("psql")
        .args([&pg.url("postgres"), "-Atc", "CREATE DATABASE finwait"])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "create database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.stop().expect("stop template cluster");
    *t = Some(dir.clone());
    dir
}

fn options(dir: &Path) -> EmbeddedOptions {
    EmbeddedOptions {
        data_dir: dir.to_path_buf(),
        bin_dir: None,
        run_as: None,
        port: 0,
        listen_tcp: false,
    }
}

/// A fresh data directory holding a copy of the template cluster.
pub fn fresh_data_dir() -> PathBuf {
    let t = template();
    let dir = scratch().join(format!("t{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    // cp -a keeps the server user's ownership and modes.
    let st = std::process::Command::new("cp")
        .args(["-a"])
        .arg(t.join("pgdata"))
        .arg(dir.join("pgdata"))
        .status()
        .expect("cp");
    assert!(st.success(), "copy template cluster");
    dir
}

/// A collector running in-process on 127.0.0.1:0 with its own cluster.
pub struct Collector {
    /// gRPC address.
    pub addr: std::net::SocketAddr,
    /// Database URL.
    pub url: String,
    data: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Collector {
    /// Starts one with extra flags.
    pub async fn start(extra: &[&str]) -> Collector {
        let data = fresh_data_dir();
        let mut args = vec![
            "finwait-collector".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        // Plaintext on loopback unless the test brings TLS or says so itself.
        if !extra.contains(&"--tls-cert") && !extra.contains(&"--insecure-loopback") {
            args.push("--insecure-loopback".into());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let config = Config::try_parse_from(&args).expect("config");
        let app = App::build(config).await.expect("collector builds");
        let addr = app.addr();
        let url = app.database_url().to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Collector {
            addr,
            url,
            data,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A database pool for assertions.
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// Stops it (health NOT_SERVING, streams closed, PostgreSQL stopped).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await
                .expect("collector task")
                .expect("collector stops cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One agent stream, driven by hand.
pub struct AgentStream {
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: Streaming<pb::CollectorMessage>,
    /// What the collector said to hello.
    pub welcome: pb::Welcome,
}

/// A host identity for tests.
pub fn identity(name: &str) -> pb::HostIdentity {
    pb::HostIdentity {
        hostname: name.into(),
        machine_id: format!("machine-{name}"),
        boot_id: "boot-1".into(),
        agent_version: "test".into(),
        ephemeral_port_low: 32768,
        ephemeral_port_high: 60999,
        tcp_fin_timeout_s: 60,
        sample_interval_ms: 1000,
        ..Default::default()
    }
}

impl AgentStream {
    /// Connects, says hello, and returns the stream or the refusal.
    pub async fn open(
        addr: std::net::SocketAddr,
        host: pb::HostIdentity,
        epoch: u64,
        instance: &str,
        token: Option<&str>,
    ) -> Result<AgentStream, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                host: Some(host),
                epoch,
                instance_id: instance.into(),
            })),
        })
        .await
        .expect("queue hello");
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let mut rx = client.stream(req).await?.into_inner();
        match rx.message().await? {
            Some(pb::CollectorMessage {
                body: Some(pb::collector_message::Body::Welcome(welcome)),
            }) => Ok(AgentStream { tx, rx, welcome }),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Sends a batch and returns the collector's answer (or the stream's error).
    pub async fn send(
        &mut self,
        b: pb::Batch,
    ) -> Result<pb::collector_message::Body, tonic::Status> {
        self.tx
            .send(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Batch(b)),
            })
            .await
            .expect("queue batch");
        match self.rx.message().await? {
            Some(pb::CollectorMessage { body: Some(body) }) => Ok(body),
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A socket record for tests between two IPv4 endpoints.
pub fn socket(
    cookie: u64,
    state: pb::TcpState,
    local: ([u8; 4], u32),
    remote: ([u8; 4], u32),
    pid: Option<u32>,
    timer: Option<pb::TimerKind>,
) -> pb::Socket {
    pb::Socket {
        netns: 1,
        cookie: Some(cookie),
        state: state as i32,
        local: Some(pb::Endpoint {
            addr: local.0.to_vec(),
            port: local.1,
        }),
        remote: Some(pb::Endpoint {
            addr: remote.0.to_vec(),
            port: remote.1,
        }),
        inode: if pid.is_some() { 1000 + cookie } else { 0 },
        owners: pid
            .map(|p| vec![pb::Owner { pid: p, fd: 3 }])
            .unwrap_or_default(),
        timer: timer.map(|k| pb::Timer {
            kind: k as i32,
            expires_ms: 1000,
            retransmits: 0,
        }),
        ..Default::default()
    }
}

/// A socket 10.0.0.1:lport -> 10.0.0.2:rport without a timer.
pub fn sock(
    cookie: u64,
    state: pb::TcpState,
    lport: u32,
    rport: u32,
    pid: Option<u32>,
) -> pb::Socket {
    socket(
        cookie,
        state,
        ([10, 0, 0, 1], lport),
        ([10, 0, 0, 2], rport),
        pid,
        None,
    )
}

fn processes(sockets: &[&pb::Socket]) -> Vec<pb::Process> {
    let mut pids: Vec<u32> = sockets
        .iter()
        .flat_map(|s| s.owners.iter().map(|o| o.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| pb::Process {
            pid,
            start_ticks: 1,
            comm: format!("proc{pid}"),
            cmdline: format!("/bin/proc{pid} --serve"),
            cgroup: format!("/system.slice/proc{pid}.service"),
            hostname: String::new(),
        })
        .collect()
}

/// A full-table batch.
pub fn full(epoch: u64, seq: u64, taken_at_ms: i64, sockets: Vec<pb::Socket>) -> pb::Batch {
    let procs = processes(&sockets.iter().collect::<Vec<_>>());
    pb::Batch {
        epoch,
        seq,
        taken_at_ms,
        payload: Some(pb::batch::Payload::Full(pb::FullTable { sockets })),
        processes: procs,
        counts: vec![pb::StateCount {
            netns: 1,
            state: pb::TcpState::Established as i32,
            count: 1,
        }],
        ..Default::default()
    }
}

/// A delta batch.
pub fn delta(
    epoch: u64,
    seq: u64,
    taken_at_ms: i64,
    added: Vec<pb::Socket>,
    changed: Vec<pb::Socket>,
    removed: Vec<u64>,
) -> pb::Batch {
    let procs = processes(&added.iter().chain(changed.iter()).collect::<Vec<_>>());
    pb::Batch {
        epoch,
        seq,
        taken_at_ms,
        payload: Some(pb::batch::Payload::Delta(pb::Delta {
            added,
            changed,
            removed: removed
                .into_iter()
                .map(|c| pb::SocketKey {
                    netns: 1,
                    cookie: Some(c),
                    ..Default::default()
                })
                .collect(),
        })),
        processes: procs,
        ..Default::default()
    }
}

/// A CA and a server certificate for `name` (a DNS name or an IP address), as PEM:
/// (ca, cert, key).
pub fn certificates(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer name equals its own looks self-signed to OpenSSL.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "finwait test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

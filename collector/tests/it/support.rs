//! Shared helpers: one PostgreSQL cluster per test binary, started on first use and
//! stopped by a watchdog process when the binary exits (however it exits); a migrated
//! template database in it, made once, and a fresh database per test copied from that
//! template; the collector built in-process on port 0 against it; and a real gRPC
//! client speaking finwait.v1. Tests that stop or kill PostgreSQL take a
//! [`private_cluster`] instead.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::Parser;
use finwait_collector::app::App;
use finwait_collector::config::Config;
use finwait_collector::postgres::{EmbeddedOptions, EmbeddedPostgres};
use finwait_collector::store::Store;
use finwait_proto::v1 as pb;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// The migrated database every test database is copied from.
const TEMPLATE: &str = "finwait_template";

/// The shared cluster, started by the first test that needs it.
static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// Numbers the test databases.
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// This binary's scratch directory; the watchdog removes it when the binary exits.
fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("collector-it-{}", std::process::id()))
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

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: the
/// shared set-up is reached from sync and async tests alike, and an async test's
/// runtime cannot block on a future itself.
fn block_on<T: Send + 'static>(
    fut: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(fut)
    })
    .join()
    .map_err(|_| anyhow!("set-up thread panicked"))?
}

/// Runs each statement on its own (ALTER SYSTEM refuses a transaction block).
async fn execute(options: PgConnectOptions, statements: Vec<String>) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&options).await?;
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| sql)?;
    }
    conn.close().await?;
    Ok(())
}

/// The shared cluster. It lives in a static, which is never dropped: the watchdog
/// stops it.
struct Cluster {
    pg: EmbeddedPostgres,
    /// Our end of the watchdog's stdin. Nothing is ever written: the kernel closes it
    /// when this process exits, and the watchdog's read then ends.
    _watchdog: ChildStdin,
}

/// The shared cluster, started (with its template database) on first use.
fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        start_cluster().unwrap_or_else(|e| {
            panic!(
                "shared PostgreSQL for the tests: {e:#}\n(install the server, apt-get install \
                 postgresql, and run the tests as root)"
            )
        })
    })
}

fn start_cluster() -> anyhow::Result<Cluster> {
    remove_dead_runs();
    let dir = scratch().join("cluster");
    let _ = std::fs::remove_dir_all(&dir);
    let pg = EmbeddedPostgres::start(options(&dir))?;
    // Spawned as soon as there is a server to stop.
    let watchdog = spawn_watchdog(&dir.join("pgdata"), &scratch())?;
    // Every test at once, each collector with its own pool: room for more than the
    // default 100 connections. Commits need not wait for the disk: nothing here
    // survives a crash anyway (tests that crash PostgreSQL use a private cluster).
    block_on(execute(
        pg.connect_options("postgres"),
        vec![
            "ALTER SYSTEM SET max_connections = 300".into(),
            "ALTER SYSTEM SET synchronous_commit = off".into(),
        ],
    ))?;
    pg.stop()?;
    let pg = EmbeddedPostgres::start(options(&dir))?;
    let (admin, template) = (pg.connect_options("postgres"), pg.connect_options(TEMPLATE));
    block_on(async move {
        execute(admin, vec![format!("CREATE DATABASE {TEMPLATE}")]).await?;
        let store = Store::connect_with(template, 1, Duration::from_secs(60)).await?;
        store.migrate().await?;
        store.maintain_partitions(2, 14).await?;
        // CREATE DATABASE ... TEMPLATE refuses a template anyone is connected to.
        store.pool().close().await;
        Ok(())
    })
    .context("migrating the template database")?;
    Ok(Cluster {
        pg,
        _watchdog: watchdog,
    })
}

/// Removes scratch directories of earlier runs whose process is gone.
fn remove_dead_runs() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("collector-it-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What the watchdog runs: it waits for end-of-file on stdin (this process's end of
/// the pipe closes when it exits, even on SIGKILL), then stops the postmaster named in
/// `$1/postmaster.pid` (fast shutdown, then immediate) and removes `$2`. It ignores
/// the terminal's signals and has its own process group, so a Ctrl-C that ends the
/// tests does not end it first.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
cat >/dev/null
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
alive() {
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
    read -r _ _ state _ <"/proc/$pid/stat" && [ "$state" != Z ]
}
if [ -n "$pid" ] && alive; then
    kill -INT "$pid"
    n=0
    while alive && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
    if alive; then kill -QUIT "$pid"; sleep 2; fi
fi
rm -rf "$2"
"#;

fn spawn_watchdog(pgdata: &Path, remove: &Path) -> anyhow::Result<ChildStdin> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("finwait-it-watchdog")
        .arg(pgdata)
        .arg(remove)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the PostgreSQL watchdog")?;
    child.stdin.take().context("watchdog stdin")
}

/// A database of its own for one test, copied from the migrated template.
pub struct TestDb {
    /// How to connect to it.
    pub options: PgConnectOptions,
    /// A file holding its URL, for `--database-url-file`.
    pub url_file: PathBuf,
}

impl TestDb {
    /// A fresh database in the shared cluster (started on first use).
    pub fn create() -> TestDb {
        let cluster = cluster();
        let name = format!("t_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        block_on(execute(
            cluster.pg.connect_options("postgres"),
            vec![format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")],
        ))
        .unwrap_or_else(|e| panic!("create test database {name}: {e:#}"));
        let url_file = scratch().join(format!("{name}.url"));
        std::fs::write(&url_file, cluster.pg.url(&name)).expect("database URL file");
        TestDb {
            options: cluster.pg.connect_options(&name),
            url_file,
        }
    }

    /// A pool on it, for assertions.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect_with(self.options.clone())
            .await
            .expect("connect to the test database")
    }

    /// `url_file` as a flag value.
    pub fn url_file_arg(&self) -> &str {
        self.url_file.to_str().expect("scratch paths are UTF-8")
    }
}

/// A private cluster in a fresh directory, running, with an empty `finwait` database,
/// for a test that stops or restarts PostgreSQL itself (the shared one must stay up);
/// returns it and the options to start it again with.
pub fn private_cluster() -> (EmbeddedOptions, EmbeddedPostgres) {
    let dir = scratch().join(format!(
        "private-{}",
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = options(&dir);
    let pg = EmbeddedPostgres::start(opts.clone()).expect("start a private PostgreSQL");
    block_on(execute(
        pg.connect_options("postgres"),
        vec!["CREATE DATABASE finwait".into()],
    ))
    .expect("create database finwait");
    (opts, pg)
}

/// A collector running in-process on 127.0.0.1:0 with a database of its own.
pub struct Collector {
    /// gRPC address.
    pub addr: std::net::SocketAddr,
    /// Its database.
    pub database: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Collector {
    /// Starts one with extra flags.
    pub async fn start(extra: &[&str]) -> Collector {
        Collector::start_on(TestDb::create(), extra).await
    }

    /// Starts one with extra flags on an existing database (a restart, or a second
    /// collector sharing it).
    pub async fn start_on(database: TestDb, extra: &[&str]) -> Collector {
        Collector::start_listening(database, "127.0.0.1:0", extra).await
    }

    /// Starts one on `listen` (a restart on the address agents already know).
    pub async fn start_listening(database: TestDb, listen: &str, extra: &[&str]) -> Collector {
        let mut args = vec![
            "finwait-collector".to_owned(),
            "--listen".into(),
            listen.to_owned(),
            "--database-url-file".into(),
            database.url_file_arg().to_owned(),
        ];
        // Plaintext on loopback unless the test brings TLS or says so itself.
        if !extra.contains(&"--tls-cert") && !extra.contains(&"--insecure-loopback") {
            args.push("--insecure-loopback".into());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let config = Config::try_parse_from(&args).expect("config");
        let app = App::build(config).await.expect("collector builds");
        let addr = app.addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Collector {
            addr,
            database,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A database pool for assertions.
    pub async fn db(&self) -> PgPool {
        self.database.pool().await
    }

    /// Stops it (health NOT_SERVING, streams closed); its database stays until the
    /// cluster goes.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await
                .expect("collector task")
                .expect("collector stops cleanly");
        }
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

    /// Sends a message without waiting for an answer (a chunk that is not the last).
    pub async fn push(&mut self, b: pb::Batch) {
        self.tx
            .send(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Batch(b)),
            })
            .await
            .expect("queue batch");
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

/// An answer without what moves between two asks of one question: ages relative to
/// now (`age_s`) and a report's generation time (`generated_at`), at any depth.
pub fn stable(mut v: serde_json::Value) -> serde_json::Value {
    match &mut v {
        serde_json::Value::Object(m) => {
            for k in ["age_s", "generated_at"] {
                m.remove(k);
            }
            for x in m.values_mut() {
                *x = stable(x.take());
            }
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                *x = stable(x.take());
            }
        }
        _ => {}
    }
    v
}

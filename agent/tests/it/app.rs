//! The `run` mode in-process: `App::build_with_source` on a recorded (empty) table,
//! `run_until_stopped` with a cancellation token as the shutdown future, against a
//! refused loopback address and against a small fake collector whose
//! acknowledgements the test holds back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use finwait_agent::app::{App, GRACE};
use finwait_agent::cli::{Cli, Command};
use finwait_agent::config::Config;
use finwait_agent::sampler::{CycleStats, Sample, SampleError, TableSource};
use finwait_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// An empty table, counted each time it is read.
struct Recorded(Arc<AtomicUsize>);

impl TableSource for Recorded {
    fn sample(&mut self) -> Result<Sample, SampleError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Sample {
            taken_at: SystemTime::now(),
            sockets: Vec::new(),
            namespaces: Vec::new(),
            stats: CycleStats::default(),
        })
    }
}

fn config(flags: &[&str]) -> Result<Config> {
    let mut all = vec!["finwait-agent", "run", "--hostname", "app-test"];
    all.extend_from_slice(&["--machine-id", "app-test-machine", "--insecure-loopback"]);
    if !flags.contains(&"--spool-dir") {
        all.push("--no-spool");
    }
    all.extend_from_slice(flags);
    match Cli::try_parse_from(all)?.command {
        Command::Run(args) => Ok(Config::from_args(&args)?),
        Command::Snapshot(_) => bail!("parsed run flags as snapshot"),
    }
}

/// A running app, its sample count and its stop token.
struct Running {
    samples: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), finwait_agent::AgentError>>,
}

fn start(config: Config) -> Result<Running> {
    let samples = Arc::new(AtomicUsize::new(0));
    let app = App::build_with_source(config, Box::new(Recorded(Arc::clone(&samples))))?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    Ok(Running {
        samples,
        stop,
        task,
    })
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Cancels and returns how long the app took to stop.
async fn stop(r: Running) -> Result<Duration> {
    let t0 = Instant::now();
    r.stop.cancel();
    tokio::time::timeout(GRACE + Duration::from_secs(2), r.task)
        .await
        .context("the app did not stop within the grace period")???;
    Ok(t0.elapsed())
}

#[tokio::test]
async fn sampling_goes_on_without_a_collector_and_stops_promptly_on_cancel() -> Result<()> {
    // A port that was just free: connecting is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let url = format!("http://{addr}");
    let r = start(config(&["--collector", &url, "--interval", "0.1"])?)?;
    let samples = Arc::clone(&r.samples);
    until("three samples", || samples.load(Ordering::SeqCst) >= 3).await?;
    let took = stop(r).await?;
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    Ok(())
}

/// What the fake collector saw.
#[derive(Default)]
struct Seen {
    /// The `authorization` value of each stream.
    auth: Vec<Option<String>>,
    /// Sequence numbers of the batches received.
    batches: Vec<u64>,
    /// Sequence numbers acknowledged.
    acked: Vec<u64>,
    /// The epoch of each stream's hello.
    hellos: Vec<u64>,
    /// (epoch, seq) of the batches received, in order.
    sent: Vec<(u64, u64)>,
}

/// Answers hello with welcome and acknowledges batches once `gate` is true.
struct FakeCollector {
    seen: Arc<Mutex<Seen>>,
    gate: watch::Receiver<bool>,
}

fn seen(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tonic::async_trait]
impl pb::ingest_server::Ingest for FakeCollector {
    type StreamStream = ReceiverStream<Result<pb::CollectorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen(&self.seen).auth.push(auth);
        let (seen_by_stream, mut gate) = (Arc::clone(&self.seen), self.gate.clone());
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let msg = |body| Ok(pb::CollectorMessage { body: Some(body) });
        tokio::spawn(async move {
            use pb::agent_message::Body as In;
            use pb::collector_message::Body as Out;
            let Ok(Some(pb::AgentMessage {
                body: Some(In::Hello(hello)),
            })) = inbound.message().await
            else {
                return;
            };
            seen(&seen_by_stream).hellos.push(hello.epoch);
            let welcome = Out::Welcome(pb::Welcome {
                host_id: 1,
                ..Default::default()
            });
            if tx.send(msg(welcome)).await.is_err() {
                return;
            }
            let mut pending = Vec::new();
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(pb::AgentMessage { body: Some(In::Batch(b)) })) => {
                            seen(&seen_by_stream).batches.push(b.seq);
                            seen(&seen_by_stream).sent.push((b.epoch, b.seq));
                            pending.push(b.seq);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    },
                    r = gate.changed() => if r.is_err() { return },
                }
                if *gate.borrow() {
                    for seq in pending.drain(..) {
                        let ack = Out::Ack(pb::Ack {
                            epoch: hello.epoch,
                            seq,
                            ..Default::default()
                        });
                        if tx.send(msg(ack)).await.is_err() {
                            return;
                        }
                        seen(&seen_by_stream).acked.push(seq);
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves a fake collector on a loopback port.
async fn fake_collector() -> Result<(SocketAddr, Arc<Mutex<Seen>>, watch::Sender<bool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (open, gate) = watch::channel(false);
    let service = pb::ingest_server::IngestServer::new(FakeCollector {
        seen: Arc::clone(&seen),
        gate,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok((addr, seen, open))
}

fn token_file(tag: &str, token: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("app-{tag}-{}.token", std::process::id()));
    std::fs::write(&path, format!("{token}\n"))?;
    Ok(path)
}

/// Starts an app against a fake collector and waits until two batches (the first
/// table and the full table every new stream asks for) have arrived unacknowledged.
async fn streaming(tag: &str) -> Result<(Running, Arc<Mutex<Seen>>, watch::Sender<bool>)> {
    let (addr, seen_by_collector, open) = fake_collector().await?;
    let token = token_file(tag, "s3cret")?;
    let cfg = config(&[
        "--collector",
        &format!("http://{addr}"),
        "--interval",
        "60",
        "--token-file",
        token.to_str().context("utf-8 path")?,
    ])?;
    let _ = std::fs::remove_file(&token);
    let r = start(cfg)?;
    until("two batches", || {
        seen(&seen_by_collector).batches.len() >= 2
    })
    .await?;
    assert_eq!(
        seen(&seen_by_collector).auth,
        vec![Some("Bearer s3cret".to_owned())],
        "one stream, with the token"
    );
    Ok((r, seen_by_collector, open))
}

#[tokio::test]
async fn stopping_waits_for_the_acknowledgement_of_what_was_sent() -> Result<()> {
    let (r, seen_by_collector, open) = streaming("drain").await?;
    r.stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !r.task.is_finished(),
        "stopped before the batches were acknowledged"
    );
    let t0 = Instant::now();
    open.send(true)?;
    tokio::time::timeout(Duration::from_secs(2), r.task)
        .await
        .context("did not stop once everything was acknowledged")???;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let s = seen(&seen_by_collector);
    assert_eq!(s.acked, s.batches, "stopped with every batch acknowledged");
    Ok(())
}

#[tokio::test]
async fn a_collector_that_never_acknowledges_holds_the_stop_for_the_grace_period_only() -> Result<()>
{
    let (r, _seen, _gate) = streaming("grace").await?;
    let took = stop(r).await?;
    assert!(
        took >= GRACE - Duration::from_millis(100) && took < GRACE + Duration::from_secs(1),
        "stopping took {took:?} with a grace period of {GRACE:?}"
    );
    Ok(())
}

/// A spool directory of its own under the test's scratch space.
fn spool_dir(tag: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("app-spool-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count()
    })
}

#[tokio::test]
async fn a_restarted_app_first_sends_what_its_last_run_left_in_the_spool_under_that_runs_epoch()
-> Result<()> {
    let dir = spool_dir("replay")?;
    let dir_flag = dir.to_str().context("utf-8 path")?.to_owned();
    // Run 1: a collector that never acknowledges; everything stays in the spool.
    let (addr, first, _closed) = fake_collector().await?;
    // Each run: the agent against `addr`, on the same spool.
    let run = |addr: std::net::SocketAddr| {
        let url = format!("http://{addr}");
        start(config(&[
            "--collector",
            &url,
            "--interval",
            "0.2",
            "--spool-dir",
            &dir_flag,
        ])?)
    };
    let r = run(addr)?;
    until("four batches", || seen(&first).batches.len() >= 4).await?;
    stop(r).await?;
    let (e1, sent1) = {
        let s = seen(&first);
        (s.hellos[0], s.sent.clone())
    };
    assert!(sent1.iter().all(|&(e, _)| e == e1));
    // Run 2: a collector that acknowledges. Run 1's batches come first, under run 1's
    // epoch and numbers, on a stream of their own; then run 2's, under a later epoch.
    let (addr, second, open) = fake_collector().await?;
    open.send(true)?;
    let r = run(addr)?;
    until("run 2's own batches", || {
        seen(&second).sent.iter().filter(|&&(e, _)| e != e1).count() >= 2
    })
    .await?;
    stop(r).await?;
    let s = seen(&second);
    assert_eq!(
        s.hellos.first(),
        Some(&e1),
        "the first stream is run 1's: {:?}",
        s.hellos
    );
    let e2 = s.hellos.get(1).copied().context("a second stream")?;
    assert!(e2 > e1, "run 2's epoch {e2} is after run 1's {e1}");
    let replayed: Vec<u64> = s
        .sent
        .iter()
        .take_while(|&&(e, _)| e == e1)
        .map(|&(_, q)| q)
        .collect();
    let first_seqs: Vec<u64> = sent1.iter().map(|&(_, q)| q).collect();
    assert!(
        replayed.len() >= first_seqs.len() && replayed.starts_with(&first_seqs),
        "run 1 sent {first_seqs:?}, run 2 replayed {replayed:?}"
    );
    assert_eq!(
        replayed,
        (1..=replayed.len() as u64).collect::<Vec<_>>(),
        "in order, each once"
    );
    assert!(
        s.sent.iter().skip(replayed.len()).all(|&(e, _)| e == e2),
        "then run 2's only: {:?}",
        s.sent
    );
    drop(s);
    assert_eq!(
        segments(&dir),
        0,
        "a clean stop with everything acknowledged leaves nothing to replay"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! `finwait-agent run`: sample every interval, turn tables into batches (a full table
//! on every new stream, deltas after), and stream them to the collector.
//!
//! Two tasks share the [`Outbox`]: the sampler pushes a batch every cycle and never
//! waits on the network; the sender keeps one stream open (reconnecting with jittered
//! exponential backoff), resends what was not acknowledged, and drops batches only
//! when the collector acknowledges them. Both stop on the root cancellation token.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use crate::AgentError;
use crate::delta::{self, Table, TimeWaitMode};
use crate::outbox::Outbox;
use crate::sampler::TableSource;
use crate::wire;

/// How the agent reaches the collector and how often it samples.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Collector URL, `http://` (loopback with `insecure_loopback` only) or `https://`.
    pub collector: String,
    /// Sampling interval before jitter.
    pub interval: Duration,
    /// Bearer token, read from a file.
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Plaintext without a token is allowed (loopback collectors only).
    pub insecure_loopback: bool,
    /// Bound of the unacknowledged-batch buffer, in bytes.
    pub buffer_bytes: usize,
    /// TIME_WAIT handling.
    pub time_wait: TimeWaitMode,
    /// Who this host is.
    pub identity: pb::HostIdentity,
    /// This process's instance id.
    pub instance_id: String,
}

impl RunConfig {
    /// Checks the transport rules before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        let uri: tonic::codegen::http::Uri = self
            .collector
            .parse()
            .map_err(|e| format!("--collector {:?}: {e}", self.collector))?;
        let host = uri.host().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("http") if self.insecure_loopback && loopback => Ok(()),
            Some("http") if self.insecure_loopback => Err(format!(
                "--insecure-loopback allows plaintext only to a loopback collector, not {host}"
            )),
            Some("http") => Err("plaintext http:// needs --insecure-loopback (and a loopback collector); use https://".into()),
            Some("https") if self.ca_pem.is_none() => Err("https:// needs --ca-file (the CA that signed the collector's certificate)".into()),
            Some("https") if self.token.is_none() && !self.insecure_loopback => {
                Err("the collector needs a token: give --token-file".into())
            }
            Some("https") => Ok(()),
            _ => Err(format!("--collector {:?}: use http:// or https://", self.collector)),
        }
    }
}

fn lock(o: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    // A panic while holding the lock cannot leave the queue half-updated in a way that
    // matters more than stopping would: keep going with what is there.
    o.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A small xorshift generator for jitter; no cryptographic use.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Jitter(seed | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` scaled by a factor in [1 - spread, 1 + spread).
    fn around(&mut self, d: Duration, spread: f64) -> Duration {
        d.mul_f64(1.0 - spread + 2.0 * spread * self.unit())
    }
}

/// Exponential backoff with full jitter.
struct Backoff {
    next: Duration,
    jitter: Jitter,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            jitter: Jitter::new(),
        }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
    fn step(&mut self) -> Duration {
        let d = self.next.mul_f64(self.jitter.unit().max(0.1));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
}

/// Shared between the sampler and the sender.
struct Shared {
    outbox: Mutex<Outbox>,
    /// A batch was queued.
    queued: Notify,
    /// Sample now (a new stream needs a full table).
    sample_now: Notify,
}

/// Runs until `stop` is cancelled.
pub async fn run(
    cfg: RunConfig,
    source: Box<dyn TableSource>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    cfg.validate().map_err(AgentError::InvalidArgument)?;
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let shared = Arc::new(Shared {
        outbox: Mutex::new(Outbox::new(epoch, cfg.buffer_bytes)),
        queued: Notify::new(),
        sample_now: Notify::new(),
    });
    tracing::info!(collector = %cfg.collector, epoch, interval_ms = cfg.interval.as_millis() as u64, "agent running");
    let sampler = tokio::spawn(sample_loop(
        cfg.clone(),
        source,
        Arc::clone(&shared),
        stop.clone(),
    ));
    let sender = tokio::spawn(send_loop(cfg, Arc::clone(&shared), stop.clone()));
    let (a, b) = tokio::join!(sampler, sender);
    if a.is_err() || b.is_err() {
        tracing::error!("an agent task panicked");
    }
    Ok(())
}

/// The sampler's state between cycles; moved onto a blocking thread for each cycle,
/// since reading the kernel, diffing and encoding are all CPU or blocking work.
struct Cycler {
    source: Box<dyn TableSource>,
    prev: Option<Table>,
    time_wait: TimeWaitMode,
}

impl Cycler {
    /// Samples, turns the sample into the next batch and queues it. Sequence numbers are
    /// handed out only for batches that exist, so a failed read leaves no gap.
    fn cycle(&mut self, shared: &Shared) -> Result<(), crate::sampler::SampleError> {
        let mut sample = self.source.sample()?;
        let time_wait = if self.time_wait == TimeWaitMode::Summarise {
            delta::summarise_time_wait(&sample.sockets)
        } else {
            Vec::new()
        };
        // Counts need the sockets; take them before the sockets move.
        let state_counts = sample.state_counts();
        let table = Table::from_sockets(std::mem::take(&mut sample.sockets), self.time_wait);
        let (epoch, seq, full) = {
            let mut o = lock(&shared.outbox);
            let full = o.need_full || self.prev.is_none();
            (o.epoch, o.next_seq(full), full)
        };
        let _span = tracing::debug_span!("cycle", seq, full).entered();
        let diff;
        let payload = match (&self.prev, full) {
            (Some(p), false) => {
                diff = delta::diff(p, &table);
                wire::Sockets::Delta(&diff)
            }
            _ => wire::Sockets::Full(table.sockets.values().collect()),
        };
        let batch = wire::batch(epoch, seq, &sample, payload, &time_wait, &state_counts);
        {
            let mut o = lock(&shared.outbox);
            o.push(batch);
            let (n, bytes) = o.len_bytes();
            tracing::debug!(seq, full, queued = n, queued_bytes = bytes, "batch queued");
        }
        self.prev = Some(table);
        Ok(())
    }
}

async fn sample_loop(
    cfg: RunConfig,
    source: Box<dyn TableSource>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut cycler = Cycler {
        source,
        prev: None,
        time_wait: cfg.time_wait,
    };
    let mut jitter = Jitter::new();
    loop {
        let s = Arc::clone(&shared);
        let (res, back) = match tokio::task::spawn_blocking(move || {
            let r = cycler.cycle(&s);
            (r, cycler)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "sampling task failed; stopping");
                stop.cancel();
                return;
            }
        };
        cycler = back;
        match res {
            Ok(()) => shared.queued.notify_one(),
            Err(e) => tracing::warn!(error = %e, "sampling failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(jitter.around(cfg.interval, 0.1)) => {}
            _ = shared.sample_now.notified() => {}
        }
    }
}

/// Why a stream ended.
enum StreamEnd {
    /// Stop requested.
    Stopped,
    /// Transport or collector trouble: retry.
    Retry(String),
}

async fn connect(cfg: &RunConfig) -> Result<Channel, String> {
    let mut ep = Endpoint::from_shared(cfg.collector.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(ca) = &cfg.ca_pem {
        ep = ep
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .map_err(|e| e.to_string())?;
    }
    ep.connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

async fn send_loop(cfg: RunConfig, shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let span = tracing::info_span!("stream", collector = %cfg.collector);
        match stream_once(&cfg, &shared, &stop, &mut backoff)
            .instrument(span)
            .await
        {
            StreamEnd::Stopped => return,
            StreamEnd::Retry(why) => {
                let wait = backoff.step();
                tracing::warn!(reason = %why, retry_in_ms = wait.as_millis() as u64, "stream ended");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn stream_once(
    cfg: &RunConfig,
    shared: &Shared,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> StreamEnd {
    let channel = tokio::select! {
        _ = stop.cancelled() => return StreamEnd::Stopped,
        c = connect(cfg) => match c { Ok(c) => c, Err(e) => return StreamEnd::Retry(e) },
    };
    let token = cfg.token.clone();
    let mut client = pb::ingest_client::IngestClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            if let Some(t) = &token {
                let v = format!("Bearer {t}").parse().map_err(|_| {
                    tonic::Status::invalid_argument("token is not valid header text")
                })?;
                req.metadata_mut().insert("authorization", v);
            }
            Ok(req)
        },
    )
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let epoch = lock(&shared.outbox).epoch;
    let hello = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            host: Some(cfg.identity.clone()),
            epoch,
            instance_id: cfg.instance_id.clone(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return StreamEnd::Retry("stream closed before hello".into());
    }
    let mut inbound = match client.stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return refused(s),
    };
    let welcome = tokio::select! {
        _ = stop.cancelled() => return StreamEnd::Stopped,
        m = tokio::time::timeout(Duration::from_secs(30), inbound.message()) => m,
    };
    let welcome = match welcome {
        Ok(Ok(Some(pb::CollectorMessage {
            body: Some(Body::Welcome(w)),
        }))) => w,
        Ok(Ok(_)) => return StreamEnd::Retry("collector did not answer hello with welcome".into()),
        Ok(Err(s)) => return refused(s),
        Err(_) => return StreamEnd::Retry("no welcome within 30 s".into()),
    };
    backoff.reset();
    tracing::info!(
        host_id = welcome.host_id,
        last_epoch = welcome.last_epoch,
        last_seq = welcome.last_seq,
        "connected"
    );
    lock(&shared.outbox).new_stream(welcome.last_epoch, welcome.last_seq);
    shared.sample_now.notify_one();
    loop {
        let unsent = lock(&shared.outbox).unsent();
        for b in unsent {
            let seq = b.seq;
            let m = pb::AgentMessage {
                body: Some(pb::agent_message::Body::Batch(b)),
            };
            if tx.send(m).await.is_err() {
                return StreamEnd::Retry("stream closed".into());
            }
            lock(&shared.outbox).sent_upto = seq;
        }
        tokio::select! {
            _ = stop.cancelled() => return StreamEnd::Stopped,
            _ = shared.queued.notified() => {}
            m = inbound.message() => match m {
                Ok(Some(pb::CollectorMessage { body: Some(Body::Ack(a)) })) => {
                    if a.epoch == epoch {
                        lock(&shared.outbox).ack(a.seq);
                    }
                }
                Ok(Some(pb::CollectorMessage { body: Some(Body::Resync(r)) })) => {
                    tracing::info!(seq = r.seq, reason = %r.reason, "collector asked for a full table");
                    if lock(&shared.outbox).resync(r.seq) {
                        shared.sample_now.notify_one();
                    }
                }
                Ok(Some(_)) => return StreamEnd::Retry("unexpected message from the collector".into()),
                Ok(None) => return StreamEnd::Retry("collector closed the stream".into()),
                // Invalid or too large: resending it would fail forever.
                Err(s) if matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange) => {
                    let n = lock(&shared.outbox).drop_unacked_sent();
                    tracing::error!(status = %s.message(), dropped = n, "collector refused a batch as invalid; dropped it and will send a full table");
                    return StreamEnd::Retry("invalid batch".into());
                }
                Err(s) => return refused(s),
            },
        }
    }
}

/// Logs refusals that need an operator, and turns every status into a retry.
fn refused(s: tonic::Status) -> StreamEnd {
    match s.code() {
        tonic::Code::AlreadyExists => {
            tracing::error!(status = %s.message(), "another live agent claims this host identity; give this one a distinct --hostname or --machine-id");
        }
        tonic::Code::Unauthenticated => {
            tracing::error!(status = %s.message(), "the collector refused our token")
        }
        _ => {}
    }
    StreamEnd::Retry(format!("{}: {}", s.code(), s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, insecure: bool, token: bool, ca: bool) -> RunConfig {
        RunConfig {
            collector: url.into(),
            interval: Duration::from_secs(10),
            token: token.then(|| "t".to_owned()),
            ca_pem: ca.then(Vec::new),
            insecure_loopback: insecure,
            buffer_bytes: 1 << 20,
            time_wait: TimeWaitMode::Summarise,
            identity: pb::HostIdentity::default(),
            instance_id: "i".into(),
        }
    }

    #[test]
    fn plaintext_only_to_loopback_when_asked_and_tls_needs_a_ca_and_token() {
        assert!(
            cfg("http://127.0.0.1:7070", true, false, false)
                .validate()
                .is_ok()
        );
        assert!(
            cfg("http://[::1]:7070", true, false, false)
                .validate()
                .is_ok()
        );
        assert!(
            cfg("http://localhost:7070", true, false, false)
                .validate()
                .is_ok()
        );
        assert!(
            cfg("http://10.1.2.3:7070", true, false, false)
                .validate()
                .is_err()
        );
        assert!(
            cfg("http://127.0.0.1:7070", false, true, false)
                .validate()
                .is_err()
        );
        assert!(
            cfg("https://collector:7070", false, true, false)
                .validate()
                .is_err(),
            "needs a CA"
        );
        assert!(
            cfg("https://collector:7070", false, false, true)
                .validate()
                .is_err(),
            "needs a token"
        );
        assert!(
            cfg("https://collector:7070", false, true, true)
                .validate()
                .is_ok()
        );
        assert!(
            cfg("ftp://collector", false, true, true)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.step();
            assert!(last <= BACKOFF_MAX);
        }
        assert_eq!(b.next, BACKOFF_MAX);
        b.reset();
        assert!(b.step() <= BACKOFF_MIN);
        let _ = last;
    }
}

//! The ingest stream (finwait.v1.Ingest/Stream): hello, then batches, each
//! acknowledged after its transaction committed.
//!
//! Every stream is a task with an owner (the app's tracker) and a stop signal (the
//! app's cancellation token): serving with shutdown alone would wait forever on an
//! idle stream. A bad message ends the stream with INVALID_ARGUMENT naming the field;
//! what was committed before it stays.
//!
//! Messages arrive still encoded ([`finwait_proto::AgentEnvelope`]): a hello larger
//! than [`MAX_HELLO_BYTES`] is refused undecoded, and a batch reserves its share of the
//! ingest memory [`Budget`] before it is decoded.
//!
//! Epochs and sequence numbers (README, "What the collector does with epochs and
//! sequence numbers"):
//! - a hello whose epoch is ahead of the collector's clock by more than the tolerance
//!   is refused (FAILED_PRECONDITION) unless the collector handed it out; one behind the host's last committed epoch is
//!   given `last_epoch + 1` in `Welcome.epoch`, so a clock stepped back (or a stored
//!   epoch from the future) never locks a host out;
//! - every batch must carry the stream's epoch;
//! - a resent (epoch, seq) is acknowledged as a duplicate only when its SHA-256 digest
//!   is the committed one; other content under a committed sequence number is refused
//!   (FAILED_PRECONDITION), never silently dropped;
//! - after a Resync, deltas are ignored until a full table arrives (the agent drops
//!   them itself on the Resync), and a stream asked for more than [`MAX_RESYNCS`]
//!   full tables in a row is ended: it cannot spin.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use finwait_proto::AgentEnvelope;
use finwait_proto::v1 as pb;
use prost::Message;
use prost::bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{self, LiveTokens};
use crate::budget::{Budget, Reserved};
use crate::error::{ErrorCode, store_status};
use crate::model::{Batch, Payload};
use crate::shed::{ShedConfig, ShedReason, Shedder};
use crate::store::{Applied, BatchHead, BatchTx, Begun, Store, StreamLease};
use crate::validate::{self, Limits};
use crate::wire_budget::WireLedger;

/// How long an agent may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest encoded hello: 64 labels of at most 128 + 256 bytes and the identity's
/// bounded strings need under 30 KiB; anything larger is refused before decoding.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// How long the next chunk of a full table may take; the open transaction is rolled
/// back when it does not come.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// Resyncs in a row (no commit between) after which a stream is ended.
pub const MAX_RESYNCS: u32 = 8;

/// The ingest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    /// Where batches go.
    store: Store,
    /// Message bounds.
    limits: Limits,
    /// Accepted tokens (a stream needs the ingest role); `None` only with
    /// --insecure-loopback.
    tokens: Option<LiveTokens>,
    /// Bounds concurrent streams.
    streams: Arc<Semaphore>,
    /// Bounds the memory every stream's batches hold together.
    budget: Budget,
    /// Bounds the chunked full tables in progress (each holds a database connection
    /// between its chunks) to half the pool, taken before any budget: otherwise
    /// tables waiting for budget could hold every connection while the budget is held
    /// by batches waiting for a connection.
    open_tables: Arc<Semaphore>,
    /// Bounds the database writes (hellos, batch transactions) in progress; a write
    /// that cannot start in time is shed with a retry delay ([`crate::shed`]).
    shed: Shedder,
    /// Stops every stream on shutdown.
    stop: CancellationToken,
    /// Owns the stream tasks.
    tracker: TaskTracker,
    /// Whether the database answers (the supervisor's probe): while it does not, a
    /// hello or batch is told UNAVAILABLE at once instead of waiting for a connection.
    db: Option<crate::db_health::DbStatus>,
}

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, Status>>;
/// One stream's messages, with the wire bytes reserved for them (see
/// [`crate::wire_budget`]): each message's are released once it is accounted for.
struct Inbound {
    messages: Streaming<AgentEnvelope>,
    wire: Option<Arc<WireLedger>>,
}

impl Inbound {
    async fn message(&mut self) -> Result<Option<AgentEnvelope>, Status> {
        self.messages.message().await
    }

    /// The oldest message read is now held under the memory budget (or refused).
    fn accounted(&self) {
        if let Some(w) = &self.wire {
            w.accounted();
        }
    }
}
/// What the collector sends on a stream.
pub type StreamOut = Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

fn msg(body: pb::collector_message::Body) -> Result<pb::CollectorMessage, Status> {
    Ok(pb::CollectorMessage { body: Some(body) })
}

fn reject(reason: &'static str) {
    metrics::counter!("finwait_ingest_rejects_total", "reason" => reason).increment(1);
}

/// A refusal that ends the stream: counted by reason, logged once, sent if possible.
fn refuse(reason: &'static str, status: Status) -> Status {
    reject(reason);
    tracing::info!(code = ?status.code(), error = %status.message(), "stream refused");
    status
}

/// What the ingest service may hold at once.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// Concurrent streams (--max-streams).
    pub max_streams: usize,
    /// Memory for batches being decoded and written (--ingest-memory-bytes).
    pub budget: Budget,
    /// The database pool's size (--db-connections): half of it may hold chunked tables.
    pub db_connections: usize,
    /// Concurrent writes and retry delays (--ingest-writes and friends).
    pub shed: ShedConfig,
}

/// One stream's position, fixed at hello except for the resync bookkeeping.
struct StreamState {
    host_id: i64,
    lease: StreamLease,
    /// The epoch every batch must carry (Welcome.epoch).
    epoch: u64,
    /// Resyncs sent since the last commit.
    resyncs: u32,
    /// A Resync was sent: deltas are ignored until a full table arrives.
    awaiting_full: bool,
}

impl IngestService {
    /// A service writing to `store` within `capacity`.
    pub fn new(
        store: Store,
        limits: Limits,
        tokens: Option<LiveTokens>,
        capacity: Capacity,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) -> IngestService {
        IngestService {
            store,
            limits,
            tokens,
            streams: Arc::new(Semaphore::new(capacity.max_streams)),
            budget: capacity.budget,
            open_tables: Arc::new(Semaphore::new((capacity.db_connections / 2).max(1))),
            shed: Shedder::new(capacity.shed),
            stop,
            tracker,
            db: None,
        }
    }

    /// Answers UNAVAILABLE at once while `db` says the database is unreachable.
    pub fn with_db_status(mut self, db: crate::db_health::DbStatus) -> IngestService {
        self.db = Some(db);
        self
    }

    /// How raw messages are bounded before tonic buffers them: `wire` bytes shared by
    /// every stream, waited for as long as a batch waits for a write slot, the
    /// stream shed (counted, with a retry delay) when the wait expires.
    pub fn wire_gate(&self, wire: Budget, max_message: usize) -> crate::wire_budget::WireGate {
        let shed = self.shed.clone();
        crate::wire_budget::WireGate {
            budget: wire,
            wait: shed.batch_wait(),
            max_message,
            shed: Arc::new(move || {
                shed.refuse(
                    ShedReason::Memory,
                    "the collector's ingest memory is spent; retry after the delay given",
                )
            }),
        }
    }

    /// Resolves, with the UNAVAILABLE to send, once the supervisor knows the database
    /// is unreachable (checked every 250 ms); never without a supervisor.
    async fn database_lost(&self) -> Status {
        if self.db.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(status) = self.db_down() {
                return status;
            }
        }
    }

    /// UNAVAILABLE when the database is known to be unreachable.
    fn db_down(&self) -> Option<Status> {
        self.db.as_ref().filter(|d| !d.is_up()).map(|_| {
            reject("database_down");
            self.shed.refuse(
                ShedReason::DatabaseDown,
                "database unreachable; retry later",
            )
        })
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let set = self.tokens.as_ref().map(LiveTokens::current);
        auth::check(
            set.as_deref(),
            auth::presented(req.metadata()),
            auth::Role::Ingest,
        )
        .map_err(|r| {
            reject(r.reason());
            r.code().log("ingest", &r.to_string());
            r.status()
        })
    }

    /// Accepts a stream (token, stream limit) and starts its task.
    pub async fn open(
        &self,
        request: Request<Streaming<AgentEnvelope>>,
    ) -> Result<Response<StreamOut>, Status> {
        self.authorize(&request)?;
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            reject("too_many_streams");
            ErrorCode::ResourceExhausted.status("too many agent streams; retry later")
        })?;
        let (tx, rx) = mpsc::channel(8);
        let this = self.clone();
        let wire = request.extensions().get::<Arc<WireLedger>>().cloned();
        let inbound = Inbound {
            messages: request.into_inner(),
            wire,
        };
        self.tracker.spawn(async move {
            this.serve(inbound, tx).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// The hello, checked before and after decoding.
    async fn hello(&self, inbound: &mut Inbound) -> Result<Option<pb::Hello>, Status> {
        let first = tokio::select! {
            _ = self.stop.cancelled() => return Ok(None),
            m = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => m,
        };
        // A hello is small (refused above MAX_HELLO_BYTES undecoded): read, it costs
        // its wire bytes no longer.
        inbound.accounted();
        let raw = match first {
            Ok(Ok(Some(AgentEnvelope {
                hello: Some(h),
                batch: None,
            }))) => h,
            Ok(Ok(Some(_))) => {
                return Err(refuse(
                    "no_hello",
                    ErrorCode::InvalidArgument.status("the first message must be hello"),
                ));
            }
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(status)) if wire_shed(&status) => return Err(status),
            // An undecodable hello is the agent's mistake: say so, never end with OK.
            Ok(Err(status)) => {
                return match unreadable(&status) {
                    Some(why) => Err(refuse("undecodable", why)),
                    None => Ok(None),
                };
            }
            Err(_) => {
                return Err(refuse(
                    "hello_timeout",
                    ErrorCode::InvalidArgument.status("no hello within 30 s"),
                ));
            }
        };
        if raw.len() > MAX_HELLO_BYTES {
            return Err(refuse(
                "hello_too_large",
                ErrorCode::InvalidArgument.status(format!(
                    "hello is {} bytes, at most {MAX_HELLO_BYTES} (at most 64 labels)",
                    raw.len()
                )),
            ));
        }
        pb::Hello::decode(raw).map(Some).map_err(|e| {
            refuse(
                "undecodable",
                ErrorCode::InvalidArgument.status(format!("message does not decode: {e}")),
            )
        })
    }

    /// Runs one stream to its end.
    async fn serve(self, mut inbound: Inbound, out: Outbound) {
        let hello = match self.hello(&mut inbound).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(status) => {
                let _ = out.send(Err(status)).await;
                return;
            }
        };
        let hello = match validate::hello(&hello) {
            Ok(h) => h,
            Err(e) => {
                reject("invalid_hello");
                let _ = out
                    .send(Err(ErrorCode::InvalidArgument.status(e.to_string())))
                    .await;
                return;
            }
        };
        let span = tracing::info_span!("ingest_stream", host = ?hello.hostname, host_id = tracing::field::Empty);
        async {
            let lease = StreamLease {
                instance: hello.instance_id.clone(),
                stream: stream_id(),
            };
            // An epoch from a clock far ahead would lift the host's epoch out of reach of
            // every honest agent after it. Only an epoch the collector handed out (the
            // stored one, or the one after it) may be ahead of its clock; anything else
            // is refused before the hello changes the host (labels, boot id, lease).
            let ahead_ms = hello.epoch as i64 - chrono::Utc::now().timestamp_millis();
            if ahead_ms > self.limits.max_clock_ahead_ms {
                let stored = match self.store.last_epoch(&hello.machine_id, &hello.hostname).await {
                    Ok(e) => e,
                    Err(e) => {
                        reject("hello_refused");
                        let _ = out.send(Err(store_status(&e))).await;
                        return;
                    }
                };
                if stored.is_none_or(|last| hello.epoch as i64 > last.saturating_add(1)) {
                    let status = ErrorCode::FailedPrecondition.status(format!(
                        "hello.epoch {} is {} s ahead of the collector's clock (at most {} s): fix the agent's clock",
                        hello.epoch,
                        ahead_ms / 1000,
                        self.limits.max_clock_ahead_ms / 1000
                    ));
                    let _ = out.send(Err(refuse("clock_ahead", status))).await;
                    return;
                }
            }
            if let Some(status) = self.db_down() {
                let _ = out.send(Err(status)).await;
                return;
            }
            let slot = match self.shed.admit_hello().await {
                Ok(slot) => slot,
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            };
            let welcome = self.store.hello(&hello, lease.stream).await;
            drop(slot);
            let welcome = match welcome {
                Ok(w) => w,
                Err(e) => {
                    // A live agent holding the identity is the client's problem; storage down is ours.
                    let code = ErrorCode::from(&e);
                    let (machine_id, instance) = (&hello.machine_id, &hello.instance_id);
                    if code.is_client_error() {
                        tracing::info!(?code, error = %e, ?machine_id, ?instance, "hello refused");
                    } else {
                        tracing::warn!(?code, error = %e, ?machine_id, ?instance, "hello failed");
                    }
                    reject("hello_refused");
                    let _ = out.send(Err(store_status(&e))).await;
                    return;
                }
            };
            tracing::Span::current().record("host_id", welcome.host_id);
            // An epoch behind the stored one (a clock stepped back, or a stored epoch from
            // the future) would make every full table "older" forever: start above it.
            let epoch = if hello.epoch as i64 >= welcome.last_epoch {
                hello.epoch
            } else {
                tracing::info!(
                    agent_epoch = hello.epoch,
                    last_epoch = welcome.last_epoch,
                    "agent epoch is behind the host's last committed one; assigned the next"
                );
                welcome.last_epoch as u64 + 1
            };
            tracing::info!(epoch, last_seq = welcome.last_seq, "agent connected");
            let w = pb::Welcome {
                host_id: welcome.host_id as u64,
                last_epoch: welcome.last_epoch as u64,
                last_seq: welcome.last_seq as u64,
                epoch,
            };
            if out
                .send(msg(pb::collector_message::Body::Welcome(w)))
                .await
                .is_err()
            {
                return;
            }
            metrics::gauge!("finwait_ingest_streams_active").increment(1.0);
            let mut state = StreamState {
                host_id: welcome.host_id,
                lease,
                epoch,
                resyncs: 0,
                awaiting_full: false,
            };
            self.batches(&mut inbound, &out, &mut state).await;
            metrics::gauge!("finwait_ingest_streams_active").decrement(1.0);
            if let Err(e) = self.store.release(state.host_id, &state.lease).await {
                tracing::warn!(error = %e, "lease not released");
            }
            tracing::info!("agent disconnected");
        }
        .instrument(span)
        .await;
    }

    /// The next batch message, still encoded. `Ok(None)`: the stream ended (stop, the
    /// agent closed, the transport broke); `Err`: a status to send before ending.
    async fn next_raw(&self, inbound: &mut Inbound) -> Result<Option<Bytes>, Status> {
        let next = tokio::select! {
            _ = self.stop.cancelled() => {
                return Err(ErrorCode::Unavailable.status("collector shutting down"));
            }
            m = inbound.message() => m,
        };
        match next {
            Ok(Some(AgentEnvelope {
                hello: None,
                batch: Some(b),
            })) => Ok(Some(b)),
            Ok(Some(_)) => Err(refuse(
                "unexpected_message",
                ErrorCode::InvalidArgument.status("only batches may follow hello"),
            )),
            Ok(None) => Ok(None),
            Err(status) if wire_shed(&status) => Err(status),
            Err(status) => {
                // A message over the size limit or undecodable: tell the agent why
                // (if it is still there); a closed transport just ends the stream.
                match unreadable(&status) {
                    Some(why) => Err(refuse("undecodable", why)),
                    None => {
                        tracing::info!(%status, "stream ended by the agent or the transport");
                        Ok(None)
                    }
                }
            }
        }
    }

    async fn batches(&self, inbound: &mut Inbound, out: &Outbound, s: &mut StreamState) {
        loop {
            let raw = match self.next_raw(inbound).await {
                Ok(Some(raw)) => raw,
                Ok(None) => return,
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            };
            let started = Instant::now();
            // A batch caught by a database that stops answering (a stalled server)
            // is abandoned as soon as the supervisor knows: the agent hears
            // UNAVAILABLE with a retry delay now instead of holding its stream for as
            // long as the stall lasts; its resend is a duplicate if the commit landed.
            let reply = tokio::select! {
                r = self.batch(inbound, s, raw) => r,
                status = self.database_lost() => Err(Some(status)),
            };
            metrics::histogram!("finwait_ingest_ack_seconds")
                .record(started.elapsed().as_secs_f64());
            match reply {
                Ok(Some(body)) => {
                    if out.send(msg(body)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(Some(status)) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
                Err(None) => return,
            }
        }
    }

    /// Reserves budget for a message of `raw.len()` bytes (waiting for it) and decodes it.
    async fn decode(&self, raw: Bytes) -> Result<(Reserved, pb::Batch, Bytes), Status> {
        let need = Budget::need(raw.len());
        let reserved = tokio::select! {
            _ = self.stop.cancelled() => {
                return Err(ErrorCode::Unavailable.status("collector shutting down"));
            }
            r = self.budget.reserve(need) => r.map_err(|e| {
                refuse("over_budget", ErrorCode::ResourceExhausted.status(e.to_string()))
            })?,
        };
        let b = pb::Batch::decode(raw.clone()).map_err(|e| {
            refuse(
                "undecodable",
                ErrorCode::InvalidArgument.status(format!("message does not decode: {e}")),
            )
        })?;
        Ok((reserved, b, raw))
    }

    /// Checks, writes and settles one batch (every chunk of a chunked full table).
    /// `Ok(None)`: nothing to answer (a delta ignored after a Resync); `Err(Some)`: end
    /// the stream with that status; `Err(None)`: the stream ended mid-table (its
    /// transaction is rolled back).
    async fn batch(
        &self,
        inbound: &mut Inbound,
        s: &mut StreamState,
        raw: Bytes,
    ) -> Result<Option<pb::collector_message::Body>, Option<Status>> {
        if let Some(status) = self.db_down() {
            return Err(Some(status));
        }
        // Held until the batch is settled: its transaction is one of the bounded writes.
        let _slot = self.shed.admit_batch().await.map_err(Some)?;
        // A chunked table takes its slot before any memory (see `open_tables`).
        let head = finwait_proto::BatchHead::decode(raw.clone()).map_err(|e| {
            Some(refuse(
                "undecodable",
                ErrorCode::InvalidArgument.status(format!("message does not decode: {e}")),
            ))
        })?;
        let _table_slot = if head.chunk == 0 && head.more_chunks {
            tokio::select! {
                _ = self.stop.cancelled() => {
                    return Err(Some(ErrorCode::Unavailable.status("collector shutting down")));
                }
                p = Arc::clone(&self.open_tables).acquire_owned() => p.ok(),
            }
        } else {
            None
        };
        let (reserved, b, raw) = self.decode(raw).await?;
        inbound.accounted();
        let (epoch, seq) = (b.epoch, b.seq);
        let span = tracing::info_span!("batch", epoch, seq, chunks = tracing::field::Empty);
        async move {
            if epoch != s.epoch {
                return Err(Some(refuse(
                    "wrong_epoch",
                    ErrorCode::FailedPrecondition.status(format!(
                        "batch {epoch}:{seq}: epoch {epoch} is not this stream's epoch {} (Welcome.epoch)",
                        s.epoch
                    )),
                )));
            }
            if b.chunk != 0 {
                return Err(Some(refuse(
                    "invalid_batch",
                    ErrorCode::InvalidArgument.status(format!(
                        "batch {epoch}:{seq}: batch.chunk: chunk {} without chunk 0",
                        b.chunk
                    )),
                )));
            }
            let batch = self.validate(&b)?;
            let more = b.more_chunks;
            drop(b);
            let full = matches!(batch.payload, Payload::Full(_));
            if !full && s.awaiting_full {
                metrics::counter!("finwait_ingest_batches_total", "result" => "ignored")
                    .increment(1);
                tracing::debug!("delta ignored: a full table was asked for");
                return Ok(None);
            }
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            digest.update(&raw);
            drop(raw);
            let head = BatchHead {
                epoch: batch.epoch,
                seq: batch.seq,
                full,
                taken_at: batch.taken_at,
            };
            let begun = self
                .store
                .begin(s.host_id, &s.lease, &head)
                .await
                .map_err(|e| Some(stored(&e)))?;
            let (mut tx, settled) = match begun {
                Begun::Open(tx) => (Some(tx), None),
                Begun::Done(a) => (None, Some(a)),
            };
            if let Some(tx) = &mut tx {
                tx.write(&batch.payload).await.map_err(|e| Some(stored(&e)))?;
            }
            let mut total = batch.socket_count();
            // What finish stores besides sockets; the records themselves are written.
            let meta = Batch {
                payload: Payload::Full(Vec::new()),
                ..batch
            };
            drop(reserved);
            let chunks = if more {
                self.chunks(inbound, (epoch, seq), tx.as_mut(), &mut digest, &mut total)
                    .await?
            } else {
                1
            };
            tracing::Span::current().record("chunks", chunks);
            let digest = digest.finish();
            let applied = match (tx, settled) {
                (Some(tx), _) => {
                    let a = tx
                        .finish(&meta, digest.as_ref())
                        .await
                        .map_err(|e| Some(stored(&e)))?;
                    failpoint::after_commit();
                    a
                }
                (None, Some(a)) => a,
                (None, None) => unreachable!("begin either opens or settles a batch"),
            };
            self.answer(s, applied, &meta, digest.as_ref(), total)
        }
        .instrument(span)
        .await
    }

    fn validate(&self, b: &pb::Batch) -> Result<Batch, Option<Status>> {
        validate::batch(b, &self.limits).map_err(|e| {
            Some(refuse(
                "invalid_batch",
                ErrorCode::InvalidArgument.status(format!("batch {}:{}: {e}", b.epoch, b.seq)),
            ))
        })
    }

    /// Reads the chunks after chunk 0 of full table `id`, writing each into `tx`
    /// (none when the table is a duplicate or needs a resync: they are only read and
    /// digested). Returns how many chunks the table had.
    async fn chunks(
        &self,
        inbound: &mut Inbound,
        id: (u64, u64),
        mut tx: Option<&mut BatchTx>,
        digest: &mut ring::digest::Context,
        total: &mut usize,
    ) -> Result<u32, Option<Status>> {
        let mut next: u32 = 1;
        loop {
            let raw = match tokio::time::timeout(CHUNK_TIMEOUT, self.next_raw(inbound)).await {
                Ok(Ok(Some(raw))) => raw,
                Ok(Ok(None)) => return Err(None),
                Ok(Err(status)) => return Err(Some(status)),
                Err(_) => {
                    return Err(Some(refuse(
                        "chunk_timeout",
                        ErrorCode::InvalidArgument.status(format!(
                            "batch {}:{}: chunk {next} did not arrive within {} s; nothing of the table was stored",
                            id.0,
                            id.1,
                            CHUNK_TIMEOUT.as_secs()
                        )),
                    )));
                }
            };
            digest.update(&raw);
            let (reserved, c, _) = self.decode(raw).await?;
            inbound.accounted();
            if (c.epoch, c.seq, c.chunk) != (id.0, id.1, next) {
                return Err(Some(refuse(
                    "invalid_batch",
                    ErrorCode::InvalidArgument.status(format!(
                        "batch {}:{}: batch.chunk: expected chunk {next} of it, got {}:{} chunk {}",
                        id.0, id.1, c.epoch, c.seq, c.chunk
                    )),
                )));
            }
            let chunk = self.validate(&c)?;
            *total += chunk.socket_count();
            if *total > self.limits.max_sockets_per_batch {
                return Err(Some(refuse(
                    "invalid_batch",
                    ErrorCode::InvalidArgument.status(format!(
                        "batch {}:{}: batch.payload: {} socket records in its chunks, at most {}",
                        id.0, id.1, total, self.limits.max_sockets_per_batch
                    )),
                )));
            }
            if let Some(tx) = tx.as_deref_mut() {
                tx.write(&chunk.payload)
                    .await
                    .map_err(|e| Some(stored(&e)))?;
            }
            drop(reserved);
            next += 1;
            if !c.more_chunks {
                return Ok(next);
            }
        }
    }

    /// The reply to a settled batch, and the stream's resync bookkeeping.
    fn answer(
        &self,
        s: &mut StreamState,
        applied: Applied,
        meta: &Batch,
        digest: &[u8],
        sockets: usize,
    ) -> Result<Option<pb::collector_message::Body>, Option<Status>> {
        let (epoch, seq) = (meta.epoch as u64, meta.seq as u64);
        let result = |r: &'static str| {
            metrics::counter!("finwait_ingest_batches_total", "result" => r).increment(1);
        };
        match applied {
            Applied::Committed => {
                result("committed");
                metrics::counter!("finwait_ingest_rows_total").increment(sockets as u64);
                s.resyncs = 0;
                s.awaiting_full = false;
                Ok(Some(pb::collector_message::Body::Ack(pb::Ack {
                    epoch,
                    seq,
                    duplicate: false,
                })))
            }
            Applied::Duplicate(Some(stored)) if stored != digest => Err(Some(refuse(
                "digest_mismatch",
                ErrorCode::FailedPrecondition.status(format!(
                    "batch {epoch}:{seq} was committed before with other content; \
                     a sequence number is never reused for other data (send a full table under a new one)"
                )),
            ))),
            Applied::Duplicate(_) => {
                result("duplicate");
                Ok(Some(pb::collector_message::Body::Ack(pb::Ack {
                    epoch,
                    seq,
                    duplicate: true,
                })))
            }
            Applied::Resync(reason) => {
                result("resync");
                s.resyncs += 1;
                if s.resyncs > MAX_RESYNCS {
                    return Err(Some(refuse(
                        "resync_loop",
                        ErrorCode::FailedPrecondition.status(format!(
                            "{} resyncs in a row on this stream without a commit ({reason}); reconnect",
                            s.resyncs
                        )),
                    )));
                }
                s.awaiting_full = true;
                tracing::info!(%reason, "resync requested");
                Ok(Some(pb::collector_message::Body::Resync(pb::Resync {
                    epoch,
                    seq,
                    reason,
                })))
            }
        }
    }
}

/// A store failure as the agent sees it, logged once.
fn stored(e: &crate::store::StoreError) -> Status {
    let code = ErrorCode::from(e);
    if code.is_client_error() {
        reject("refused_by_store");
        tracing::info!(?code, error = %e, "batch refused");
    } else {
        reject("storage");
        tracing::warn!(?code, error = %e, "batch not stored");
    }
    store_status(e)
}

/// A random id for one stream (hosts.live_stream).
fn stream_id() -> i64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The system RNG failing is not something to serve through; a clock-based id
    // still tells streams apart.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1);
    }
    i64::from_le_bytes(b)
}

/// What to tell an agent whose message could not be read, or `None` when the
/// transport itself closed (nobody to tell). A message that does not decode (invalid
/// UTF-8 in a string, a malformed field: tonic reports INTERNAL) is the agent's
/// mistake, INVALID_ARGUMENT naming why; one over the size limit stays OUT_OF_RANGE.
/// A stream shed while a message waited for its wire bytes ([`crate::wire_budget`]):
/// the status is passed on as it is, retry delay included.
fn wire_shed(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && crate::shed::retry_delay(status).is_some()
}

fn unreadable(status: &Status) -> Option<Status> {
    match status.code() {
        tonic::Code::OutOfRange => Some(status.clone()),
        tonic::Code::Internal | tonic::Code::InvalidArgument => Some(
            ErrorCode::InvalidArgument
                .status(format!("message does not decode: {}", status.message())),
        ),
        _ => None,
    }
}

/// Test-only fault injection. In debug builds (what the tests run),
/// `FINWAIT_FAILPOINT_ABORT_AFTER_COMMITS=N` aborts the collector right after its
/// N-th batch commit, before the Ack is sent: the one moment a crash must not lose or
/// duplicate anything. Release builds do not contain it.
mod failpoint {
    #[cfg(debug_assertions)]
    pub(super) fn after_commit() {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static LEFT: OnceLock<Option<AtomicU64>> = OnceLock::new();
        let left = LEFT.get_or_init(|| {
            std::env::var("FINWAIT_FAILPOINT_ABORT_AFTER_COMMITS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(AtomicU64::new)
        });
        if let Some(left) = left
            && left.fetch_sub(1, Ordering::SeqCst) == 1
        {
            eprintln!("failpoint: aborting after a commit, before its ack");
            std::process::abort();
        }
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn after_commit() {}
}

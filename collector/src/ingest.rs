//! The ingest stream (finwait.v1.Ingest/Stream): hello, then batches, each
//! acknowledged after its transaction committed.
//!
//! Every stream is a task with an owner (the app's tracker) and a stop signal (the
//! app's cancellation token): serving with shutdown alone would wait forever on an
//! idle stream. A bad message ends the stream with INVALID_ARGUMENT naming the field;
//! what was committed before it stays.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use finwait_proto::v1 as pb;
use finwait_proto::v1::agent_message::Body;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{self, Tokens};
use crate::error::{ErrorCode, store_status};
use crate::store::{Applied, Store};
use crate::validate::{self, Limits};

/// How long an agent may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The ingest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    /// Where batches go.
    store: Store,
    /// Message bounds.
    limits: Limits,
    /// Accepted tokens (a stream needs the ingest role); `None` only with
    /// --insecure-loopback.
    tokens: Option<Arc<Tokens>>,
    /// Bounds concurrent streams.
    streams: Arc<Semaphore>,
    /// Stops every stream on shutdown.
    stop: CancellationToken,
    /// Owns the stream tasks.
    tracker: TaskTracker,
}

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, Status>>;

fn msg(body: pb::collector_message::Body) -> Result<pb::CollectorMessage, Status> {
    Ok(pb::CollectorMessage { body: Some(body) })
}

fn reject(reason: &'static str) {
    metrics::counter!("finwait_ingest_rejects_total", "reason" => reason).increment(1);
}

impl IngestService {
    /// A service writing to `store`.
    pub fn new(
        store: Store,
        limits: Limits,
        tokens: Option<Arc<Tokens>>,
        max_streams: usize,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) -> IngestService {
        IngestService {
            store,
            limits,
            tokens,
            streams: Arc::new(Semaphore::new(max_streams)),
            stop,
            tracker,
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        auth::check(
            self.tokens.as_deref(),
            auth::presented(req.metadata()),
            auth::Role::Ingest,
        )
        .map_err(|r| {
            reject(r.reason());
            r.code().log("ingest", &r.to_string());
            r.status()
        })
    }

    /// Runs one stream to its end.
    async fn serve(self, mut inbound: Streaming<pb::AgentMessage>, out: Outbound) {
        let first = tokio::select! {
            _ = self.stop.cancelled() => return,
            m = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => m,
        };
        let hello = match first {
            Ok(Ok(Some(pb::AgentMessage {
                body: Some(Body::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => {
                reject("no_hello");
                let _ = out
                    .send(Err(
                        ErrorCode::InvalidArgument.status("the first message must be hello")
                    ))
                    .await;
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(status)) => {
                // An undecodable hello is the agent's mistake: say so, never end with OK.
                if let Some(why) = unreadable(&status) {
                    reject("undecodable");
                    let _ = out.send(Err(why)).await;
                }
                return;
            }
            Err(_) => {
                reject("hello_timeout");
                let _ = out
                    .send(Err(
                        ErrorCode::InvalidArgument.status("no hello within 30 s")
                    ))
                    .await;
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
        let span = tracing::info_span!("ingest_stream", host = %hello.hostname, host_id = tracing::field::Empty);
        async {
            let welcome = match self.store.hello(&hello).await {
                Ok(w) => w,
                Err(e) => {
                    // A live agent holding the identity is the client's problem; storage down is ours.
                    let code = ErrorCode::from(&e);
                    let (machine_id, instance) = (&hello.machine_id, &hello.instance_id);
                    if code.is_client_error() {
                        tracing::info!(?code, error = %e, %machine_id, %instance, "hello refused");
                    } else {
                        tracing::warn!(?code, error = %e, %machine_id, %instance, "hello failed");
                    }
                    reject("hello_refused");
                    let _ = out.send(Err(store_status(&e))).await;
                    return;
                }
            };
            tracing::Span::current().record("host_id", welcome.host_id);
            tracing::info!(
                epoch = hello.epoch,
                last_seq = welcome.last_seq,
                "agent connected"
            );
            let w = pb::Welcome {
                host_id: welcome.host_id as u64,
                last_epoch: welcome.last_epoch as u64,
                last_seq: welcome.last_seq as u64,
            };
            if out
                .send(msg(pb::collector_message::Body::Welcome(w)))
                .await
                .is_err()
            {
                return;
            }
            metrics::gauge!("finwait_ingest_streams_active").increment(1.0);
            self.batches(&mut inbound, &out, welcome.host_id, &hello.instance_id)
                .await;
            metrics::gauge!("finwait_ingest_streams_active").decrement(1.0);
            if let Err(e) = self
                .store
                .release(welcome.host_id, &hello.instance_id)
                .await
            {
                tracing::warn!(error = %e, "lease not released");
            }
            tracing::info!("agent disconnected");
        }
        .instrument(span)
        .await;
    }

    async fn batches(
        &self,
        inbound: &mut Streaming<pb::AgentMessage>,
        out: &Outbound,
        host_id: i64,
        instance: &str,
    ) {
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => {
                    let _ = out.send(Err(ErrorCode::Unavailable.status("collector shutting down"))).await;
                    return;
                }
                m = inbound.message() => m,
            };
            let b = match next {
                Ok(Some(pb::AgentMessage {
                    body: Some(Body::Batch(b)),
                })) => b,
                Ok(Some(_)) => {
                    reject("unexpected_message");
                    let _ = out
                        .send(Err(
                            ErrorCode::InvalidArgument.status("only batches may follow hello")
                        ))
                        .await;
                    return;
                }
                Ok(None) => return,
                Err(status) => {
                    // A message over the size limit or undecodable: tell the agent why
                    // (if it is still there); a closed transport just ends the stream.
                    if let Some(why) = unreadable(&status) {
                        reject("undecodable");
                        tracing::info!(code = ?why.code(), %status, "message refused");
                        let _ = out.send(Err(why)).await;
                    } else {
                        tracing::info!(%status, "stream ended by the agent or the transport");
                    }
                    return;
                }
            };
            let span = tracing::info_span!("batch", epoch = b.epoch, seq = b.seq);
            let started = Instant::now();
            let reply = async {
                let batch = match validate::batch(&b, &self.limits) {
                    Ok(batch) => batch,
                    Err(e) => {
                        reject("invalid_batch");
                        tracing::info!(code = ?ErrorCode::InvalidArgument, error = %e, "batch rejected");
                        return Err(ErrorCode::InvalidArgument
                            .status(format!("batch {}:{}: {e}", b.epoch, b.seq)));
                    }
                };
                match self.store.apply(host_id, instance, &batch).await {
                    Ok(Applied::Committed) => {
                        metrics::counter!("finwait_ingest_batches_total", "result" => "committed")
                            .increment(1);
                        metrics::counter!("finwait_ingest_rows_total")
                            .increment(batch.socket_count() as u64);
                        Ok(pb::collector_message::Body::Ack(pb::Ack {
                            epoch: b.epoch,
                            seq: b.seq,
                            duplicate: false,
                        }))
                    }
                    Ok(Applied::Duplicate) => {
                        metrics::counter!("finwait_ingest_batches_total", "result" => "duplicate")
                            .increment(1);
                        Ok(pb::collector_message::Body::Ack(pb::Ack {
                            epoch: b.epoch,
                            seq: b.seq,
                            duplicate: true,
                        }))
                    }
                    Ok(Applied::Resync(reason)) => {
                        metrics::counter!("finwait_ingest_batches_total", "result" => "resync")
                            .increment(1);
                        tracing::info!(%reason, "resync requested");
                        Ok(pb::collector_message::Body::Resync(pb::Resync {
                            epoch: b.epoch,
                            seq: b.seq,
                            reason,
                        }))
                    }
                    Err(e) => {
                        reject("storage");
                        tracing::warn!(code = ?ErrorCode::from(&e), error = %e, "batch not stored");
                        Err(store_status(&e))
                    }
                }
            }
            .instrument(span)
            .await;
            metrics::histogram!("finwait_ingest_ack_seconds")
                .record(started.elapsed().as_secs_f64());
            match reply {
                Ok(body) => {
                    if out.send(msg(body)).await.is_err() {
                        return;
                    }
                }
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.authorize(&request)?;
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            reject("too_many_streams");
            ErrorCode::ResourceExhausted.status("too many agent streams; retry later")
        })?;
        let (tx, rx) = mpsc::channel(8);
        let this = self.clone();
        self.tracker.spawn(async move {
            this.serve(request.into_inner(), tx).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
/// What to tell an agent whose message could not be read, or `None` when the
/// transport itself closed (nobody to tell). A message that does not decode (invalid
/// UTF-8 in a string, a malformed field: tonic reports INTERNAL) is the agent's
/// mistake, INVALID_ARGUMENT naming why; one over the size limit stays OUT_OF_RANGE.
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

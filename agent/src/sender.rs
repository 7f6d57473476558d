//! `finwait-agent run`, the sender side: one ingest stream at a time to the collector,
//! reconnecting with jittered exponential backoff, resending what was not
//! acknowledged, and dropping batches from the outbox only on the collector's Ack.
//!
//! On stop, a live stream is drained rather than dropped: what is queued is sent and
//! the sender waits for the acknowledgements; [`crate::app::App`] bounds that wait with
//! its grace period. Without a live stream there is nothing to drain.
//!
//! Batches an earlier run left in the spool go first, one stream per epoch, oldest
//! first, each under the epoch it was sent with (so the collector's ledger recognises
//! what it already committed); when an epoch is fully acknowledged its stream ends and
//! the next begins at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::Token;
use crate::run::Shared;

/// How long the collector has to answer hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Batches sent ahead of their acknowledgements: a long backlog (a spool after an
/// outage) is sent as acks come back, so unread acks never fill the stream's window
/// while the sender is still sending.
const MAX_IN_FLIGHT: usize = 128;
/// Largest message accepted from the collector.
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// Everything a stream needs, fixed for the agent's life.
pub(crate) struct Link {
    /// Where and how to connect (TLS, timeouts, keepalive), with each collector's URL
    /// for logs; no connection yet. Never empty (the configuration checks it). After a
    /// stream ends in trouble the next one goes to the next collector of the list, so
    /// the agents of a collector that died move to another on their first reconnect.
    pub(crate) endpoints: Vec<(String, Endpoint)>,
    /// Sent as `authorization` on every stream.
    pub(crate) token: Option<Token>,
    /// Who this host is, sent in hello.
    pub(crate) identity: pb::HostIdentity,
    /// This process's instance id, sent in hello.
    pub(crate) instance_id: String,
}

/// Why a stream ended.
enum StreamEnd {
    /// Stop requested, and the stream drained (or there was none).
    Stopped,
    /// Transport or collector trouble: retry.
    Retry(String),
    /// An earlier run's epoch is done: stream the next one now.
    NextEpoch,
    /// The collector is shedding load: retry after (about) the delay it gave.
    Pushback(String, Duration),
}

/// The sender task: streams until `stop`, then drains the live stream, if any.
pub(crate) async fn send_loop(
    link: Link,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut backoff = Backoff::new();
    let mut turn = 0usize;
    loop {
        let Some((url, endpoint)) = link.endpoints.get(turn % link.endpoints.len().max(1)) else {
            return Err("no collector to connect to".into());
        };
        let span = tracing::info_span!("stream", collector = %url);
        let end = stream_once(&link, endpoint, &shared, &stop, &mut backoff)
            .instrument(span)
            .await;
        crate::metrics::AGENT.connected.store(0, Ordering::Relaxed);
        match end {
            StreamEnd::Stopped => return Ok(()),
            _ if stop.is_cancelled() => return Ok(()),
            StreamEnd::NextEpoch => {}
            end @ (StreamEnd::Retry(_) | StreamEnd::Pushback(..)) => {
                // The next stream goes to the next collector of the list (a spooled
                // epoch's end is no reason to leave this one; a shedding one is).
                turn = turn.wrapping_add(1);
                crate::metrics::AGENT
                    .reconnects
                    .fetch_add(1, Ordering::Relaxed);
                let (why, wait) = match end {
                    StreamEnd::Pushback(why, told) => {
                        let wait = backoff.after_pushback(told);
                        tracing::info!(
                            pushback_ms = told.as_millis() as u64,
                            "the collector asked us to retry later; waiting about that long"
                        );
                        if let Some(p) = &shared.probe {
                            p.ended(Some((told, wait)));
                        }
                        (why, wait)
                    }
                    StreamEnd::Retry(why) => {
                        if let Some(p) = &shared.probe {
                            p.ended(None);
                        }
                        (why, backoff.step())
                    }
                    StreamEnd::Stopped | StreamEnd::NextEpoch => continue,
                };
                tracing::warn!(reason = %why, retry_in_ms = wait.as_millis() as u64, "stream ended");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn stream_once(
    link: &Link,
    endpoint: &Endpoint,
    shared: &Shared,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> StreamEnd {
    let channel = tokio::select! {
        _ = stop.cancelled() => return StreamEnd::Stopped,
        c = endpoint.connect() => match c {
            Ok(c) => c,
            Err(e) => return StreamEnd::Retry(format!("cannot connect: {e}")),
        },
    };
    let token = link.token.clone();
    let mut client = pb::ingest_client::IngestClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            if let Some(t) = &token {
                req.metadata_mut()
                    .insert("authorization", t.header().clone());
            }
            Ok(req)
        },
    )
    .max_decoding_message_size(MAX_DECODING_BYTES)
    .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    // An earlier run's epoch first, while the spool holds batches of one.
    let mut epoch = shared.outbox().stream_epoch();
    let hello = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            host: Some(link.identity.clone()),
            epoch,
            instance_id: link.instance_id.clone(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return StreamEnd::Retry("stream closed before hello".into());
    }
    let opened = tokio::select! {
        _ = stop.cancelled() => return StreamEnd::Stopped,
        r = client.stream(ReceiverStream::new(rx)) => r,
    };
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(s) => return refused(s),
    };
    let welcome = tokio::select! {
        _ = stop.cancelled() => return StreamEnd::Stopped,
        m = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()) => m,
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
    if let Some(p) = &shared.probe {
        p.welcomed();
    }
    crate::metrics::AGENT.connected.store(1, Ordering::Relaxed);
    tracing::info!(
        host_id = welcome.host_id,
        last_epoch = welcome.last_epoch,
        last_seq = welcome.last_seq,
        "connected"
    );
    {
        let mut o = shared.outbox();
        // Our epoch is behind what the collector stored for this host (the clock was
        // stepped back, or someone claimed the host with a later one): the collector
        // gave us the next one. 0 comes from collectors that predate the field.
        if welcome.epoch != 0 && welcome.epoch != epoch && epoch != o.epoch {
            // The host committed a later epoch since that run: its batches can no
            // longer be stored under theirs.
            let dropped = o.drop_epoch(epoch);
            tracing::warn!(
                epoch,
                dropped,
                "the collector has moved past an earlier run's epoch; dropped its spooled batches"
            );
            return StreamEnd::NextEpoch;
        }
        if welcome.epoch != 0 && welcome.epoch != epoch {
            tracing::warn!(
                agent_epoch = epoch,
                epoch = welcome.epoch,
                "our epoch is behind the host's last committed one; using the collector's"
            );
            o.rebase(welcome.epoch);
            epoch = welcome.epoch;
        }
        o.new_stream(welcome.last_epoch, welcome.last_seq);
    }
    shared.sample_now.notify_one();
    // Set once stop is requested: send what is queued, wait for the acks, then end.
    let mut draining = false;
    // Batches sent and not yet acknowledged, with when they were sent (probe only).
    let mut in_flight: VecDeque<(u64, Instant, u64)> = VecDeque::new();
    loop {
        while shared.outbox().in_flight(epoch) < MAX_IN_FLIGHT {
            let Some((seq, parts)) = shared.next_unsent(epoch).await else {
                break;
            };
            if shared.probe.is_some() {
                let rows = parts.iter().map(records).sum();
                in_flight.push_back((seq, Instant::now(), rows));
            }
            for b in parts {
                let m = pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Batch(b)),
                };
                if tx.send(m).await.is_err() {
                    return StreamEnd::Retry("stream closed".into());
                }
            }
            shared.outbox().sent_upto = seq;
        }
        if shared.outbox().epoch_done(epoch) {
            tracing::info!(epoch, "an earlier run's spooled batches are delivered");
            return StreamEnd::NextEpoch;
        }
        // Done once the sampler has stopped (a cycle running at stop is sent too)
        // and everything queued is acknowledged.
        if draining && shared.sampling_is_over() && shared.outbox().len_bytes().0 == 0 {
            tracing::info!("every batch acknowledged");
            return StreamEnd::Stopped;
        }
        tokio::select! {
            _ = stop.cancelled(), if !draining => {
                draining = true;
                let (n, _) = shared.outbox().len_bytes();
                tracing::info!(unacknowledged = n, "stopping: waiting for the collector's acknowledgements");
            }
            _ = shared.queued.notified() => {}
            m = inbound.message() => match m {
                Ok(Some(pb::CollectorMessage { body: Some(Body::Ack(a)) })) => {
                    if a.epoch == epoch {
                        shared.outbox().ack_in(epoch, a.seq);
                        if let Some(p) = &shared.probe {
                            while let Some((_, sent, rows)) = in_flight.front().copied().filter(|(s, ..)| *s <= a.seq) {
                                in_flight.pop_front();
                                p.acked(sent.elapsed(), rows);
                            }
                        }
                    }
                }
                Ok(Some(pb::CollectorMessage { body: Some(Body::Resync(r)) })) => {
                    tracing::info!(seq = r.seq, reason = %r.reason, "collector asked for a full table");
                    // While draining, the refused batches are simply dropped: the next
                    // agent starts a new epoch with a full table anyway.
                    if shared.outbox().resync_in(epoch, r.seq) && !draining {
                        shared.sample_now.notify_one();
                    }
                }
                Ok(Some(_)) => return StreamEnd::Retry("unexpected message from the collector".into()),
                Ok(None) => return StreamEnd::Retry("collector closed the stream".into()),
                // Invalid or too large, or contradicting what is committed (another
                // epoch, other content under a committed seq): resending it would fail
                // forever.
                Err(s) if matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::FailedPrecondition) => {
                    let n = shared.outbox().drop_unacked_sent();
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
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            tracing::error!(status = %s.message(), "the collector refused our token (agents need one with the ingest role)")
        }
        tonic::Code::Unavailable => {
            if let Some(told) = pushback(&s) {
                return StreamEnd::Pushback(format!("{}: {}", s.code(), s.message()), told);
            }
        }
        _ => {}
    }
    StreamEnd::Retry(format!("{}: {}", s.code(), s.message()))
}

/// The retry delay the collector put on a status (`grpc-retry-pushback-ms`, gRPC's
/// retry pushback: milliseconds; anything unparsable is ignored).
fn pushback(s: &tonic::Status) -> Option<Duration> {
    s.metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Socket records in one batch message (for the probe).
fn records(b: &pb::Batch) -> u64 {
    match &b.payload {
        Some(pb::batch::Payload::Full(f)) => f.sockets.len() as u64,
        Some(pb::batch::Payload::Delta(d)) => {
            (d.added.len() + d.removed.len() + d.changed.len()) as u64
        }
        None => 0,
    }
}

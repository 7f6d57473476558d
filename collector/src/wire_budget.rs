//! The ingest wire budget: raw gRPC bytes are reserved before tonic buffers them.
//!
//! tonic assembles a whole message (up to `--max-message-bytes`) in memory before the
//! ingest stream sees it and reserves its decoding share of the memory budget
//! ([`crate::budget`]). Without a bound there, N streams each sending one large
//! message would make the collector hold N × the message limit. [`MeteredBody`] sits
//! between HTTP/2 and tonic: it reads each message's 5-byte gRPC header as the bytes
//! pass and, before letting the frame that completes a header through, reserves the
//! declared length from a budget shared by every stream (`--ingest-wire-bytes`). The
//! reservation is held until the stream has the message's decoding share
//! ([`WireLedger::accounted`]). While a stream waits, its body is not read, so HTTP/2
//! flow control stops its agent at the window (the header itself passes, so the
//! message before it is never held back with it). A reservation not granted within the
//! wait (`--ingest-batch-wait-ms`) ends the stream with UNAVAILABLE and a retry delay,
//! like any other shed write: that expiry is also what undoes the one cycle possible,
//! a chunked table holding its write slot while waiting for wire bytes that the
//! streams waiting for write slots hold.
//!
//! A message longer than the message limit is not reserved: tonic refuses it from its
//! header with OUT_OF_RANGE, before buffering it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use prost::bytes::Bytes;
use tonic::Status;

use crate::budget::{Budget, Reserved};

/// The gRPC length-prefix: a compressed flag and a big-endian u32 length.
const HEADER: usize = 5;

/// How a stream's raw messages are bounded (shared by every stream).
#[derive(Clone)]
pub struct WireGate {
    /// The bytes every stream's buffered messages may hold together.
    pub budget: Budget,
    /// How long a message may wait for its bytes before its stream is shed.
    pub wait: Duration,
    /// Messages longer than this are left to tonic, which refuses them unbuffered.
    pub max_message: usize,
    /// The UNAVAILABLE (with a retry delay) a stream gets when its wait expires.
    pub shed: Arc<dyn Fn() -> Status + Send + Sync>,
}

impl std::fmt::Debug for WireGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGate")
            .field("available", &self.budget.available())
            .field("wait", &self.wait)
            .field("max_message", &self.max_message)
            .finish()
    }
}

/// One stream's reservations, one entry per message in arrival order (`None` for a
/// message that reserved nothing), shared by its body and its ingest task.
#[derive(Debug, Default)]
pub struct WireLedger(Mutex<VecDeque<Option<Reserved>>>);

impl WireLedger {
    /// The oldest message is now accounted for elsewhere (its decoding share is
    /// reserved, or it was read whole and refused): its wire bytes are released.
    pub fn accounted(&self) {
        if let Ok(mut q) = self.0.lock() {
            q.pop_front();
        }
    }

    fn push(&self, r: Option<Reserved>) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(r);
        }
    }
}

type Reserving = Pin<Box<dyn Future<Output = Result<Reserved, Status>> + Send>>;

/// A request body that reserves each gRPC message's bytes before passing them on.
///
/// A data frame is cut right after each header that needs a reservation: what comes
/// before (the previous message's tail and the header) passes at once, the rest waits
/// for the reservation. Holding the whole frame instead would hold the previous
/// message's tail too, and with it the release of that message's own reservation.
pub struct MeteredBody<B> {
    inner: B,
    gate: WireGate,
    ledger: Arc<WireLedger>,
    /// The header being read: its bytes so far.
    header: [u8; HEADER],
    have: usize,
    /// Payload bytes of the current message still to pass.
    remaining: usize,
    /// The part of a data frame not yet scanned (after a cut).
    rest: Option<Bytes>,
    reserving: Option<Reserving>,
}

impl<B> MeteredBody<B> {
    /// Meters `inner`'s messages through `gate`, entering them in `ledger`.
    pub fn new(inner: B, gate: WireGate, ledger: Arc<WireLedger>) -> MeteredBody<B> {
        MeteredBody {
            inner,
            gate,
            ledger,
            header: [0; HEADER],
            have: 0,
            remaining: 0,
            rest: None,
            reserving: None,
        }
    }

    /// Walks `data` through the framing up to the first header that completes and
    /// needs a reservation: returns where that header ends and the length to reserve.
    /// Headers that need none (empty or over-limit messages) are entered as they pass.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, usize)> {
        let mut at = 0;
        while at < data.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() - at);
                self.remaining -= n;
                at += n;
                continue;
            }
            let n = (HEADER - self.have).min(data.len() - at);
            self.header[self.have..self.have + n].copy_from_slice(&data[at..at + n]);
            self.have += n;
            at += n;
            if self.have == HEADER {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                self.remaining = len;
                if len > 0 && len <= self.gate.max_message {
                    return Some((at, len));
                }
                self.ledger.push(None);
            }
        }
        None
    }

    fn reserve(&self, len: usize) -> Reserving {
        let (budget, wait, shed) = (
            self.gate.budget.clone(),
            self.gate.wait,
            Arc::clone(&self.gate.shed),
        );
        Box::pin(async move {
            match tokio::time::timeout(wait, budget.reserve(len)).await {
                Ok(Ok(r)) => Ok(r),
                // Waited too long (or, impossibly, more than the whole budget: the
                // configuration check keeps it above the message limit).
                _ => Err(shed()),
            }
        })
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(fut) = this.reserving.as_mut() {
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(r)) => {
                        this.reserving = None;
                        this.ledger.push(Some(r));
                    }
                    Poll::Ready(Err(status)) => {
                        this.reserving = None;
                        this.rest = None;
                        return Poll::Ready(Some(Err(status)));
                    }
                }
            }
            if let Some(mut data) = this.rest.take() {
                match this.scan(&data) {
                    None => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some((cut, len)) => {
                        let head = data.split_to(cut);
                        if !data.is_empty() {
                            this.rest = Some(data);
                        }
                        this.reserving = Some(this.reserve(len));
                        // The header passes now; its message's bytes after the reservation.
                        return Poll::Ready(Some(Ok(Frame::data(head))));
                    }
                }
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = Some(data),
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.reserving.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn gate(bytes: usize, wait_ms: u64) -> WireGate {
        WireGate {
            budget: Budget::new(bytes),
            wait: Duration::from_millis(wait_ms),
            max_message: 64 * 1024,
            shed: Arc::new(|| Status::unavailable("wire budget spent")),
        }
    }

    /// A body of `frames`, as HTTP/2 would deliver them.
    fn body(frames: Vec<Vec<u8>>) -> impl Body<Data = Bytes, Error = Status> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Status>> = frames
            .into_iter()
            .map(|f| Ok(Frame::data(Bytes::from(f))))
            .collect();
        http_body_util::StreamBody::new(tokio_stream::iter(frames))
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[tokio::test]
    async fn each_message_is_reserved_in_order_across_split_headers_and_released_when_accounted() {
        let g = gate(64 * 1024, 1_000);
        let ledger = Arc::new(WireLedger::default());
        // Two messages of 10 KiB and an empty one, cut so a header spans two frames.
        let mut all = message(10 * 1024);
        all.extend(message(10 * 1024));
        all.extend(message(0));
        let cut = 10 * 1024 + 5 + 3;
        let frames = vec![all[..cut].to_vec(), all[cut..].to_vec()];
        let got = MeteredBody::new(body(frames), g.clone(), Arc::clone(&ledger))
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(got.as_ref(), all.as_slice(), "the bytes pass unchanged");
        assert_eq!(
            ledger.0.lock().expect("lock").len(),
            3,
            "one entry per message"
        );
        assert_eq!(g.budget.available(), 64 * 1024 - 20 * 1024);
        ledger.accounted();
        ledger.accounted();
        ledger.accounted();
        assert_eq!(g.budget.available(), 64 * 1024, "all released");
    }

    #[tokio::test]
    async fn the_next_message_waiting_for_bytes_never_holds_back_the_tail_of_the_one_before() {
        // Room for one 10 KiB message at a time, both in one frame: the first message's
        // tail must pass while the second waits, or the first is never accounted and
        // both wait until the stream is shed.
        let g = gate(16 * 1024, 2_000);
        let ledger = Arc::new(WireLedger::default());
        let mut all = message(10 * 1024);
        all.extend(message(10 * 1024));
        let mut b = MeteredBody::new(body(vec![all.clone()]), g, Arc::clone(&ledger));
        let (mut got, mut accounted) = (Vec::new(), false);
        while let Some(frame) = b.frame().await {
            let data = frame.expect("no shedding").into_data().expect("data");
            got.extend_from_slice(&data);
            // What the stream does: the first message whole, its share reserved.
            if !accounted && got.len() >= 5 + 10 * 1024 {
                ledger.accounted();
                accounted = true;
            }
        }
        assert_eq!(got, all);
    }

    #[tokio::test]
    async fn a_message_that_cannot_get_its_bytes_in_time_ends_the_stream_shed() {
        let g = gate(16 * 1024, 100);
        let hold = g.budget.reserve(10 * 1024).await.expect("fits");
        let ledger = Arc::new(WireLedger::default());
        let mut b = MeteredBody::new(body(vec![message(8 * 1024)]), g, ledger);
        let header = b
            .frame()
            .await
            .expect("a frame")
            .expect("the header passes");
        assert_eq!(header.into_data().expect("data").len(), 5);
        let status = b.frame().await.expect("a frame").expect_err("shed");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        drop(hold);
    }

    #[tokio::test]
    async fn a_message_over_the_limit_reserves_nothing_and_is_left_to_tonic() {
        let g = gate(16 * 1024, 100);
        let ledger = Arc::new(WireLedger::default());
        let mut head = vec![0];
        head.extend_from_slice(&(1u32 << 20).to_be_bytes());
        let got = MeteredBody::new(body(vec![head.clone()]), g.clone(), Arc::clone(&ledger))
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(got.as_ref(), head.as_slice());
        assert_eq!(g.budget.available(), 16 * 1024);
        assert_eq!(ledger.0.lock().expect("lock").len(), 1);
    }
}

//! The listener's guard against connections that cost a descriptor and do nothing.
//!
//! One accept task owns the listener and hands connections to the server through a
//! bounded channel. It holds at most `max_connections` open: a connection over the cap
//! is closed as soon as it is accepted. When accept fails (EMFILE, ENFILE, ENOBUFS) it
//! backs off, 10 ms doubling to 1 s, instead of retrying at once and burning a core.
//!
//! Each connection ([`Conn`]) carries two deadlines, checked whenever the server reads
//! from it: the first byte must arrive within the handshake time (TLS handshakes get
//! the same bound from `crate::tls`), and once it has, the connection may stay open with no
//! request in flight for at most the idle time. Requests are counted by
//! [`track_requests`], a middleware around every route (gRPC and HTTP alike) that holds
//! a guard until the response body is finished, so an agent's ingest stream, one long
//! request, never counts as idle. HTTP/2 keepalive pings (configured on the server)
//! close connections whose peer has gone silent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TlsConnectInfo};

/// Shortest and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Descriptors kept free of connections: database pools, the embedded server's log,
/// files the collector opens.
pub const FD_RESERVE: u64 = 128;

/// Limits of every accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to the first byte.
    pub handshake: Duration,
    /// Time with no request in flight.
    pub idle: Duration,
}

/// Counters of connections refused or closed by a limit, for logs and tests.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Closed at accept: over the cap.
    pub over_cap: AtomicU64,
    /// Closed before their first byte.
    pub handshake_timeouts: AtomicU64,
    /// Closed for having no request in flight too long.
    pub idle_timeouts: AtomicU64,
    /// Failed accepts (descriptor or buffer exhaustion).
    pub accept_errors: AtomicU64,
}

/// The connection cap that fits under the process's open-file limit, leaving
/// [`FD_RESERVE`] plus the database pools free; `wanted` when it fits.
pub fn fitting_cap(wanted: usize, db_connections: u64) -> usize {
    let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return wanted;
    };
    let room = soft.saturating_sub(FD_RESERVE + db_connections).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Starts the accept task on `listener`; returns the stream of admitted connections
/// for `serve_with_incoming_shutdown`. The task ends when `stop` is cancelled or the
/// server stops taking connections.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    let n = stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("finwait_accept_errors_total").increment(1);
                    if n.is_power_of_two() {
                        tracing::warn!(error = %e, failures = n + 1, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let n = stats.over_cap.fetch_add(1, Ordering::Relaxed);
                closed("over_cap");
                if n.is_power_of_two() {
                    tracing::warn!(
                        peer = %peer,
                        cap = limits.max_connections,
                        refused = n + 1,
                        "connection cap reached; closing new connections"
                    );
                }
                // Closed on drop: a reset, so the peer learns at once.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn::new(stream, permit, limits, stats.clone());
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
        tracing::debug!("accept loop stopped");
    });
    ReceiverStream::new(rx)
}

/// Counts a connection closed by a limit, by reason (a fixed set).
fn closed(reason: &'static str) {
    metrics::counter!("finwait_connections_closed_total", "reason" => reason).increment(1);
}

/// Requests in flight on one connection, and since when none has been.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One request in flight; the connection is idle again when the last one drops.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
        }
    }
}

/// What the server learns about a connection (inserted into every request's
/// extensions by tonic): its addresses and its request counter.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Our address.
    pub local_addr: Option<SocketAddr>,
    activity: Arc<Activity>,
}

/// An admitted connection: the socket, its place under the cap, its deadlines.
pub struct Conn {
    io: TcpStream,
    /// Returned to the cap when the connection closes.
    _permit: OwnedSemaphorePermit,
    info: ConnInfo,
    /// The next deadline: first byte, then idle.
    deadline: Pin<Box<Sleep>>,
    got_first_byte: bool,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
}

impl Conn {
    fn new(
        io: TcpStream,
        permit: OwnedSemaphorePermit,
        limits: ConnLimits,
        stats: Arc<ConnStats>,
    ) -> Conn {
        let info = ConnInfo {
            remote_addr: io.peer_addr().ok(),
            local_addr: io.local_addr().ok(),
            activity: Arc::new(Activity::new()),
        };
        Conn {
            io,
            _permit: permit,
            info,
            deadline: Box::pin(tokio::time::sleep(limits.handshake)),
            got_first_byte: false,
            limits,
            stats,
        }
    }

    /// Pending while the current deadline has not passed; an error when it has and the
    /// connection must close.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Each pass either returns or moves the deadline into the future.
        for _ in 0..4 {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if !self.got_first_byte {
                self.stats
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                closed("handshake");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no first byte within the handshake time",
                )));
            }
            let now = Instant::now();
            let next = match self.info.activity.idle_since() {
                None => now + self.limits.idle,
                Some(since) if since + self.limits.idle <= now => {
                    self.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    closed("idle");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past the idle time",
                    )));
                }
                Some(since) => since + self.limits.idle,
            };
            self.deadline.as_mut().reset(next);
        }
        Poll::Pending
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.got_first_byte && buf.filled().len() > before {
                    this.got_first_byte = true;
                    let next = Instant::now() + this.limits.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Middleware around every route: the request counts as in flight on its connection
/// until its response body has been sent (or dropped).
pub async fn track_requests(req: Request, next: Next) -> Response {
    let ext = req.extensions();
    let activity = ext
        .get::<ConnInfo>()
        .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
        .map(|i| i.activity.clone());
    let Some(activity) = activity else {
        return next.run(req).await;
    };
    let guard = activity.begin();
    let response = next.run(req).await;
    response.map(|body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            let _in_flight = &guard;
            frame
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_open_file_limit_with_room_for_the_database() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .expect("a finite open-file limit");
        let cap = fitting_cap(usize::MAX, 24);
        assert!(
            cap as u64 + FD_RESERVE + 24 <= soft.max(FD_RESERVE + 25),
            "{cap} vs {soft}"
        );
        assert_eq!(fitting_cap(10, 24), 10, "a cap that fits is kept");
    }
}

//! Load shedding for ingest: a bounded number of database writes (hellos and batch
//! commits) run at once; a write that cannot start within a short wait, or that
//! arrives while the database is down, is refused with UNAVAILABLE and a retry delay
//! instead of queueing until a pool timeout fails it.
//!
//! The delay is chosen here, not by the agent, so a herd spreads itself out: it is
//! about the time the collector needs to get through what it is refusing (writes
//! refused in the last second over writes admitted in it), plus the minimum scaled by
//! the writes waiting per slot, and jittered. It travels twice on the status: as gRPC retry pushback
//! (`grpc-retry-pushback-ms`, milliseconds in the trailers, what finwait agents read)
//! and as a `google.rpc.RetryInfo` in the status details (`grpc-status-details-bin`)
//! for other gRPC clients. Each refusal counts in `finwait_ingest_shed_total{reason}`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ErrorCode;

/// The trailer that carries the server's retry delay (gRPC's retry design, A6).
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";
/// The type URL of `google.rpc.RetryInfo` in status details.
const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// How shedding is sized (flags `--ingest-writes`, `--ingest-write-wait-ms`,
/// `--ingest-retry-min-ms`, `--ingest-retry-max-ms`).
#[derive(Debug, Clone, Copy)]
pub struct ShedConfig {
    /// Database writes (hellos, batch transactions) in progress at once.
    pub writes: usize,
    /// How long a hello (a new stream) may wait for its turn before it is shed.
    pub wait: Duration,
    /// How long a batch on an established stream may wait: longer, because shedding it
    /// ends the stream and its reconnection costs a hello and a full table.
    pub batch_wait: Duration,
    /// The retry delay at no pressure (before jitter).
    pub retry_min: Duration,
    /// The longest retry delay handed out.
    pub retry_max: Duration,
}

/// Why a write was refused, the `reason` label of `finwait_ingest_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Every write slot stayed busy for the whole wait.
    Saturated,
    /// The supervisor knows the database is unreachable.
    DatabaseDown,
    /// A message waited the whole batch wait for its wire bytes (`--ingest-wire-bytes`).
    Memory,
}

impl ShedReason {
    /// Every reason (the metric's series are exported from start, at 0).
    pub const ALL: [ShedReason; 3] = [
        ShedReason::Saturated,
        ShedReason::DatabaseDown,
        ShedReason::Memory,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            ShedReason::Saturated => "saturated",
            ShedReason::DatabaseDown => "database_down",
            ShedReason::Memory => "memory",
        }
    }
}

/// The write gate every ingest stream shares.
#[derive(Debug, Clone)]
pub struct Shedder {
    permits: Arc<Semaphore>,
    config: ShedConfig,
    /// Writes waiting for a permit now.
    waiting: Arc<AtomicUsize>,
    /// Admissions and refusals in the current and the previous second.
    window: Arc<Mutex<Window>>,
    born: Instant,
    /// Jitter state (splitmix64 over a counter).
    rng: Arc<AtomicU64>,
}

/// Counts per one-second window (seconds since the shedder was made).
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    second: u64,
    admitted: u32,
    refused: u32,
    prev_admitted: u32,
    prev_refused: u32,
}

impl Window {
    /// Moves to `second`, keeping the last complete second.
    fn at(&mut self, second: u64) -> &mut Window {
        if second != self.second {
            let adjacent = second == self.second + 1;
            self.prev_admitted = if adjacent { self.admitted } else { 0 };
            self.prev_refused = if adjacent { self.refused } else { 0 };
            self.admitted = 0;
            self.refused = 0;
            self.second = second;
        }
        self
    }

    /// (admitted, refused) over about the last second.
    fn rates(&self) -> (u32, u32) {
        (
            self.admitted.max(self.prev_admitted),
            self.refused.max(self.prev_refused),
        )
    }
}

/// A write slot, released when dropped.
#[derive(Debug)]
pub struct WriteSlot {
    _permit: OwnedSemaphorePermit,
}

impl Shedder {
    /// A gate of `config.writes` slots (at least one).
    pub fn new(config: ShedConfig) -> Shedder {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Shedder {
            permits: Arc::new(Semaphore::new(config.writes.max(1))),
            config: ShedConfig {
                writes: config.writes.max(1),
                ..config
            },
            waiting: Arc::new(AtomicUsize::new(0)),
            window: Arc::new(Mutex::new(Window::default())),
            born: Instant::now(),
            rng: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// A write slot for a hello within the wait, or UNAVAILABLE with a retry delay.
    pub async fn admit_hello(&self) -> Result<WriteSlot, tonic::Status> {
        self.admit(self.config.wait).await
    }

    /// A write slot for a batch within the (longer) batch wait, or UNAVAILABLE.
    pub async fn admit_batch(&self) -> Result<WriteSlot, tonic::Status> {
        self.admit(self.config.batch_wait).await
    }

    /// A write slot within `wait`, or UNAVAILABLE with a retry delay.
    async fn admit(&self, wait: Duration) -> Result<WriteSlot, tonic::Status> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            self.count(true);
            return Ok(WriteSlot { _permit: p });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => {
                self.count(true);
                Ok(WriteSlot { _permit: p })
            }
            // Timed out (or the semaphore closed, which it never is).
            _ => Err(self.refuse(
                ShedReason::Saturated,
                "the database is saturated; retry after the delay given",
            )),
        }
    }

    /// UNAVAILABLE for `reason`, carrying a retry delay; counted.
    pub fn refuse(&self, reason: ShedReason, message: &str) -> tonic::Status {
        let (admitted, refused) = self.count(false);
        let delay = self.delay(admitted, refused);
        metrics::counter!("finwait_ingest_shed_total", "reason" => reason.label()).increment(1);
        tracing::debug!(
            reason = reason.label(),
            retry_ms = delay.as_millis() as u64,
            "ingest write shed"
        );
        unavailable(message, delay)
    }

    /// How long a batch on an established stream may wait (for a write slot, or for
    /// its wire bytes).
    pub fn batch_wait(&self) -> Duration {
        self.config.batch_wait
    }

    /// Writes waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Counts an admission or a refusal; returns (admitted, refused) over about the
    /// last second.
    fn count(&self, admitted: bool) -> (u32, u32) {
        let second = self.born.elapsed().as_secs();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let w = w.at(second);
        if admitted {
            w.admitted = w.admitted.saturating_add(1);
        } else {
            w.refused = w.refused.saturating_add(1);
        }
        w.rates()
    }

    /// The delay for a refusal: `retry_min × (1 + waiting / writes)` plus the seconds
    /// the collector needs to admit what it refused in the last second at the rate it
    /// admitted in it (`refused / max(admitted, writes)`); capped at `retry_max`, then
    /// scaled by a uniform factor in [0.5, 1.5) and capped again. A herd is thus told
    /// to come back over a window as wide as the time it takes to serve it.
    fn delay(&self, admitted: u32, refused: u32) -> Duration {
        let writes = self.config.writes as f64;
        let queue = self
            .config
            .retry_min
            .mul_f64(1.0 + self.waiting() as f64 / writes);
        let drain = Duration::from_secs_f64(f64::from(refused) / f64::from(admitted).max(writes));
        let base = (queue + drain).min(self.config.retry_max);
        base.mul_f64(0.5 + self.unit()).min(self.config.retry_max)
    }

    /// Uniform in [0, 1).
    fn unit(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `google.rpc.Status`, only as far as details need it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// UNAVAILABLE with `delay` as retry pushback and as `RetryInfo`.
pub fn unavailable(message: &str, delay: Duration) -> tonic::Status {
    let code = ErrorCode::Unavailable.grpc();
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.to_owned(),
        details: vec![Any {
            type_url: RETRY_INFO_URL.to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    let mut status = tonic::Status::with_details(code, message, details.encode_to_vec().into());
    let ms = delay.as_millis().to_string();
    if let Ok(v) = ms.parse() {
        status.metadata_mut().insert(PUSHBACK_KEY, v);
    }
    status
}

/// The retry delay a status carries: the pushback trailer, else a `RetryInfo` in its
/// details. For clients and tests; the agent reads the trailer the same way.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    if let Some(ms) = status
        .metadata()
        .get(PUSHBACK_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    let details = RpcStatus::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_URL)
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|r| r.retry_delay)
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shedder(writes: usize) -> Shedder {
        Shedder::new(ShedConfig {
            writes,
            wait: Duration::from_millis(20),
            batch_wait: Duration::from_millis(20),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(20),
        })
    }

    #[test]
    fn the_delay_travels_as_pushback_and_as_retry_info() {
        let s = unavailable("busy", Duration::from_millis(1500));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(retry_delay(&s), Some(Duration::from_millis(1500)));
        let mut without_trailer = tonic::Status::with_details(
            s.code(),
            s.message(),
            prost::bytes::Bytes::copy_from_slice(s.details()),
        );
        without_trailer.metadata_mut().remove(PUSHBACK_KEY);
        assert_eq!(
            retry_delay(&without_trailer),
            Some(Duration::from_millis(1500)),
            "RetryInfo alone is enough"
        );
    }

    #[test]
    fn delays_grow_with_pressure_and_stay_within_bounds() {
        let s = shedder(4);
        let calm: Vec<Duration> = (0..200).map(|_| s.delay(100, 1)).collect();
        let busy: Vec<Duration> = (0..200).map(|_| s.delay(4, 40)).collect();
        let mean =
            |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
        assert!(
            mean(&busy) > 3.0 * mean(&calm),
            "{} vs {}",
            mean(&busy),
            mean(&calm)
        );
        for d in calm.iter().chain(&busy) {
            assert!(
                *d >= Duration::from_millis(500) && *d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
        let distinct: std::collections::BTreeSet<u128> =
            busy.iter().map(Duration::as_millis).collect();
        assert!(
            distinct.len() > 50,
            "jittered: {} distinct delays",
            distinct.len()
        );
    }

    #[tokio::test]
    async fn a_write_waits_for_a_slot_then_is_shed_with_a_delay() {
        let s = shedder(1);
        let held = s.admit_hello().await.expect("a free slot");
        let refused = s.admit_hello().await.expect_err("the only slot is held");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(retry_delay(&refused).is_some());
        drop(held);
        s.admit_hello().await.expect("free again");
    }
}

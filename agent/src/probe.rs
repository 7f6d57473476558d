//! What the sender saw, for whoever runs agents in-process and wants to measure them
//! ([`crate::fleet`], tests): connections, acknowledgements with their latency (batch
//! sent → Ack received), retry pushbacks heard from the collector, and refusals.
//! The `run` command has no probe; the sender skips all of this when there is none.
//!
//! Everything is atomics, so thousands of agents can share one [`Latency`] histogram.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets of the latency histogram: bucket `i` holds latencies below
/// `BASE_US × GROWTH^i` (10 µs up to ~10 min at 12 % steps).
const BUCKETS: usize = 160;
const BASE_US: f64 = 10.0;
const GROWTH: f64 = 1.12;

/// A lock-free histogram of durations with ~12 % resolution.
#[derive(Debug)]
pub struct Latency {
    counts: Vec<AtomicU64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Latency {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= BASE_US {
            0
        } else {
            ((us / BASE_US).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counts, to subtract later ones from ([`Latency::quantile_since`]).
    pub fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The `q` quantile (0..=1) of what was recorded since `before` (a snapshot), as
    /// the upper bound of its bucket; `None` when nothing was.
    pub fn quantile_since(&self, before: &[u64], q: f64) -> Option<Duration> {
        let now = self.snapshot();
        let diff: Vec<u64> = now
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total: u64 = diff.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in diff.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_secs_f64(
                    BASE_US * GROWTH.powi(i as i32) / 1e6,
                ));
            }
        }
        None
    }

    /// How many durations were recorded since `before`.
    pub fn count_since(&self, before: &[u64]) -> u64 {
        let now: u64 = self.snapshot().iter().sum();
        now.saturating_sub(before.iter().sum())
    }
}

/// One agent's sender, as seen from outside.
#[derive(Debug, Default)]
pub struct Probe {
    /// Streams welcomed by the collector.
    pub connects: AtomicU64,
    /// True while a stream is welcomed and not yet ended.
    pub connected: AtomicBool,
    /// Batches acknowledged (duplicates included).
    pub acks: AtomicU64,
    /// Socket records (full-table sockets, delta additions, removals and changes) in
    /// acknowledged batches.
    pub rows: AtomicU64,
    /// Streams ended by the collector with a retry delay (load shedding).
    pub pushbacks: AtomicU64,
    /// The last retry delay the collector asked for, in ms.
    pub last_pushback_ms: AtomicU64,
    /// Streams that ended for any other reason (transport, refusals).
    pub other_ends: AtomicU64,
    /// When each pushback was heard and how long the agent then waited (for tests that
    /// measure the spread of retries); bounded to the first [`MAX_RETRIES_KEPT`].
    retries: Mutex<Vec<(Instant, Duration)>>,
    /// Ack latency, shared by every agent of a fleet.
    pub latency: Arc<Latency>,
}

/// Retries kept per probe.
pub const MAX_RETRIES_KEPT: usize = 64;

impl Probe {
    /// A probe recording ack latency into `latency`.
    pub fn new(latency: Arc<Latency>) -> Probe {
        Probe {
            latency,
            ..Probe::default()
        }
    }

    pub(crate) fn welcomed(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
    }

    pub(crate) fn acked(&self, latency: Duration, rows: u64) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.latency.record(latency);
    }

    pub(crate) fn ended(&self, pushback: Option<(Duration, Duration)>) {
        self.connected.store(false, Ordering::Relaxed);
        match pushback {
            Some((told, waiting)) => {
                self.pushbacks.fetch_add(1, Ordering::Relaxed);
                self.last_pushback_ms
                    .store(told.as_millis() as u64, Ordering::Relaxed);
                let mut r = self.retries.lock().unwrap_or_else(|p| p.into_inner());
                if r.len() < MAX_RETRIES_KEPT {
                    r.push((Instant::now(), waiting));
                }
            }
            None => {
                self.other_ends.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Each pushback heard: when, and how long the agent decided to wait.
    pub fn retries(&self) -> Vec<(Instant, Duration)> {
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_right_buckets() {
        let h = Latency::default();
        let before = h.snapshot();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_since(&before, 0.5).expect("recorded");
        let p99 = h.quantile_since(&before, 0.99).expect("recorded");
        assert!(
            p50 >= Duration::from_millis(50) && p50 < Duration::from_millis(57),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_millis(99) && p99 < Duration::from_millis(112),
            "{p99:?}"
        );
        assert_eq!(h.count_since(&before), 100);
        assert!(h.quantile_since(&h.snapshot(), 0.5).is_none());
    }
}

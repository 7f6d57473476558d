//! Timing noise for the `run` mode: jitter on the sampling interval (so a fleet started
//! at once does not sample in step) and exponential backoff between reconnections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A small xorshift generator for jitter; no cryptographic use.
pub(crate) struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and the process id, so agents started together differ.
    pub(crate) fn new() -> Jitter {
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

    /// Uniform in 0..n (0 when n is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.unit() * n as f64) as u64).min(n.saturating_sub(1))
    }

    /// `d` scaled by a factor in [1 - spread, 1 + spread).
    pub(crate) fn around(&mut self, d: Duration, spread: f64) -> Duration {
        d.mul_f64(1.0 - spread + 2.0 * spread * self.unit())
    }
}

/// Exponential backoff with full jitter.
pub(crate) struct Backoff {
    next: Duration,
    jitter: Jitter,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest wait a collector's retry pushback can impose: a wrong or hostile
/// value must not park the agent for hours.
pub(crate) const PUSHBACK_MAX: Duration = Duration::from_secs(300);
/// Spread applied to the collector's delay, on top of its own jitter, so agents told
/// the same delay still do not come back in step.
const PUSHBACK_SPREAD: f64 = 0.2;

impl Backoff {
    /// Starts at the shortest wait.
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            jitter: Jitter::new(),
        }
    }

    /// Back to the shortest wait (a stream was established).
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next wait; the one after is twice as long, up to the cap.
    pub(crate) fn step(&mut self) -> Duration {
        let d = self.next.mul_f64(self.jitter.unit().max(0.1));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    /// The wait after the collector shed us with a retry delay (`grpc-retry-pushback-ms`):
    /// its delay ±20 %, never less than our own next backoff step (which still grows),
    /// never more than [`PUSHBACK_MAX`].
    pub(crate) fn after_pushback(&mut self, told: Duration) -> Duration {
        let own = self.step();
        let told = self.jitter.around(told.min(PUSHBACK_MAX), PUSHBACK_SPREAD);
        told.max(own).min(PUSHBACK_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        for _ in 0..20 {
            assert!(b.step() <= BACKOFF_MAX);
        }
        assert_eq!(b.next, BACKOFF_MAX);
        b.reset();
        assert!(b.step() <= BACKOFF_MIN);
    }

    #[test]
    fn pushback_is_honoured_jittered_bounded_and_never_below_our_own_floor() {
        let mut b = Backoff::new();
        let told = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                b.reset();
                b.after_pushback(told)
            })
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(8) && *w < Duration::from_secs(12)),
            "{waits:?}"
        );
        let distinct: std::collections::BTreeSet<u128> =
            waits.iter().map(Duration::as_millis).collect();
        assert!(distinct.len() > 20, "spread: {distinct:?}");
        // A tiny delay does not undercut our own backoff, which keeps growing.
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.after_pushback(Duration::from_millis(1));
        }
        assert_eq!(b.next, BACKOFF_MAX);
        // An absurd one is capped.
        assert!(b.after_pushback(Duration::from_secs(86_400)) <= PUSHBACK_MAX);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let mut j = Jitter::new();
        let d = Duration::from_secs(10);
        for _ in 0..1000 {
            let x = j.around(d, 0.1);
            assert!(
                x >= Duration::from_secs(9) && x < Duration::from_secs(11),
                "{x:?}"
            );
        }
    }
}

//! The ingest memory budget: one semaphore of bytes shared by every stream. A batch
//! message reserves its share before it is decoded and holds it until it is
//! committed (or refused), so however many agents send large tables at once, what
//! they make the collector hold stays under `--ingest-memory-bytes`; the rest wait,
//! and HTTP/2 flow control pushes back on their agents.
//!
//! A message is reserved at [`DECODED_PER_WIRE_BYTE`] times its encoded size: decoded
//! prost messages, validated records, the column arrays bound to SQL and the encoded
//! statement together take that much (measured; README, "Limits").

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes held while a batch is decoded, validated and written, per encoded byte.
/// Measured with `finwait-bench ingest`: a 4.4 MB full table of 100,000 sockets in
/// one message raised the collector's peak RSS by 171 MiB (39 x).
pub const DECODED_PER_WIRE_BYTE: usize = 40;

/// The budget's unit: permits count KiB, so one reservation fits the semaphore's u32.
const UNIT: usize = 1024;

/// A byte budget shared by every stream.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Permits in KiB.
    permits: Arc<Semaphore>,
    /// The whole budget in KiB.
    total: u32,
}

/// A reservation; released when dropped.
#[derive(Debug)]
pub struct Reserved {
    _permit: OwnedSemaphorePermit,
}

/// A single message needs more than the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {need} byte message needs more than the whole ingest memory budget of {total} bytes")]
pub struct OverBudget {
    /// What the message needs.
    pub need: usize,
    /// The whole budget.
    pub total: usize,
}

impl Budget {
    /// A budget of `bytes` (at least 1 KiB, at most 4 TiB).
    pub fn new(bytes: usize) -> Budget {
        let total = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        Budget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// What a message of `wire_bytes` encoded bytes reserves.
    pub fn need(wire_bytes: usize) -> usize {
        wire_bytes.saturating_mul(DECODED_PER_WIRE_BYTE)
    }

    /// Waits until `bytes` are free and reserves them.
    pub async fn reserve(&self, bytes: usize) -> Result<Reserved, OverBudget> {
        let over = OverBudget {
            need: bytes,
            total: self.total as usize * UNIT,
        };
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).map_err(|_| over)?;
        if units > self.total {
            return Err(over);
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .map_err(|_| over)?;
        Ok(Reserved { _permit: permit })
    }

    /// Bytes free now (for metrics and tests).
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_each_other_and_a_giant_is_refused() {
        let b = Budget::new(10 * UNIT);
        let first = b.reserve(6 * UNIT).await.expect("fits");
        assert_eq!(b.available(), 4 * UNIT);
        let b2 = b.clone();
        let waiting = tokio::spawn(async move { b2.reserve(6 * UNIT).await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        drop(first);
        waiting.await.expect("task").expect("then fits");
        assert!(
            b.reserve(11 * UNIT).await.is_err(),
            "more than the whole budget"
        );
    }
}

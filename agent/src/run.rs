//! `finwait-agent run`, the sampler side: sample every interval and turn tables into
//! batches (a full table on every new stream, deltas after) in the shared [`Outbox`].
//!
//! Two tasks share the outbox, both started and stopped by [`crate::app::App`]: the
//! sampler here pushes a batch every cycle and never waits on the network; the sender
//! ([`crate::sender`]) keeps one stream open and drops batches only when the collector
//! acknowledges them.
//!
//! With a spool, each batch is appended to it (and synced) on the sampler's blocking
//! thread before it is queued; the spool forgets what the outbox released at the next
//! cycle, and the sender reads back what left memory ([`Shared::next_unsent`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use finwait_proto::v1 as pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Jitter;
use crate::delta::{self, Table, TimeWaitMode};
use crate::outbox::{Outbox, Outgoing};
use crate::sampler::{SampleError, TableSource};
use crate::spool::{Spool, SpoolStats, Stored};
use crate::wire;

/// State shared by the sampler and the sender.
pub(crate) struct Shared {
    /// Unacknowledged batches and this epoch's sequence numbers.
    outbox: Mutex<Outbox>,
    /// A batch was queued: the sender sends it.
    pub(crate) queued: Notify,
    /// Sample now: a new stream (or a resync) needs a full table.
    pub(crate) sample_now: Notify,
    /// The disk spool, if any; locked only on blocking threads (its calls do file I/O).
    spool: Option<Arc<Mutex<Spool>>>,
    /// The sampler has stopped: nothing more will be queued (a stopping sender drains
    /// until then, so a cycle that was running when stop came is delivered too).
    sampling_over: std::sync::atomic::AtomicBool,
    /// Where the sender reports what it saw (in-process fleets and tests); `None` in
    /// the `run` command.
    pub(crate) probe: Option<Arc<crate::probe::Probe>>,
}

impl Shared {
    /// An empty outbox for `epoch`, bounded to `buffer_bytes`.
    pub(crate) fn new(epoch: u64, buffer_bytes: usize) -> Shared {
        Shared {
            outbox: Mutex::new(Outbox::new(epoch, buffer_bytes)),
            queued: Notify::new(),
            sample_now: Notify::new(),
            spool: None,
            sampling_over: std::sync::atomic::AtomicBool::new(false),
            probe: None,
        }
    }

    /// The same, reporting to `probe`.
    pub(crate) fn with_probe(mut self, probe: Arc<crate::probe::Probe>) -> Shared {
        self.probe = Some(probe);
        self
    }

    /// Whether the sampler has stopped for good (nothing more will be queued).
    pub(crate) fn sampling_is_over(&self) -> bool {
        self.sampling_over
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the sampler stopped and wakes the sender.
    fn end_sampling(&self) {
        self.sampling_over
            .store(true, std::sync::atomic::Ordering::Release);
        self.queued.notify_one();
    }

    /// Backs the outbox with `spool`, whose `stored` records (an earlier run's) are
    /// queued ahead of everything this run samples.
    pub(crate) fn with_spool(mut self, spool: Spool, stored: &[Stored]) -> Shared {
        self.outbox().restore(stored);
        self.spool = Some(Arc::new(Mutex::new(spool)));
        self
    }

    /// The spool's figures (bytes, records, drops, torn records), if there is a spool.
    pub(crate) fn spool_stats(&self) -> Option<SpoolStats> {
        self.spool.as_ref().map(|s| lock(s).stats())
    }

    /// Lets the spool forget what the outbox released (blocking: call it from a
    /// blocking thread). Each cycle does this before appending; the app does it once
    /// more at exit, so a clean stop leaves nothing acknowledged to replay.
    pub(crate) fn release_spooled(&self) {
        if let Some(spool) = &self.spool {
            let released = self.outbox().take_released();
            lock(spool).release(&released);
        }
    }

    /// Appends a batch to the spool (blocking: call it from a blocking thread), first
    /// letting it forget what the outbox released; then queues it in the outbox.
    fn queue(&self, epoch: u64, seq: u64, full: bool, parts: Vec<pb::Batch>) {
        let (id, lost) = match &self.spool {
            Some(spool) => {
                let released = self.outbox().take_released();
                let mut sp = lock(spool);
                sp.release(&released);
                sp.append(epoch, seq, full, &parts)
            }
            None => (None, Vec::new()),
        };
        let mut o = self.outbox();
        o.spool_lost(&lost);
        o.push_spooled(parts, id);
    }

    /// The next batch of `epoch` for the stream, with its sequence number: from memory,
    /// or read back from the spool on a blocking thread. A batch the spool cannot give
    /// back (dropped over its bound meanwhile, or unreadable) is dropped, counted.
    pub(crate) async fn next_unsent(&self, epoch: u64) -> Option<(u64, Vec<pb::Batch>)> {
        loop {
            let (seq, id) = match self.outbox().next_unsent(epoch)? {
                Outgoing::Memory(seq, parts) => return Some((seq, parts)),
                Outgoing::Spooled(seq, id) => (seq, id),
            };
            let read = match &self.spool {
                Some(spool) => {
                    let spool = Arc::clone(spool);
                    tokio::task::spawn_blocking(move || lock(&spool).read(id))
                        .await
                        .unwrap_or_else(|e| Err(format!("spool read task: {e}")))
                }
                None => Err("no spool".into()),
            };
            match read {
                Ok(mut parts) => {
                    // Under a replaced epoch if the collector renumbered this run.
                    for p in &mut parts {
                        p.epoch = epoch;
                    }
                    return Some((seq, parts));
                }
                Err(e) => {
                    tracing::warn!(epoch, seq, error = %e, "cannot read a batch back from the spool; dropped");
                    self.outbox().lose(epoch, seq);
                }
            }
        }
    }

    /// The outbox, locked. Never held while the spool is locked or awaited.
    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock cannot leave the queue half-updated in a way
        // that matters more than stopping would: keep going with what is there.
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Locks the spool; a panic while it was held leaves at worst a record the next start
/// cuts off as torn.
fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sampler's state between cycles; moved onto a blocking thread for each cycle,
/// since reading the kernel, diffing and encoding are all CPU or blocking work.
pub(crate) struct Cycler {
    /// Where tables come from: the kernel, or a recording in tests.
    source: Box<dyn TableSource>,
    /// The previous table, which the next delta is computed against.
    prev: Option<Table>,
    /// TIME_WAIT summarised or sent one by one.
    time_wait: TimeWaitMode,
}

impl Cycler {
    /// A sampler that has not sampled yet (its first batch is a full table).
    pub(crate) fn new(source: Box<dyn TableSource>, time_wait: TimeWaitMode) -> Cycler {
        Cycler {
            source,
            prev: None,
            time_wait,
        }
    }

    /// Samples, turns the sample into the next batch and queues it. Sequence numbers are
    /// handed out only for batches that exist, so a failed read leaves no gap.
    fn cycle(&mut self, shared: &Shared) -> Result<(), SampleError> {
        let mut sample = self.source.sample()?;
        crate::metrics::cycle_done(&sample.stats);
        let time_wait = if self.time_wait == TimeWaitMode::Summarise {
            delta::summarise_time_wait(&sample.sockets)
        } else {
            Vec::new()
        };
        // Counts need the sockets; take them before the sockets move.
        let state_counts = sample.state_counts();
        let table = Table::from_sockets(std::mem::take(&mut sample.sockets), self.time_wait);
        let (epoch, seq, full) = {
            let mut o = shared.outbox();
            let full = o.need_full || self.prev.is_none();
            // The collector shows drops in the host's coverage.
            sample.stats.batches_dropped = o.dropped;
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
        let parts = wire::chunks(batch, wire::CHUNK_SOCKETS);
        shared.queue(epoch, seq, full, parts);
        crate::metrics::spool_seen(shared.spool_stats());
        {
            let o = shared.outbox();
            let (n, bytes) = o.len_bytes();
            tracing::debug!(seq, full, queued = n, queued_bytes = bytes, "batch queued");
        }
        self.prev = Some(table);
        Ok(())
    }
}

/// The sampler task: a cycle now, then one every `interval` (±10 %) or when the sender
/// asks for a full table, until `stop`. A failed read is logged and retried next
/// cycle; only losing the blocking thread (a panic in a cycle) ends the task, with an
/// error, after cancelling `stop` so the whole agent stops.
pub(crate) async fn sample_loop(
    mut cycler: Cycler,
    interval: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<(), String> {
    /// Marks sampling over however the loop ends.
    struct Ended(Arc<Shared>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.end_sampling();
        }
    }
    let _ended = Ended(Arc::clone(&shared));
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
                return Err(format!("sampling failed: {e}"));
            }
        };
        cycler = back;
        match res {
            Ok(()) => shared.queued.notify_one(),
            Err(e) => {
                crate::metrics::AGENT
                    .cycles_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "sampling failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(jitter.around(interval, 0.1)) => {}
            _ = shared.sample_now.notified() => {}
        }
    }
}

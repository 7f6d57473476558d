//! The bounded buffer of batches not yet acknowledged, in sequence order.
//!
//! Bounded in bytes: when a new batch does not fit, the oldest are dropped (counted),
//! and the next batch must be a full table, because the deltas after a gap cannot be
//! applied. Sampling only ever pushes here; it never waits on the network.
//!
//! With a spool ([`crate::spool`]), a batch that is also on disk is only evicted from
//! memory, not dropped: its entry stays, and the sender reads it back from the spool
//! when its turn comes. Entries from an earlier run (found in the spool at start-up)
//! come first, each under the epoch it was sent with; the sender streams one epoch at
//! a time, oldest first ([`Outbox::stream_epoch`]).

use std::collections::VecDeque;

use finwait_proto::v1 as pb;
use prost::Message;

use crate::spool::{RecordId, Stored};

/// One unacknowledged batch.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The epoch it is sent under.
    pub epoch: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Encoded size, for the bound.
    pub bytes: usize,
    /// True for a full table.
    pub full: bool,
    /// The batch as sent: one message, or a large full table's chunks in order
    /// ([`crate::wire::chunks`]), acknowledged together; `None` once evicted from
    /// memory (it is then in the spool).
    pub parts: Option<Vec<pb::Batch>>,
    /// Where the spool holds it, if it does.
    pub spooled: Option<RecordId>,
}

/// The next batch for the stream: in memory, or to be read from the spool.
#[derive(Debug)]
pub enum Outgoing {
    /// Its messages.
    Memory(u64, Vec<pb::Batch>),
    /// Its sequence number and where the spool has it.
    Spooled(u64, RecordId),
}

/// Unacknowledged batches and the sequence state of this agent's epoch.
#[derive(Debug)]
pub struct Outbox {
    /// Pending batches, oldest first (earlier runs' epochs before this one's).
    queue: VecDeque<Queued>,
    /// Sum of `bytes` of the batches held in memory.
    bytes: usize,
    /// The bound.
    cap: usize,
    /// This agent's epoch.
    pub epoch: u64,
    /// Next sequence number to hand out.
    next_seq: u64,
    /// The next batch must be a full table.
    pub need_full: bool,
    /// Batches dropped (buffer full with no spool copy, refused, or lost from the
    /// spool).
    pub dropped: u64,
    /// Highest sequence number sent on the current stream.
    pub sent_upto: u64,
    /// Spool records no longer needed, for the spool to forget.
    released: Vec<RecordId>,
}

impl Outbox {
    /// An empty outbox holding at most `cap` bytes.
    pub fn new(epoch: u64, cap: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            cap,
            epoch,
            next_seq: 1,
            need_full: true,
            dropped: 0,
            sent_upto: 0,
            released: Vec::new(),
        }
    }

    /// Queues what an earlier run left in the spool (before anything of this run),
    /// in spool order; the batches stay on disk until their turn.
    pub fn restore(&mut self, stored: &[Stored]) {
        for s in stored {
            self.queue.push_back(Queued {
                epoch: s.epoch,
                seq: s.seq,
                bytes: s.bytes as usize,
                full: s.full,
                parts: None,
                spooled: Some(s.id),
            });
        }
    }

    /// Hands out the next sequence number; `full` clears the need for a full table.
    pub fn next_seq(&mut self, full: bool) -> u64 {
        if full {
            self.need_full = false;
        }
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Queues a batch, dropping the oldest ones if it does not fit.
    pub fn push(&mut self, batch: pb::Batch) {
        self.push_parts(vec![batch]);
    }

    /// Queues a batch sent as `parts` (a chunked full table, or one message), dropping
    /// the oldest batches if it does not fit.
    pub fn push_parts(&mut self, parts: Vec<pb::Batch>) {
        self.push_spooled(parts, None);
    }

    /// Queues a batch that the spool holds at `spooled` (if it does). When memory is
    /// over the bound, the oldest batches in memory leave it: those in the spool stay
    /// queued, the others are dropped (counted) and a full table is asked for.
    pub fn push_spooled(&mut self, mut parts: Vec<pb::Batch>, spooled: Option<RecordId>) {
        let Some(first) = parts.first() else {
            return;
        };
        let bytes = parts.iter().map(Message::encoded_len).sum();
        let full = matches!(first.payload, Some(pb::batch::Payload::Full(_)));
        let seq = first.seq;
        // Sampled under an epoch the sender has since replaced (see `rebase`).
        if first.epoch != self.epoch {
            for p in &mut parts {
                p.epoch = self.epoch;
            }
        }
        while self.bytes + bytes > self.cap {
            let Some(i) = self.queue.iter().position(|q| q.parts.is_some()) else {
                break;
            };
            let q = &mut self.queue[i];
            self.bytes -= q.bytes;
            if q.spooled.is_some() {
                q.parts = None;
                continue;
            }
            let (seq, bytes) = (q.seq, q.bytes);
            self.queue.remove(i);
            self.dropped += 1;
            self.need_full = true;
            tracing::warn!(
                seq,
                bytes,
                "buffer full: dropped the oldest unacknowledged batch"
            );
        }
        self.bytes += bytes;
        self.queue.push_back(Queued {
            epoch: self.epoch,
            seq,
            bytes,
            full,
            parts: Some(parts),
            spooled,
        });
    }

    /// The spool dropped these segments (over its bound): batches only there are lost
    /// (counted; a full table follows), those still in memory stay.
    pub fn spool_lost(&mut self, segments: &[u64]) {
        if segments.is_empty() {
            return;
        }
        let epoch = self.epoch;
        let (mut lost, mut lost_current) = (0, false);
        self.queue.retain_mut(|q| {
            if !q.spooled.is_some_and(|id| segments.contains(&id.segment)) {
                return true;
            }
            q.spooled = None;
            if q.parts.is_some() {
                return true;
            }
            lost += 1;
            lost_current |= q.epoch == epoch;
            false
        });
        self.dropped += lost;
        if lost_current {
            self.need_full = true;
        }
    }

    /// Removes the front entry, releasing its spool record and memory.
    fn pop_front(&mut self) -> Option<Queued> {
        let q = self.queue.pop_front()?;
        if q.parts.is_some() {
            self.bytes -= q.bytes;
        }
        if let Some(id) = q.spooled {
            self.released.push(id);
        }
        Some(q)
    }

    /// Forgets everything of this run up to and including `seq` (acknowledged).
    pub fn ack(&mut self, seq: u64) {
        self.ack_in(self.epoch, seq);
    }

    /// Forgets everything of `epoch` up to and including `seq` (acknowledged).
    pub fn ack_in(&mut self, epoch: u64, seq: u64) {
        while self
            .queue
            .front()
            .is_some_and(|q| q.epoch == epoch && q.seq <= seq)
        {
            self.pop_front();
        }
    }

    /// The collector refused `seq` of this run: see [`Outbox::resync_in`].
    pub fn resync(&mut self, seq: u64) -> bool {
        self.resync_in(self.epoch, seq)
    }

    /// The collector refused `seq` of `epoch`: drop it and everything before; a full
    /// table is needed unless one is already queued after it. Returns whether one is
    /// needed.
    pub fn resync_in(&mut self, epoch: u64, seq: u64) -> bool {
        self.ack_in(epoch, seq);
        // Deltas queued before the next full table cannot apply either.
        let mut n = 0;
        while self
            .queue
            .front()
            .is_some_and(|q| q.epoch == epoch && !q.full)
        {
            self.pop_front();
            n += 1;
        }
        if epoch != self.epoch {
            // An earlier run's deltas: there is nothing to resample for them.
            self.dropped += n;
        } else if !self.queue.iter().any(|q| q.epoch == epoch) {
            self.need_full = true;
        }
        self.need_full
    }

    /// The collector gave this stream another epoch (ours is behind the host's last
    /// committed one, e.g. the clock was stepped back): adopt it for every batch still
    /// queued and every batch to come. Sequence numbers stay: nothing was committed
    /// under the new epoch yet.
    pub fn rebase(&mut self, epoch: u64) {
        let old = self.epoch;
        self.epoch = epoch;
        for q in self.queue.iter_mut().filter(|q| q.epoch == old) {
            q.epoch = epoch;
            for p in q.parts.iter_mut().flatten() {
                p.epoch = epoch;
            }
        }
    }

    /// The epoch the next stream is for: the oldest still queued (an earlier run's,
    /// from the spool), else this run's.
    pub fn stream_epoch(&self) -> u64 {
        self.queue.front().map_or(self.epoch, |q| q.epoch)
    }

    /// Every batch of an earlier run's `epoch` is acknowledged or dropped: its stream
    /// can end and the next epoch's begin.
    pub fn epoch_done(&self, epoch: u64) -> bool {
        epoch != self.epoch && !self.queue.iter().any(|q| q.epoch == epoch)
    }

    /// The collector has moved past an earlier run's `epoch` (it committed a later
    /// one): its batches can no longer be stored under it. Drops them (counted);
    /// returns how many.
    pub fn drop_epoch(&mut self, epoch: u64) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|q| q.epoch == epoch) {
            self.pop_front();
            n += 1;
        }
        self.dropped += n as u64;
        n
    }

    /// A new stream for the queue's oldest epoch: what the collector committed is
    /// dropped, everything else will be sent again; on this run's own stream a full
    /// table follows.
    pub fn new_stream(&mut self, committed_epoch: u64, committed_seq: u64) {
        let epoch = self.stream_epoch();
        if committed_epoch == epoch {
            self.ack_in(epoch, committed_seq);
        }
        self.sent_upto = 0;
        if epoch == self.epoch {
            self.need_full = true;
        }
    }

    /// The stream refused a batch as invalid: drop what was sent and not acknowledged
    /// (one of them is the poison), and start again from a full table.
    pub fn drop_unacked_sent(&mut self) -> usize {
        let epoch = self.stream_epoch();
        let mut n = 0;
        while self
            .queue
            .front()
            .is_some_and(|q| q.epoch == epoch && q.seq <= self.sent_upto)
        {
            self.pop_front();
            n += 1;
        }
        self.dropped += n as u64;
        self.need_full = true;
        n
    }

    /// Batches of `epoch` sent and not yet acknowledged.
    pub fn in_flight(&self, epoch: u64) -> usize {
        self.queue
            .iter()
            .take_while(|q| q.epoch == epoch && q.seq <= self.sent_upto)
            .count()
    }

    /// The next batch of `epoch` after the stream cursor, if any.
    pub fn next_unsent(&self, epoch: u64) -> Option<Outgoing> {
        let q = self
            .queue
            .iter()
            .find(|q| q.epoch == epoch && q.seq > self.sent_upto)?;
        match (&q.parts, q.spooled) {
            (Some(parts), _) => Some(Outgoing::Memory(q.seq, parts.clone())),
            (None, Some(id)) => Some(Outgoing::Spooled(q.seq, id)),
            (None, None) => unreachable!("a batch leaves memory only when the spool has it"),
        }
    }

    /// A spooled batch could not be read back: drop it (counted; a full table
    /// follows if it was this run's).
    pub fn lose(&mut self, epoch: u64, seq: u64) {
        if let Some(i) = self
            .queue
            .iter()
            .position(|q| q.epoch == epoch && q.seq == seq)
            && let Some(q) = self.queue.remove(i)
        {
            if q.parts.is_some() {
                self.bytes -= q.bytes;
            }
            if let Some(id) = q.spooled {
                self.released.push(id);
            }
            self.dropped += 1;
            if epoch == self.epoch {
                self.need_full = true;
            }
        }
    }

    /// Messages of this stream's batches held in memory after the stream cursor, in
    /// order, cloned (batches only in the spool are left out: see
    /// [`Outbox::next_unsent`]).
    pub fn unsent(&self) -> Vec<pb::Batch> {
        let epoch = self.stream_epoch();
        self.queue
            .iter()
            .filter(|q| q.epoch == epoch && q.seq > self.sent_upto)
            .flat_map(|q| q.parts.iter().flatten().cloned())
            .collect()
    }

    /// Spool records no longer needed since the last call.
    pub fn take_released(&mut self) -> Vec<RecordId> {
        std::mem::take(&mut self.released)
    }

    /// Queued batches and the bytes of those held in memory.
    pub fn len_bytes(&self) -> (usize, usize) {
        (self.queue.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, full: bool, pad: usize) -> pb::Batch {
        let payload = if full {
            pb::batch::Payload::Full(pb::FullTable::default())
        } else {
            pb::batch::Payload::Delta(pb::Delta::default())
        };
        pb::Batch {
            epoch: 1,
            seq,
            payload: Some(payload),
            processes: vec![pb::Process {
                cmdline: "x".repeat(pad),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_oldest_batch_is_dropped_when_full_and_a_full_table_is_asked_for() {
        let mut o = Outbox::new(1, 250);
        let s1 = o.next_seq(true);
        o.push(batch(s1, true, 100));
        assert!(!o.need_full);
        let s2 = o.next_seq(false);
        o.push(batch(s2, false, 100));
        let s3 = o.next_seq(false);
        o.push(batch(s3, false, 100));
        assert_eq!(o.dropped, 1);
        assert!(o.need_full);
        assert_eq!(
            o.unsent().iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(o.len_bytes().1 <= 250);
    }

    #[test]
    fn acks_resyncs_and_new_streams_move_the_queue() {
        let mut o = Outbox::new(1, 1 << 20);
        for full in [true, false, false, true, false] {
            let s = o.next_seq(full);
            o.push(batch(s, full, 0));
        }
        o.ack(1);
        assert_eq!(o.len_bytes().0, 4);
        // Refusing delta 2 also drops delta 3; full table 4 stays, so no new full needed.
        assert!(!o.resync(2));
        assert_eq!(
            o.unsent().iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        o.sent_upto = 5;
        assert!(o.unsent().is_empty());
        o.new_stream(1, 4);
        assert!(o.need_full);
        assert_eq!(
            o.unsent().iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![5]
        );
        o.sent_upto = 5;
        assert_eq!(o.drop_unacked_sent(), 1);
        assert_eq!(o.len_bytes(), (0, 0));
    }

    #[test]
    fn a_rebase_renumbers_every_queued_part_to_the_new_epoch() {
        let mut o = Outbox::new(1, 1 << 20);
        let s = o.next_seq(true);
        o.push_parts(vec![batch(s, true, 0), batch(s, true, 0)]);
        let s = o.next_seq(false);
        o.push(batch(s, false, 0));
        o.rebase(9);
        assert_eq!(o.epoch, 9);
        let sent = o.unsent();
        assert_eq!(
            sent.iter().map(|b| (b.epoch, b.seq)).collect::<Vec<_>>(),
            vec![(9, 1), (9, 1), (9, 2)],
            "sequence numbers stay, every part moves"
        );
    }

    fn id(segment: u64, offset: u64) -> RecordId {
        RecordId { segment, offset }
    }

    #[test]
    fn with_a_spool_the_oldest_batches_leave_memory_but_stay_queued() {
        let mut o = Outbox::new(1, 250);
        for (i, full) in [true, false, false, false].into_iter().enumerate() {
            let s = o.next_seq(full);
            o.push_spooled(vec![batch(s, full, 100)], Some(id(1, i as u64)));
        }
        assert_eq!(o.dropped, 0);
        assert!(!o.need_full, "nothing was lost");
        let (n, bytes) = o.len_bytes();
        assert_eq!(n, 4);
        assert!(bytes <= 250);
        // The first two are read from the spool, the rest from memory.
        let mut kinds = Vec::new();
        while let Some(next) = o.next_unsent(1) {
            let seq = match next {
                Outgoing::Spooled(seq, rid) => {
                    kinds.push(("spool", seq));
                    assert_eq!(rid, id(1, seq - 1));
                    seq
                }
                Outgoing::Memory(seq, parts) => {
                    kinds.push(("memory", seq));
                    assert_eq!(parts[0].seq, seq);
                    seq
                }
            };
            o.sent_upto = seq;
        }
        assert_eq!(
            kinds,
            vec![("spool", 1), ("spool", 2), ("memory", 3), ("memory", 4)]
        );
        assert_eq!(o.in_flight(1), 4);
        o.ack(3);
        assert_eq!(o.in_flight(1), 1, "sent and not acknowledged");
        assert_eq!(o.take_released(), vec![id(1, 0), id(1, 1), id(1, 2)]);
        // The spool dropping the last one's segment leaves its memory copy.
        o.spool_lost(&[1]);
        assert_eq!((o.len_bytes().0, o.dropped), (1, 0));
    }

    #[test]
    fn an_earlier_runs_batches_are_streamed_first_under_their_own_epoch() {
        let mut o = Outbox::new(30, 1 << 20);
        let stored = |epoch, seq, full, off| Stored {
            id: id(1, off),
            epoch,
            seq,
            full,
            bytes: 10,
        };
        o.restore(&[
            stored(10, 6, false, 0),
            stored(10, 7, false, 1),
            stored(20, 1, true, 2),
            stored(20, 2, false, 3),
            stored(20, 3, true, 4),
            stored(20, 4, false, 5),
        ]);
        let s = o.next_seq(true);
        o.push(pb::Batch {
            epoch: 30,
            ..batch(s, true, 0)
        });
        assert_eq!(o.stream_epoch(), 10);
        o.new_stream(10, 6);
        assert!(
            !o.need_full,
            "an earlier run's stream asks for no full table"
        );
        assert!(matches!(o.next_unsent(10), Some(Outgoing::Spooled(7, _))));
        o.ack_in(10, 7);
        assert!(o.epoch_done(10));
        assert_eq!(o.stream_epoch(), 20);
        o.new_stream(10, 7);
        // Epoch 20: delta 2 refused; the full table 3 after it stays.
        o.resync_in(20, 2);
        assert!(!o.epoch_done(20));
        assert!(matches!(o.next_unsent(20), Some(Outgoing::Spooled(3, _))));
        assert_eq!(
            o.dropped, 0,
            "acknowledged or refused, not lost: {}",
            o.dropped
        );
        // The collector has moved past epoch 20: the rest of it is dropped, counted.
        assert_eq!(o.drop_epoch(20), 2);
        assert_eq!(o.dropped, 2);
        assert_eq!(o.stream_epoch(), 30);
        assert!(!o.epoch_done(30), "this run's epoch never ends");
        assert_eq!(o.take_released().len(), 6);
    }

    #[test]
    fn batches_lost_from_the_spool_are_dropped_and_counted() {
        let mut o = Outbox::new(1, 150);
        for i in 0..3 {
            let s = o.next_seq(i == 0);
            o.push_spooled(vec![batch(s, i == 0, 100)], Some(id(i, 0)));
        }
        // 1 and 2 are only on disk now; segment 0 goes.
        o.spool_lost(&[0]);
        assert_eq!((o.len_bytes().0, o.dropped), (2, 1));
        assert!(o.need_full);
        o.lose(1, 2);
        assert_eq!((o.len_bytes().0, o.dropped), (1, 2));
        assert_eq!(o.take_released(), vec![id(1, 0)]);
    }
}

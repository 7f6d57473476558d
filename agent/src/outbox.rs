//! The bounded buffer of batches not yet acknowledged, in sequence order.
//!
//! Bounded in bytes: when a new batch does not fit, the oldest are dropped (counted),
//! and the next batch must be a full table, because the deltas after a gap cannot be
//! applied. Sampling only ever pushes here; it never waits on the network.

use std::collections::VecDeque;

use finwait_proto::v1 as pb;
use prost::Message;

/// One unacknowledged batch.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its sequence number.
    pub seq: u64,
    /// Encoded size, for the bound.
    pub bytes: usize,
    /// True for a full table.
    pub full: bool,
    /// The batch as sent: one message, or a large full table's chunks in order
    /// ([`crate::wire::chunks`]), acknowledged together.
    pub parts: Vec<pb::Batch>,
}

/// Unacknowledged batches and the sequence state of this agent's epoch.
#[derive(Debug)]
pub struct Outbox {
    /// Pending batches, oldest first.
    queue: VecDeque<Queued>,
    /// Sum of `bytes` in the queue.
    bytes: usize,
    /// The bound.
    cap: usize,
    /// This agent's epoch.
    pub epoch: u64,
    /// Next sequence number to hand out.
    next_seq: u64,
    /// The next batch must be a full table.
    pub need_full: bool,
    /// Batches dropped because the buffer was full.
    pub dropped: u64,
    /// Highest sequence number sent on the current stream.
    pub sent_upto: u64,
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
        let Some(first) = parts.first() else {
            return;
        };
        let bytes = parts.iter().map(Message::encoded_len).sum();
        let full = matches!(first.payload, Some(pb::batch::Payload::Full(_)));
        let seq = first.seq;
        while self.bytes + bytes > self.cap {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.dropped += 1;
            self.need_full = true;
            tracing::warn!(
                seq = old.seq,
                bytes = old.bytes,
                "buffer full: dropped the oldest unacknowledged batch"
            );
        }
        self.bytes += bytes;
        self.queue.push_back(Queued {
            seq,
            bytes,
            full,
            parts,
        });
    }

    /// Forgets everything up to and including `seq` (acknowledged).
    pub fn ack(&mut self, seq: u64) {
        while self.queue.front().is_some_and(|q| q.seq <= seq) {
            if let Some(q) = self.queue.pop_front() {
                self.bytes -= q.bytes;
            }
        }
    }

    /// The collector refused `seq`: drop it and everything before; a full table is
    /// needed unless one is already queued after it. Returns whether one is needed.
    pub fn resync(&mut self, seq: u64) -> bool {
        self.ack(seq);
        // Deltas queued before the next full table cannot apply either.
        while self.queue.front().is_some_and(|q| !q.full) {
            if let Some(q) = self.queue.pop_front() {
                self.bytes -= q.bytes;
            }
        }
        if self.queue.is_empty() {
            self.need_full = true;
        }
        self.need_full
    }

    /// The collector gave this stream another epoch (ours is behind the host's last
    /// committed one, e.g. the clock was stepped back): adopt it for every batch still
    /// queued and every batch to come. Sequence numbers stay: nothing was committed
    /// under the new epoch yet.
    pub fn rebase(&mut self, epoch: u64) {
        self.epoch = epoch;
        for q in &mut self.queue {
            for p in &mut q.parts {
                p.epoch = epoch;
            }
        }
    }

    /// A new stream: what the collector committed is dropped, everything else will be
    /// sent again, and a full table follows.
    pub fn new_stream(&mut self, committed_epoch: u64, committed_seq: u64) {
        if committed_epoch == self.epoch {
            self.ack(committed_seq);
        }
        self.sent_upto = 0;
        self.need_full = true;
    }

    /// The stream refused a batch as invalid: drop what was sent and not acknowledged
    /// (one of them is the poison), and start again from a full table.
    pub fn drop_unacked_sent(&mut self) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|q| q.seq <= self.sent_upto) {
            if let Some(q) = self.queue.pop_front() {
                self.bytes -= q.bytes;
                n += 1;
            }
        }
        self.dropped += n as u64;
        self.need_full = true;
        n
    }

    /// Messages of the batches queued after the stream cursor, in order, cloned for
    /// sending.
    pub fn unsent(&self) -> Vec<pb::Batch> {
        self.queue
            .iter()
            .filter(|q| q.seq > self.sent_upto)
            .flat_map(|q| q.parts.iter().cloned())
            .collect()
    }

    /// Queued batches and bytes.
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
}

//! The agent's crash-safe disk spool: every batch the sampler queues is also appended
//! here before the sender may send it, and forgotten only once the collector has
//! acknowledged it (or it was dropped, counted). A restarted agent finds what its
//! predecessor never had acknowledged and sends it first, under the epoch and
//! sequence numbers it was sent with, so the collector's ledger keeps each batch once.
//!
//! Layout: a directory owned by one agent (`lock`, held with `flock` for the agent's
//! life; a second agent on the same directory is refused), and numbered segment files
//! (`00000000000000000001.seg`, ...) of checksummed records ([`record`]). Records are
//! only ever appended, to the newest segment; a segment is deleted once each of its
//! records is acknowledged, and whole oldest segments are dropped (counted) to keep the
//! spool within its byte and age bounds. Segments found at start-up are never appended
//! to again.
//!
//! Durability: each record is written with one `write` and then `fdatasync`ed, before
//! the batch is handed to the sender; a new segment is synced with its directory. One
//! record is one sampling cycle (10 s by default), so a flush per record costs one disk
//! flush per cycle, and nothing the collector may have received can be missing after a
//! power loss. A record torn by a crash mid-write is found at the next start (its
//! checksum or length fails), cut off and counted; every record before it is intact.

mod record;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use finwait_proto::v1 as pb;

use record::{Meta, SEGMENT_MAGIC, Scanned};

/// Where the spool lives and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The directory (created if missing, mode 0700), owned by one agent at a time.
    pub dir: PathBuf,
    /// Bound on the segment files' total size; the oldest segments are dropped first.
    pub max_bytes: u64,
    /// Records spooled longer ago than this are dropped (whole segments, oldest first).
    pub max_age: Duration,
}

/// Where one record is: its segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// Segment number.
    pub segment: u64,
    /// Byte offset of the record in the segment.
    pub offset: u64,
}

/// A record found at start-up, in spool order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Where it is.
    pub id: RecordId,
    /// The epoch it was sent under.
    pub epoch: u64,
    /// Its sequence number.
    pub seq: u64,
    /// A full table.
    pub full: bool,
    /// Its size on disk.
    pub bytes: u64,
}

/// What the spool holds and what it lost, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Size of the segment files.
    pub bytes: u64,
    /// Records not yet acknowledged.
    pub records: u64,
    /// Unacknowledged records dropped to stay within the bounds (bytes or age).
    pub dropped: u64,
    /// Torn or corrupt records found at start-up and cut off.
    pub torn: u64,
    /// Batches that could not be spooled (a write failed, or one record is larger
    /// than the whole bound): they stay in memory only.
    pub unspooled: u64,
}

/// What can go wrong opening the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another agent holds the directory.
    #[error(
        "--spool-dir {dir}: in use by another finwait-agent{holder}; give each agent its own spool directory"
    )]
    Locked {
        /// The directory.
        dir: String,
        /// " (pid N)" when the lock file names its holder.
        holder: String,
    },
    /// A file operation failed.
    #[error("--spool-dir {dir}: cannot {what}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Records not yet released.
    live: u64,
    /// Wall-clock ms of its first and last record.
    oldest_ms: u64,
    newest_ms: u64,
}

/// The open spool. Every method does blocking file I/O: call it off async workers.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held for the agent's life: the `flock` on it is what keeps a second agent out.
    _lock: File,
    max_bytes: u64,
    max_age: Duration,
    /// A segment is closed for appends past this size or this age, so the bounds drop
    /// and deletions free space in steps of about a sixteenth of each bound.
    segment_bytes: u64,
    segment_age: Duration,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The newest segment, open for appends (none after start-up until a first append).
    active: Option<File>,
    next_segment: u64,
    stats: SpoolStats,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates or opens `dir/lock` and takes its exclusive `flock` (released by the kernel
/// however the agent ends), then writes our pid into it for the next one's message.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("lock");
    let err = |what: &str| {
        let (dir, what) = (
            dir.display().to_string(),
            format!("{what} {}", path.display()),
        );
        move |source| SpoolError::Io { dir, what, source }
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(err("open"))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            return Err(SpoolError::Locked {
                dir: dir.display().to_string(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(err("lock")(e)),
    }
    f.set_len(0)
        .and_then(|()| f.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .map_err(err("write"))?;
    Ok(f)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl Spool {
    /// Opens (creating it if needed) and locks the spool directory, reads every
    /// segment (cutting off torn tails, counted), applies the bounds, and returns the
    /// spool with the records still to send, in order.
    pub fn open(config: &SpoolConfig) -> Result<(Spool, Vec<Stored>), SpoolError> {
        Spool::open_at(config, now_ms())
    }

    fn open_at(config: &SpoolConfig, now: u64) -> Result<(Spool, Vec<Stored>), SpoolError> {
        let dir = config.dir.clone();
        let io = |what: String| {
            let dir = dir.display().to_string();
            move |source| SpoolError::Io { dir, what, source }
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(
                    "create the directory (give a writable --spool-dir, or --no-spool)".into(),
                ))?;
        }
        let lock = lock(&dir)?;
        let mut names: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io("list the directory".into()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        names.sort_unstable();
        let mut spool = Spool {
            dir: dir.clone(),
            _lock: lock,
            max_bytes: config.max_bytes,
            max_age: config.max_age,
            segment_bytes: (config.max_bytes / 16).clamp(64 * 1024, 64 * 1024 * 1024),
            segment_age: config.max_age / 16,
            segments: VecDeque::new(),
            active: None,
            next_segment: names.last().map_or(1, |n| n + 1),
            stats: SpoolStats::default(),
        };
        let mut stored = Vec::new();
        for id in names {
            let (segment, records) = spool.recover(id)?;
            match segment {
                Some(s) => {
                    spool.stats.bytes += s.bytes;
                    spool.stats.records += s.live;
                    spool.segments.push_back(s);
                    stored.extend(records);
                }
                None => spool.delete_file(id),
            }
        }
        let lost = spool.enforce(now, 0);
        stored.retain(|s| !lost.contains(&s.id.segment));
        spool.sync_dir();
        tracing::info!(
            dir = %dir.display(),
            records = spool.stats.records,
            bytes = spool.stats.bytes,
            torn = spool.stats.torn,
            dropped = spool.stats.dropped,
            "spool opened"
        );
        Ok((spool, stored))
    }

    /// Reads segment `id`, cutting it after its last intact record. `None`: nothing
    /// intact in it (delete it).
    fn recover(&mut self, id: u64) -> Result<(Option<Segment>, Vec<Stored>), SpoolError> {
        let path = segment_path(&self.dir, id);
        let dir = self.dir.display().to_string();
        let io = |what: &str| {
            let (dir, what) = (dir.clone(), format!("{what} {}", path.display()));
            move |source| SpoolError::Io { dir, what, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open"))?;
        let size = file.metadata().map_err(io("read the size of"))?.len();
        let mut r = BufReader::with_capacity(256 * 1024, &file);
        let mut magic = [0u8; 8];
        if size < 8
            || std::io::Read::read_exact(&mut r, &mut magic).is_err()
            || &magic != SEGMENT_MAGIC
        {
            if size > 0 {
                tracing::warn!(segment = %path.display(), "spool segment without a valid header; removed");
                self.stats.torn += 1;
            }
            return Ok((None, Vec::new()));
        }
        let mut offset = 8;
        let mut records = Vec::new();
        let mut seg = Segment {
            id,
            bytes: 8,
            live: 0,
            oldest_ms: u64::MAX,
            newest_ms: 0,
        };
        loop {
            match record::scan_one(&mut r, size - offset).map_err(io("read"))? {
                Scanned::Record { meta, bytes } => {
                    records.push(Stored {
                        id: RecordId {
                            segment: id,
                            offset,
                        },
                        epoch: meta.epoch,
                        seq: meta.seq,
                        full: meta.full,
                        bytes,
                    });
                    seg.live += 1;
                    seg.oldest_ms = seg.oldest_ms.min(meta.written_ms);
                    seg.newest_ms = seg.newest_ms.max(meta.written_ms);
                    offset += bytes;
                }
                Scanned::End => break,
                Scanned::Torn(why) => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        cut_bytes = size - offset,
                        reason = %why,
                        "torn record at the end of a spool segment (the agent stopped mid-write); cut off, the records before it are kept"
                    );
                    self.stats.torn += 1;
                    drop(r);
                    file.set_len(offset).map_err(io("truncate"))?;
                    file.sync_all().map_err(io("sync"))?;
                    break;
                }
            }
        }
        seg.bytes = offset;
        if seg.live == 0 {
            return Ok((None, Vec::new()));
        }
        Ok((Some(seg), records))
    }

    /// Appends a batch's record (durable when this returns), first dropping the oldest
    /// segments the bounds require. Returns where it was written (`None` if it could
    /// not be: counted, logged) and the segments dropped, whose records are gone.
    pub fn append(
        &mut self,
        epoch: u64,
        seq: u64,
        full: bool,
        parts: &[pb::Batch],
    ) -> (Option<RecordId>, Vec<u64>) {
        self.append_at(now_ms(), epoch, seq, full, parts)
    }

    fn append_at(
        &mut self,
        now: u64,
        epoch: u64,
        seq: u64,
        full: bool,
        parts: &[pb::Batch],
    ) -> (Option<RecordId>, Vec<u64>) {
        let meta = Meta {
            epoch,
            seq,
            written_ms: now,
            full,
        };
        let buf = record::encode(&meta, parts);
        let len = buf.len() as u64;
        if len + 8 > self.max_bytes {
            self.stats.unspooled += 1;
            tracing::warn!(
                seq,
                bytes = len,
                max_bytes = self.max_bytes,
                "batch larger than the whole spool; kept in memory only"
            );
            return (None, self.enforce(now, 0));
        }
        // Close the active segment when this record would make it too large or it is
        // old enough, so that the bounds can drop it as a whole.
        if let (Some(_), Some(last)) = (&self.active, self.segments.back())
            && last.live > 0
            && (last.bytes + len > self.segment_bytes
                || now.saturating_sub(last.oldest_ms) > self.segment_age.as_millis() as u64)
        {
            self.active = None;
        }
        let room = if self.active.is_some() { len } else { len + 8 };
        let lost = self.enforce(now, room);
        match self.write(&buf) {
            Ok(id) => {
                if let Some(last) = self.segments.back_mut() {
                    last.bytes += len;
                    last.live += 1;
                    last.oldest_ms = last.oldest_ms.min(now);
                    last.newest_ms = last.newest_ms.max(now);
                }
                self.stats.bytes += len;
                self.stats.records += 1;
                (Some(id), lost)
            }
            Err(e) => {
                self.stats.unspooled += 1;
                tracing::warn!(seq, error = %e, "cannot write to the spool; the batch is kept in memory only");
                // Never append after a record that may be half-written.
                self.active = None;
                (None, lost)
            }
        }
    }

    /// Writes one encoded record at the end of the active segment (a new one if
    /// there is none) and syncs it.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<RecordId> {
        if self.active.is_none() {
            let id = self.next_segment;
            let path = segment_path(&self.dir, id);
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .mode(0o600)
                    .open(&path)?
            };
            f.write_all(SEGMENT_MAGIC)?;
            f.sync_all()?;
            self.sync_dir();
            self.next_segment += 1;
            self.segments.push_back(Segment {
                id,
                bytes: 8,
                live: 0,
                oldest_ms: u64::MAX,
                newest_ms: 0,
            });
            self.stats.bytes += 8;
            self.active = Some(f);
        }
        let (Some(f), Some(last)) = (self.active.as_mut(), self.segments.back()) else {
            unreachable!("an active segment was just ensured");
        };
        let offset = last.bytes;
        if let Err(e) = f.write_all(buf).and_then(|()| f.sync_data()) {
            // Cut what may have been written, so the segment stays readable.
            let _ = f.set_len(offset);
            return Err(e);
        }
        Ok(RecordId {
            segment: last.id,
            offset,
        })
    }

    /// Drops whole oldest segments until `room` more bytes fit and nothing is older
    /// than the age bound; returns the dropped segments' numbers.
    fn enforce(&mut self, now: u64, room: u64) -> Vec<u64> {
        let max_age = self.max_age.as_millis() as u64;
        let mut lost = Vec::new();
        while let Some(oldest) = self.segments.front() {
            let too_old = oldest.live > 0 && now.saturating_sub(oldest.newest_ms) > max_age;
            let too_big = self.stats.bytes + room > self.max_bytes;
            if !too_old && !too_big {
                break;
            }
            let reason = if too_old { "age" } else { "bytes" };
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.active = None;
            }
            tracing::warn!(
                segment = s.id,
                records = s.live,
                bytes = s.bytes,
                reason,
                "spool over its bound: dropped its oldest segment"
            );
            self.stats.dropped += s.live;
            lost.push(s.id);
            self.remove(s);
        }
        if !lost.is_empty() {
            self.sync_dir();
        }
        lost
    }

    /// Forgets records that no longer need to be kept (acknowledged, or dropped by the
    /// outbox); deletes each segment left without a record.
    pub fn release(&mut self, ids: &[RecordId]) {
        for id in ids {
            if let Some(s) = self.segments.iter_mut().find(|s| s.id == id.segment) {
                s.live = s.live.saturating_sub(1);
                self.stats.records = self.stats.records.saturating_sub(1);
            }
        }
        let empty: Vec<u64> = self
            .segments
            .iter()
            .filter(|s| s.live == 0)
            .map(|s| s.id)
            .collect();
        if empty.is_empty() {
            return;
        }
        if self.segments.back().is_some_and(|s| empty.contains(&s.id)) {
            self.active = None;
        }
        let (gone, kept): (Vec<Segment>, Vec<Segment>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|s| s.live == 0);
        self.segments = kept.into();
        for s in gone {
            self.remove(s);
        }
        self.sync_dir();
    }

    /// Reads a record's batch back (every part, in order).
    pub fn read(&self, id: RecordId) -> Result<Vec<pb::Batch>, String> {
        if !self.segments.iter().any(|s| s.id == id.segment) {
            return Err(format!(
                "segment {} was dropped (over the bound)",
                id.segment
            ));
        }
        let mut f = File::open(segment_path(&self.dir, id.segment)).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(id.offset))
            .map_err(|e| e.to_string())?;
        let (_, parts) = record::read_parts(&mut BufReader::new(f))?;
        Ok(parts)
    }

    /// What it holds and lost so far.
    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remove(&mut self, s: Segment) {
        self.stats.bytes = self.stats.bytes.saturating_sub(s.bytes);
        self.stats.records = self.stats.records.saturating_sub(s.live);
        self.delete_file(s.id);
    }

    fn delete_file(&self, id: u64) {
        let path = segment_path(&self.dir, id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(segment = %path.display(), error = %e, "cannot delete a spool segment");
        }
    }

    /// Makes file creations and deletions in the directory durable.
    fn sync_dir(&self) {
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the spool directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("finwait-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
            max_age: Duration::from_secs(3600),
        }
    }

    fn batch(seq: u64, pad: usize) -> Vec<pb::Batch> {
        vec![pb::Batch {
            epoch: 5,
            seq,
            payload: Some(pb::batch::Payload::Delta(pb::Delta::default())),
            processes: vec![pb::Process {
                cmdline: "x".repeat(pad),
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    /// Opens `dir` at `now`, returning the spool and the (epoch, seq) it kept.
    fn reopen(cfg: &SpoolConfig, now: u64) -> (Spool, Vec<(u64, u64)>) {
        let (s, stored) = Spool::open_at(cfg, now).expect("open");
        let kept = stored.iter().map(|r| (r.epoch, r.seq)).collect();
        (s, kept)
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        segs.pop().expect("a segment")
    }

    #[test]
    fn records_survive_a_reopen_in_order_and_read_back_whole() {
        let dir = scratch("reopen");
        let cfg = config(&dir, 1 << 20);
        let mut ids = Vec::new();
        {
            let (mut s, kept) = reopen(&cfg, MIN);
            assert!(kept.is_empty());
            for seq in 1..=5 {
                let (id, lost) = s.append_at(MIN, 5, seq, seq == 1, &batch(seq, 10));
                assert!(lost.is_empty());
                ids.push(id.expect("spooled"));
            }
            s.release(&ids[..2]);
            assert_eq!(s.stats().records, 3);
        }
        let (s, kept) = reopen(&cfg, MIN);
        // Released records share a segment with live ones: they come back, and the
        // collector's ledger acknowledges them as duplicates.
        assert_eq!(kept, (1..=5).map(|q| (5, q)).collect::<Vec<_>>());
        assert_eq!(s.read(ids[3]).expect("read"), batch(4, 10));
        assert_eq!(s.stats().torn, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_segment_whose_records_are_all_released_is_deleted() {
        let dir = scratch("release");
        let cfg = config(&dir, 1 << 20);
        let (mut s, _) = reopen(&cfg, MIN);
        let ids: Vec<RecordId> = (1..=3)
            .filter_map(|q| s.append_at(MIN, 5, q, false, &batch(q, 10)).0)
            .collect();
        s.release(&ids);
        assert_eq!((s.stats().records, s.stats().bytes), (0, 0));
        drop(s);
        let (_, kept) = reopen(&cfg, MIN);
        assert!(kept.is_empty(), "{kept:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writes records 1..=3, damages the tail with `damage`, reopens: 1 and 2 must be
    /// intact and exactly one torn record counted.
    fn torn_tail(tag: &str, damage: impl Fn(&Path, u64)) {
        let dir = scratch(tag);
        let cfg = config(&dir, 1 << 20);
        let third = {
            let (mut s, _) = reopen(&cfg, MIN);
            for q in 1..=3 {
                s.append_at(MIN, 5, q, false, &batch(q, 100));
            }
            // The third record's offset: header + two records.
            let one = record::encode(
                &Meta {
                    epoch: 5,
                    seq: 1,
                    written_ms: MIN,
                    full: false,
                },
                &batch(1, 100),
            )
            .len() as u64;
            8 + 2 * one
        };
        damage(&last_segment(&dir), third);
        let (s, kept) = reopen(&cfg, MIN);
        assert_eq!(kept, vec![(5, 1), (5, 2)], "{tag}: earlier records intact");
        assert_eq!(s.stats().torn, 1, "{tag}: counted");
        assert_eq!(s.stats().records, 2);
        let size = std::fs::metadata(last_segment(&dir))
            .expect("segment")
            .len();
        assert_eq!(size, third, "{tag}: cut after the last intact record");
        drop(s);
        // Appending after the cut and reopening again: nothing torn any more.
        let (mut s, _) = reopen(&cfg, MIN);
        s.append_at(MIN, 6, 1, true, &batch(1, 1));
        drop(s);
        let (s, kept) = reopen(&cfg, MIN);
        assert_eq!(kept, vec![(5, 1), (5, 2), (6, 1)], "{tag}");
        assert_eq!(s.stats().torn, 0, "{tag}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_cut_mid_write_is_dropped_and_counted_and_the_earlier_ones_are_kept() {
        torn_tail("cut", |seg, third| {
            let f = OpenOptions::new().write(true).open(seg).expect("segment");
            f.set_len(third + 30).expect("truncate");
        });
    }

    #[test]
    fn a_garbage_tail_is_dropped_and_counted() {
        torn_tail("garbage", |seg, third| {
            let f = OpenOptions::new().write(true).open(seg).expect("segment");
            f.set_len(third).expect("truncate");
            let mut f = OpenOptions::new().append(true).open(seg).expect("segment");
            f.write_all(&[0xAB; 200]).expect("garbage");
        });
    }

    #[test]
    fn a_record_with_a_bad_checksum_is_dropped_and_counted() {
        torn_tail("crc", |seg, third| {
            let mut bytes = std::fs::read(seg).expect("segment");
            let i = third as usize + 20;
            bytes[i] ^= 0x40;
            std::fs::write(seg, bytes).expect("write");
        });
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_segments_and_counts_their_records() {
        let dir = scratch("bytes");
        // 64 KiB segments (the smallest), 256 KiB in all; ~10 KiB records.
        let cfg = config(&dir, 256 * 1024);
        let (mut s, _) = reopen(&cfg, MIN);
        let mut lost_segments = Vec::new();
        for q in 1..=60 {
            let (id, lost) = s.append_at(MIN, 5, q, false, &batch(q, 10_000));
            assert!(id.is_some());
            lost_segments.extend(lost);
            assert!(s.stats().bytes <= 256 * 1024, "{:?}", s.stats());
        }
        let st = s.stats();
        assert!(!lost_segments.is_empty());
        assert_eq!(st.records + st.dropped, 60, "{st:?}");
        drop(s);
        let (_, kept) = reopen(&cfg, MIN);
        // What is left is the newest records, contiguous up to the last.
        let first = 61 - kept.len() as u64;
        assert_eq!(kept, (first..=60).map(|q| (5, q)).collect::<Vec<_>>());
        assert!(first > 1, "the oldest were dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_age_bound_drops_the_oldest_segments_and_counts_their_records() {
        let dir = scratch("age");
        let cfg = SpoolConfig {
            max_age: Duration::from_secs(160),
            ..config(&dir, 1 << 30)
        };
        let (mut s, _) = reopen(&cfg, MIN);
        // One record a minute: segments close after 10 s (age / 16), one per record.
        for q in 1..=5 {
            let (_, lost) = s.append_at(q * MIN, 5, q, false, &batch(q, 10));
            assert!(lost.is_empty() || q > 3, "nothing old enough yet at {q}");
        }
        // At 5 min, the records of minutes 1 and 2 are older than 160 s.
        assert_eq!(s.stats().dropped, 2, "{:?}", s.stats());
        drop(s);
        // Reopened two minutes later, 3 and 4 are too old as well.
        let (s, kept) = reopen(&cfg, 7 * MIN);
        assert_eq!(kept, vec![(5, 5)]);
        assert_eq!(s.stats().dropped, 2, "dropped at this opening");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_spool_on_the_same_directory_is_refused_until_the_first_closes() {
        let dir = scratch("lock");
        let cfg = config(&dir, 1 << 20);
        let (first, _) = reopen(&cfg, MIN);
        let err = Spool::open_at(&cfg, MIN).expect_err("locked");
        let text = err.to_string();
        assert!(
            text.starts_with("--spool-dir ") && text.contains("in use by another finwait-agent"),
            "{text}"
        );
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(first);
        assert!(Spool::open_at(&cfg, MIN).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_larger_than_the_bound_stays_out_and_is_counted() {
        let dir = scratch("huge");
        let cfg = config(&dir, 4096);
        let (mut s, _) = reopen(&cfg, MIN);
        let (id, _) = s.append_at(MIN, 5, 1, true, &batch(1, 10_000));
        assert!(id.is_none());
        assert_eq!(s.stats().unspooled, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The spool's on-disk format: segment files of checksummed, length-prefixed records.
//!
//! A segment starts with [`SEGMENT_MAGIC`]; then records, each
//!
//! ```text
//! len   u32 LE   length of the body
//! crc   u32 LE   CRC-32C (Castagnoli) over the four len bytes, then the body
//! body  kind u8 (1 = batch), epoch u64, seq u64, written_ms u64, full u8,
//!       parts u32, then per part: its length u32 and the encoded finwait.v1.Batch
//! ```
//!
//! The length is inside the checksum, so a corrupted length cannot make a reader take
//! garbage for a record: a torn tail (the agent killed mid-write), garbage after the
//! last record or a flipped bit all fail the check, and the segment is cut there.

use std::io::{self, Read};

use finwait_proto::v1 as pb;
use prost::Message;

/// The first bytes of every segment (format version 1).
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"FWSPOOL1";
/// Bytes before a record's body: its length and checksum.
pub(crate) const HEADER: u64 = 8;
/// The fixed part of a body, before its parts.
const META: usize = 1 + 8 + 8 + 8 + 1 + 4;
/// Largest body a reader accepts; anything longer is a corrupted length.
pub(crate) const MAX_BODY: u64 = 1 << 30;
/// A batch record.
const KIND_BATCH: u8 = 1;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// What a record says about its batch, without the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The epoch the batch was sent under.
    pub(crate) epoch: u64,
    /// Its sequence number.
    pub(crate) seq: u64,
    /// When it was spooled (wall clock, ms since the Unix epoch): the age bound.
    pub(crate) written_ms: u64,
    /// A full table.
    pub(crate) full: bool,
}

/// One record, header included, ready to append.
pub(crate) fn encode(meta: &Meta, parts: &[pb::Batch]) -> Vec<u8> {
    let size: usize = parts.iter().map(|p| 4 + p.encoded_len()).sum();
    let mut out = Vec::with_capacity(HEADER as usize + META + size);
    out.extend_from_slice(&[0; HEADER as usize]);
    out.push(KIND_BATCH);
    out.extend_from_slice(&meta.epoch.to_le_bytes());
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.written_ms.to_le_bytes());
    out.push(u8::from(meta.full));
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        out.extend_from_slice(&(p.encoded_len() as u32).to_le_bytes());
        p.encode(&mut out)
            .expect("a Vec grows to hold whatever is encoded into it");
    }
    let len = (out.len() - HEADER as usize) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    let mut digest = CRC.digest();
    digest.update(&out[..4]);
    digest.update(&out[HEADER as usize..]);
    let crc = digest.finalize();
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The next record of a segment as read by [`scan_one`].
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A whole, intact record of `bytes` bytes (header included).
    Record { meta: Meta, bytes: u64 },
    /// The segment ends cleanly here.
    End,
    /// What follows is not a whole record (why, for the log).
    Torn(String),
}

/// Reads the record that starts here, with `remaining` bytes left in the segment,
/// checking its checksum without holding the whole body in memory.
pub(crate) fn scan_one(r: &mut impl Read, remaining: u64) -> io::Result<Scanned> {
    if remaining == 0 {
        return Ok(Scanned::End);
    }
    if remaining < HEADER {
        return Ok(Scanned::Torn(format!(
            "{remaining} bytes, shorter than a record header"
        )));
    }
    let mut head = [0u8; HEADER as usize];
    r.read_exact(&mut head)?;
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len < META as u64 || len > MAX_BODY {
        return Ok(Scanned::Torn(format!("impossible record length {len}")));
    }
    if len > remaining - HEADER {
        return Ok(Scanned::Torn(format!(
            "a record of {len} bytes with only {} left (cut mid-write)",
            remaining - HEADER
        )));
    }
    let mut digest = CRC.digest();
    digest.update(&head[..4]);
    let mut fixed = [0u8; META];
    r.read_exact(&mut fixed)?;
    digest.update(&fixed);
    let mut left = len - META as u64;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        digest.update(&buf[..n]);
        left -= n as u64;
    }
    if digest.finalize() != crc {
        return Ok(Scanned::Torn("checksum mismatch".into()));
    }
    match meta(&fixed) {
        Ok(meta) => Ok(Scanned::Record {
            meta,
            bytes: HEADER + len,
        }),
        Err(why) => Ok(Scanned::Torn(why)),
    }
}

fn meta(fixed: &[u8; META]) -> Result<Meta, String> {
    if fixed[0] != KIND_BATCH {
        return Err(format!("unknown record kind {}", fixed[0]));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fixed[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok(Meta {
        epoch: u64_at(1),
        seq: u64_at(9),
        written_ms: u64_at(17),
        full: fixed[25] != 0,
    })
}

/// Reads and checks a whole record (header included) and decodes its batch's parts.
pub(crate) fn read_parts(r: &mut impl Read) -> Result<(Meta, Vec<pb::Batch>), String> {
    let mut head = [0u8; HEADER as usize];
    r.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len < META as u64 || len > MAX_BODY {
        return Err(format!("impossible record length {len}"));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    let mut digest = CRC.digest();
    digest.update(&head[..4]);
    digest.update(&body);
    if digest.finalize() != crc {
        return Err("checksum mismatch".into());
    }
    let mut fixed = [0u8; META];
    fixed.copy_from_slice(&body[..META]);
    let meta = meta(&fixed)?;
    let n = u32::from_le_bytes([fixed[26], fixed[27], fixed[28], fixed[29]]);
    let mut rest = &body[META..];
    let mut parts = Vec::with_capacity((n as usize).min(1024));
    for i in 0..n {
        if rest.len() < 4 {
            return Err(format!("part {i} of {n} missing"));
        }
        let plen = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < plen {
            return Err(format!("part {i} of {n} cut short"));
        }
        let part = pb::Batch::decode(&rest[..plen]).map_err(|e| format!("part {i} of {n}: {e}"))?;
        parts.push(part);
        rest = &rest[plen..];
    }
    Ok((meta, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> pb::Batch {
        pb::Batch {
            epoch: 7,
            seq,
            taken_at_ms: 1234,
            payload: Some(pb::batch::Payload::Delta(pb::Delta::default())),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let meta = Meta {
            epoch: 7,
            seq: 3,
            written_ms: 99,
            full: false,
        };
        let parts = vec![batch(3), batch(3)];
        let bytes = encode(&meta, &parts);
        match scan_one(&mut &bytes[..], bytes.len() as u64).expect("read") {
            Scanned::Record { meta: m, bytes: n } => {
                assert_eq!((m, n), (meta, bytes.len() as u64));
            }
            other => panic!("not a record: {other:?}"),
        }
        let (m, p) = read_parts(&mut &bytes[..]).expect("parts");
        assert_eq!((m, p), (meta, parts));
    }

    #[test]
    fn every_single_flipped_bit_is_detected() {
        let meta = Meta {
            epoch: 1,
            seq: 1,
            written_ms: 1,
            full: true,
        };
        let good = encode(&meta, &[batch(1)]);
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let scanned = scan_one(&mut &bad[..], bad.len() as u64);
            assert!(
                matches!(scanned, Ok(Scanned::Torn(_)) | Err(_)),
                "bit {bit} flipped went unnoticed: {scanned:?}"
            );
        }
    }
}

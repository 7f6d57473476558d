//! A batch's socket records as PostgreSQL binary `COPY` data: for the ingest staging
//! table `batch_sockets` (`sql/batch_sockets.sql`), or straight into `current_sockets`
//! (a host's first table, with the pair keys [`crate::pair_key`] computes). Binary
//! rather than text: nothing to escape, and the server reads integers and addresses
//! without parsing them. Records are encoded straight from the model, the owners' JSON
//! serialised into the buffer.
//!
//! The format (PostgreSQL's `COPY ... (FORMAT binary)`): a signature, two zero
//! 32-bit words (flags and header extension), then per row a 16-bit field count and
//! per field a 32-bit length (-1 for NULL) and its bytes in the type's binary form,
//! and a 16-bit -1 at the end. All big-endian.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::model::{SocketId, SocketRecord};

/// The binary COPY signature and the flags and extension-length words.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Fields per row of `batch_sockets`, in its column order.
const STAGED_FIELDS: i16 = 15;

/// Fields per row of [`CURRENT_COLUMNS`].
const CURRENT_FIELDS: i16 = 17;

/// The `current_sockets` columns [`CopyRows::current`] writes, in order.
pub const CURRENT_COLUMNS: &str = "host_id, netns, sock_key, cookie, state, local_addr, \
    local_port, remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, \
    first_seen, pair_key";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// `inet`'s address family bytes (PostgreSQL's `PGSQL_AF_INET` and `PGSQL_AF_INET6`).
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// `jsonb`'s binary format version.
const JSONB_VERSION: u8 = 1;

/// Rows of `batch_sockets` being encoded; send [`CopyRows::take`] whenever
/// [`CopyRows::len`] is large, and [`CopyRows::finish`] last.
#[derive(Debug)]
pub struct CopyRows {
    buf: Vec<u8>,
}

impl CopyRows {
    /// Starts the data with its header.
    pub fn new() -> CopyRows {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(HEADER);
        CopyRows { buf }
    }

    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes encoded so far, leaving the buffer empty (its capacity kept).
    pub fn take(&mut self) -> Vec<u8> {
        let cap = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(cap))
    }

    /// The last bytes: what is left and the end-of-data marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    /// One listed socket for `batch_sockets`, `ord`-th in the batch.
    pub fn staged(&mut self, ord: i64, r: &SocketRecord) {
        self.buf.extend_from_slice(&STAGED_FIELDS.to_be_bytes());
        self.int8(ord);
        self.int8(r.netns);
        self.int8(r.sock_key);
        self.details(r);
    }

    /// One socket of `host_id` for `current_sockets` ([`CURRENT_COLUMNS`]): a lifetime
    /// opened at `first_seen` with its `pair_key`.
    pub fn current(
        &mut self,
        host_id: i64,
        r: &SocketRecord,
        first_seen: DateTime<Utc>,
        pair_key: i64,
    ) {
        self.buf.extend_from_slice(&CURRENT_FIELDS.to_be_bytes());
        self.int8(host_id);
        self.int8(r.netns);
        self.int8(r.sock_key);
        self.details(r);
        self.int8(first_seen.timestamp_micros() - PG_EPOCH_US);
        self.int8(pair_key);
    }

    /// Cookie to owners: the columns both tables share, in this order.
    fn details(&mut self, r: &SocketRecord) {
        match r.cookie {
            Some(c) => self.int8(c),
            None => self.null(),
        }
        self.int2(r.state);
        self.inet(r.local_addr);
        self.int4(i32::from(r.local_port));
        self.inet(r.remote_addr);
        self.int4(i32::from(r.remote_port));
        self.int8(r.inode);
        self.int8(r.uid);
        self.int8(r.rx_queue);
        self.int8(r.tx_queue);
        self.int2(r.timer);
        // jsonb: a version byte and the JSON text, its length patched in afterwards.
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, JSONB_VERSION]);
        if serde_json::to_writer(&mut self.buf, &r.owners).is_err() {
            // Serialising plain structs into a Vec cannot fail; an empty list if it did.
            self.buf.truncate(at + 5);
            self.buf.extend_from_slice(b"[]");
        }
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// One socket a delta lists as removed (state 0, no details), `ord`-th in the batch.
    pub fn removed(&mut self, ord: i64, (netns, sock_key): SocketId) {
        self.buf.extend_from_slice(&STAGED_FIELDS.to_be_bytes());
        self.int8(ord);
        self.int8(netns);
        self.int8(sock_key);
        self.null();
        self.int2(0);
        for _ in 0..10 {
            self.null();
        }
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn int2(&mut self, v: i16) {
        self.buf.extend_from_slice(&2i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn int4(&mut self, v: i32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn int8(&mut self, v: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `inet`: family, prefix bits, is-cidr (0), address length, address bytes.
    fn inet(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v4) => {
                self.buf.extend_from_slice(&8i32.to_be_bytes());
                self.buf.extend_from_slice(&[PGSQL_AF_INET, 32, 0, 4]);
                self.buf.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.buf.extend_from_slice(&20i32.to_be_bytes());
                self.buf.extend_from_slice(&[PGSQL_AF_INET6, 128, 0, 16]);
                self.buf.extend_from_slice(&v6.octets());
            }
        }
    }
}

impl Default for CopyRows {
    fn default() -> Self {
        CopyRows::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_row_is_its_identity_state_zero_and_nulls() {
        let mut rows = CopyRows::new();
        rows.removed(7, (4_026_531_840, -5));
        let data = rows.finish();
        assert_eq!(&data[..HEADER.len()], HEADER);
        let row = &data[HEADER.len()..];
        assert_eq!(&row[..2], &15i16.to_be_bytes());
        // ord, netns, sock_key: 4-byte length 8, then the value.
        assert_eq!(&row[2..6], &8i32.to_be_bytes());
        assert_eq!(&row[6..14], &7i64.to_be_bytes());
        assert_eq!(&row[18..26], &4_026_531_840i64.to_be_bytes());
        assert_eq!(&row[30..38], &(-5i64).to_be_bytes());
        // cookie NULL, state 0 (int2), then ten NULLs and the end marker.
        assert_eq!(&row[38..42], &(-1i32).to_be_bytes());
        assert_eq!(&row[42..48], &[0, 0, 0, 2, 0, 0]);
        assert_eq!(row.len(), 48 + 10 * 4 + 2);
        assert_eq!(&row[row.len() - 2..], &(-1i16).to_be_bytes());
    }
}

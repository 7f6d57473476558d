//! The pair key (`finwait_pair_key`, migration `20261203000001_pair_key.sql`) computed
//! in the collector, so that a host's first full table can be copied straight into
//! `current_sockets` with its keys (COPY cannot call a function per row).
//!
//! The SQL function stays the definition: the merge statements and the queries compute
//! it there. This copy must give the same number for every row, which means repeating
//! three things PostgreSQL does: `host(inet)`'s text (IPv6 written the way
//! PostgreSQL's inet output writes it, not the way Rust's `Display` does),
//! `hashtextextended(text, 0)` (PostgreSQL's 64-bit variant of Bob Jenkins' lookup3
//! hash, on a little-endian machine), and the state and scope rules. The `pairkey`
//! integration test compares both on thousands of tuples with a real PostgreSQL.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

/// `finwait_pair_key(host_id, netns, state, local, local_port, remote, remote_port)`.
pub fn pair_key(
    host_id: i64,
    netns: i64,
    state: i16,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
) -> i64 {
    let (addr, port) = match state {
        // CLOSE_WAIT, LAST_ACK: the passive closer keys by its peer, the active one.
        8 | 9 => remote,
        // FIN_WAIT1, FIN_WAIT2, LISTEN: their own endpoint.
        4 | 5 | 10 => local,
        // Otherwise the endpoint with the higher (port, address).
        _ if (remote.1, remote.0) > (local.1, local.0) => remote,
        _ => local,
    };
    endpoint_key(host_id, netns, addr, port)
}

/// `finwait_endpoint_key`: the hash of `host(addr) || ' ' || port`, plus the host and
/// namespace for a loopback address (`finwait_scope_local`).
fn endpoint_key(host_id: i64, netns: i64, addr: IpAddr, port: u16) -> i64 {
    let mut text = String::with_capacity(64);
    write_host(&mut text, addr);
    let _ = write!(text, " {port}");
    if scope_local(addr) {
        let _ = write!(text, " {host_id} {netns}");
    }
    hash_bytes_extended(text.as_bytes()) as i64
}

/// `finwait_scope_local`: 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104.
fn scope_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] == 127)
        }
    }
}

/// `host(inet)` of a host address: dotted IPv4; IPv6 as PostgreSQL writes it. The
/// longest run of two or more zero words (the first of equals) becomes `::`; the last
/// 32 bits are dotted when the address starts with that run and the run is 6 words,
/// 5 words followed by ffff, or 7 words not followed by 1.
fn write_host(out: &mut String, addr: IpAddr) {
    let v6 = match addr {
        IpAddr::V4(v4) => {
            let _ = write!(out, "{v4}");
            return;
        }
        IpAddr::V6(v6) => v6,
    };
    let words = v6.segments();
    // The longest run of zero words: (start, length); a run must be 2 or longer.
    type Run = Option<(usize, usize)>;
    let (mut best, mut cur): (Run, Run) = (None, None);
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(cur.map_or((i, 1), |(s, l)| (s, l + 1)));
        } else if let Some(c) = cur.take()
            && best.is_none_or(|b| c.1 > b.1)
        {
            best = Some(c);
        }
    }
    if let Some(c) = cur
        && best.is_none_or(|b| c.1 > b.1)
    {
        best = Some(c);
    }
    let best = best.filter(|b| b.1 >= 2);
    for (i, &w) in words.iter().enumerate() {
        if let Some((base, len)) = best
            && i >= base
            && i < base + len
        {
            if i == base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && let Some((0, len)) = best
            && (len == 6 || (len == 7 && words[7] != 1) || (len == 5 && words[5] == 0xffff))
        {
            let o = v6.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return;
        }
        let _ = write!(out, "{w:x}");
    }
    if let Some((base, len)) = best
        && base + len == 8
    {
        out.push(':');
    }
}

/// PostgreSQL's `hash_bytes_extended(k, len, 0)` on a little-endian machine: lookup3
/// over 12-byte blocks of little-endian words; the last block's third word starts one
/// byte up (its lowest byte is left for the length, already in the initial state).
fn hash_bytes_extended(k: &[u8]) -> u64 {
    let init = 0x9e37_79b9u32
        .wrapping_add(k.len() as u32)
        .wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |s: &[u8]| -> u32 {
        s.iter()
            .enumerate()
            .fold(0u32, |w, (i, &x)| w | u32::from(x) << (8 * i))
    };
    let mut rest = k;
    while rest.len() >= 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]) << 8);
    }
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

/// `host(inet)` for tests comparing with PostgreSQL.
pub fn host_text(addr: IpAddr) -> String {
    let mut s = String::new();
    write_host(&mut s, addr);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_written_the_way_postgresql_writes_it() {
        for (addr, text) in [
            ("::1", "::1"),
            ("::", "::"),
            ("::2", "::2"),
            ("::ffff:0:0", "::ffff:0.0.0.0"),
            ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:1:1", "2001::1:0:0:1:1"),
            ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
            ("fe80::", "fe80::"),
        ] {
            let a: IpAddr = addr.parse().expect("address");
            assert_eq!(host_text(a), text, "{addr}");
        }
    }
}

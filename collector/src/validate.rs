//! Wire types stop here: every agent message is checked field by field and turned
//! into [`crate::model`] types, or refused with an error that names the field.
//!
//! Structural problems (unknown enum values, ports out of range, addresses of the wrong
//! length, absurd timestamps, oversized batches) are refused. Process names are
//! free text from /proc: they are sanitised instead (documented rule: control
//! characters, NUL included, become U+FFFD; comm is cut to 64 and cmdline to 4096 bytes
//! on a character boundary), because refusing them would make a host unreportable.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, TimeZone, Utc};
use finwait_proto::v1 as pb;

use crate::model::{
    Batch, CycleAccount, HostHello, NamespaceRecord, OwnerRecord, Payload, SocketId, SocketRecord,
    StateCount, TimeWaitCount,
};
use crate::service;

/// A message the collector refuses, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// Path of the field, e.g. `batch.delta.added[3].local.addr`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Bounds applied to every message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most socket records (added + removed + changed, or full) in one batch; for a
    /// full table sent in chunks, in all its chunks together.
    pub max_sockets_per_batch: usize,
    /// How far ahead of the collector's clock an agent's clock may be, in
    /// milliseconds: a `taken_at` or a hello epoch further ahead is refused, since it
    /// would move a host's last report (and every past-instant answer) into the future.
    pub max_clock_ahead_ms: i64,
}

/// Default [`Limits::max_clock_ahead_ms`]: five minutes, far more than NTP leaves.
pub const DEFAULT_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sockets_per_batch: 2_000_000,
            max_clock_ahead_ms: DEFAULT_CLOCK_AHEAD_MS,
        }
    }
}

const COMM_MAX: usize = 64;
const CMDLINE_MAX: usize = 4096;
/// Longest cgroup path kept, in bytes (the kernel's PATH_MAX).
const CGROUP_MAX: usize = 4096;
/// Longest hostname kept, in bytes (the kernel's is 64).
const HOSTNAME_MAX: usize = 64;
/// 2020-01-01T00:00:00Z: no agent reading is older.
const MIN_TIME_MS: i64 = 1_577_836_800_000;

/// Replaces control characters with U+FFFD and cuts to `max` bytes on a char boundary.
pub fn sanitise(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn bounded(field: &str, value: &str, max: usize, required: bool) -> Result<String, Invalid> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes, at most {max}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

fn port(field: &str, p: u32) -> Result<u16, Invalid> {
    u16::try_from(p).map_err(|_| invalid(field, format!("port {p} out of range 0..=65535")))
}

fn addr(field: &str, bytes: &[u8]) -> Result<IpAddr, Invalid> {
    match bytes.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(bytes);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        n => Err(invalid(
            field,
            format!("{n} bytes, want 4 (IPv4) or 16 (IPv6)"),
        )),
    }
}

fn endpoint(field: &str, e: Option<&pb::Endpoint>) -> Result<(IpAddr, u16), Invalid> {
    let e = e.ok_or_else(|| invalid(field, "missing"))?;
    Ok((
        addr(&format!("{field}.addr"), &e.addr)?,
        port(&format!("{field}.port"), e.port)?,
    ))
}

fn state(field: &str, s: i32) -> Result<i16, Invalid> {
    match pb::TcpState::try_from(s) {
        Ok(pb::TcpState::Unspecified) | Err(_) => {
            Err(invalid(field, format!("unknown TCP state {s}")))
        }
        Ok(v) => Ok(v as i16),
    }
}

fn time_ms(field: &str, ms: i64, ahead_ms: i64) -> Result<DateTime<Utc>, Invalid> {
    let now = Utc::now().timestamp_millis();
    if ms < MIN_TIME_MS {
        return Err(invalid(
            field,
            format!("{ms} ms is not a plausible time (before 2020)"),
        ));
    }
    if ms > now.saturating_add(ahead_ms) {
        return Err(invalid(
            field,
            format!(
                "{ms} ms is {} s ahead of the collector's clock (at most {} s): fix the agent's clock",
                (ms - now) / 1000,
                ahead_ms / 1000
            ),
        ));
    }
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| invalid(field, "not representable"))
}

/// A stable 63-bit identity from the tuple and inode, for sockets read without a
/// cookie (/proc). FNV-1a; collisions within one host's namespace are negligible.
fn tuple_key(local: (IpAddr, u16), remote: (IpAddr, u16), inode: u64) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (ip, p) in [local, remote] {
        match ip {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
        eat(&p.to_be_bytes());
    }
    eat(&inode.to_be_bytes());
    (h >> 1) as i64
}

/// Validates Hello.
pub fn hello(h: &pb::Hello) -> Result<HostHello, Invalid> {
    let host = h
        .host
        .as_ref()
        .ok_or_else(|| invalid("hello.host", "missing"))?;
    if host.labels.len() > 64 {
        return Err(invalid(
            "hello.host.labels",
            format!("{} labels, at most 64", host.labels.len()),
        ));
    }
    let mut labels = Vec::with_capacity(host.labels.len());
    for (k, v) in &host.labels {
        let k = bounded("hello.host.labels key", k, 128, true)?;
        let v = bounded(&format!("hello.host.labels[{k}]"), v, 256, false)?;
        labels.push((k, v));
    }
    labels.sort();
    let low = port("hello.host.ephemeral_port_low", host.ephemeral_port_low)?;
    let high = port("hello.host.ephemeral_port_high", host.ephemeral_port_high)?;
    if low > high {
        return Err(invalid(
            "hello.host.ephemeral_port_low",
            format!("{low} is above the high bound {high}"),
        ));
    }
    if h.epoch == 0 || h.epoch > i64::MAX as u64 {
        return Err(invalid("hello.epoch", "must be in 1..=2^63-1"));
    }
    Ok(HostHello {
        hostname: bounded("hello.host.hostname", &host.hostname, 255, true)?,
        machine_id: bounded("hello.host.machine_id", &host.machine_id, 128, true)?,
        boot_id: bounded("hello.host.boot_id", &host.boot_id, 128, false)?,
        labels,
        agent_version: bounded("hello.host.agent_version", &host.agent_version, 64, false)?,
        ephemeral: (low, high),
        fin_timeout_s: host.tcp_fin_timeout_s,
        sample_interval_ms: host.sample_interval_ms,
        epoch: h.epoch,
        instance_id: bounded("hello.instance_id", &h.instance_id, 128, true)?,
    })
}

/// A batch's process, sanitised and named once for all its sockets.
struct ProcessInfo {
    comm: String,
    cmdline: String,
    service: Option<String>,
    container: Option<String>,
}

impl ProcessInfo {
    fn of(p: &pb::Process) -> ProcessInfo {
        let named = service::name_process(
            &sanitise(&p.cgroup, CGROUP_MAX),
            &sanitise(&p.hostname, HOSTNAME_MAX),
        );
        ProcessInfo {
            comm: sanitise(&p.comm, COMM_MAX),
            cmdline: sanitise(&p.cmdline, CMDLINE_MAX),
            service: named.service,
            container: named.container,
        }
    }
}

fn socket(
    field: &str,
    s: &pb::Socket,
    processes: &HashMap<u32, ProcessInfo>,
) -> Result<SocketRecord, Invalid> {
    let local = endpoint(&format!("{field}.local"), s.local.as_ref())?;
    let remote = endpoint(&format!("{field}.remote"), s.remote.as_ref())?;
    if local.0.is_ipv4() != remote.0.is_ipv4() {
        return Err(invalid(
            format!("{field}.remote.addr"),
            "address family differs from local",
        ));
    }
    let timer = match &s.timer {
        None => 0,
        Some(t) => match pb::TimerKind::try_from(t.kind) {
            Ok(pb::TimerKind::Unspecified) | Err(_) => {
                return Err(invalid(
                    format!("{field}.timer.kind"),
                    format!("unknown timer kind {}", t.kind),
                ));
            }
            Ok(k) => k as i16,
        },
    };
    let inode =
        i64::try_from(s.inode).map_err(|_| invalid(format!("{field}.inode"), "out of range"))?;
    let mut owners = Vec::with_capacity(s.owners.len());
    for (i, o) in s.owners.iter().enumerate() {
        let p = processes.get(&o.pid).ok_or_else(|| {
            invalid(
                format!("{field}.owners[{i}].pid"),
                format!("process {} not in batch.processes", o.pid),
            )
        })?;
        owners.push(OwnerRecord {
            pid: o.pid,
            fd: o.fd,
            comm: p.comm.clone(),
            cmdline: p.cmdline.clone(),
            service: p.service.clone(),
            container: p.container.clone(),
        });
    }
    owners.sort_by_key(|o| (o.pid, o.fd));
    let netns =
        i64::try_from(s.netns).map_err(|_| invalid(format!("{field}.netns"), "out of range"))?;
    Ok(SocketRecord {
        netns,
        sock_key: match s.cookie {
            Some(c) => c as i64,
            None => tuple_key(local, remote, s.inode),
        },
        cookie: s.cookie.map(|c| c as i64),
        state: state(&format!("{field}.state"), s.state)?,
        local_addr: local.0,
        local_port: local.1,
        remote_addr: remote.0,
        remote_port: remote.1,
        inode,
        uid: i64::from(s.uid),
        rx_queue: i64::from(s.rx_queue),
        tx_queue: i64::from(s.tx_queue),
        timer,
        owners,
    })
}

fn socket_id(field: &str, k: &pb::SocketKey) -> Result<SocketId, Invalid> {
    let netns =
        i64::try_from(k.netns).map_err(|_| invalid(format!("{field}.netns"), "out of range"))?;
    let key = match k.cookie {
        Some(c) => c as i64,
        None => {
            let local = endpoint(&format!("{field}.local"), k.local.as_ref())?;
            let remote = endpoint(&format!("{field}.remote"), k.remote.as_ref())?;
            tuple_key(local, remote, k.inode)
        }
    };
    Ok((netns, key))
}

/// Validates a batch.
pub fn batch(b: &pb::Batch, limits: &Limits) -> Result<Batch, Invalid> {
    if b.epoch == 0 || b.epoch > i64::MAX as u64 {
        return Err(invalid("batch.epoch", "must be in 1..=2^63-1"));
    }
    if b.seq == 0 || b.seq > i64::MAX as u64 {
        return Err(invalid("batch.seq", "must be in 1..=2^63-1"));
    }
    let taken_at = time_ms(
        "batch.taken_at_ms",
        b.taken_at_ms,
        limits.max_clock_ahead_ms,
    )?;
    if b.chunk > 0 || b.more_chunks {
        if !matches!(b.payload, Some(pb::batch::Payload::Full(_))) {
            return Err(invalid(
                "batch.chunk",
                "only a full table may be sent in chunks",
            ));
        }
        if b.chunk > 0
            && (!b.counts.is_empty()
                || !b.time_wait.is_empty()
                || !b.namespaces.is_empty()
                || b.stats.is_some())
        {
            return Err(invalid(
                "batch.chunk",
                "only chunk 0 carries counts, time_wait, namespaces and stats",
            ));
        }
    }
    let processes: HashMap<u32, ProcessInfo> = b
        .processes
        .iter()
        .map(|p| (p.pid, ProcessInfo::of(p)))
        .collect();
    let records = match &b.payload {
        Some(pb::batch::Payload::Full(f)) => f.sockets.len(),
        Some(pb::batch::Payload::Delta(d)) => d.added.len() + d.removed.len() + d.changed.len(),
        None => 0,
    };
    if records > limits.max_sockets_per_batch {
        return Err(invalid(
            "batch.payload",
            format!(
                "{records} socket records, at most {}",
                limits.max_sockets_per_batch
            ),
        ));
    }
    let many = |field: &str, list: &[pb::Socket]| -> Result<Vec<SocketRecord>, Invalid> {
        list.iter()
            .enumerate()
            .map(|(i, s)| socket(&format!("{field}[{i}]"), s, &processes))
            .collect()
    };
    let payload = match &b.payload {
        None => {
            return Err(invalid(
                "batch.payload",
                "missing: a batch carries a full table or a delta",
            ));
        }
        Some(pb::batch::Payload::Full(f)) => Payload::Full(many("batch.full.sockets", &f.sockets)?),
        Some(pb::batch::Payload::Delta(d)) => Payload::Delta {
            added: many("batch.delta.added", &d.added)?,
            changed: many("batch.delta.changed", &d.changed)?,
            removed: d
                .removed
                .iter()
                .enumerate()
                .map(|(i, k)| socket_id(&format!("batch.delta.removed[{i}]"), k))
                .collect::<Result<_, _>>()?,
        },
    };
    let counts = b
        .counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(StateCount {
                netns: i64::try_from(c.netns)
                    .map_err(|_| invalid(format!("batch.counts[{i}].netns"), "out of range"))?,
                state: state(&format!("batch.counts[{i}].state"), c.state)?,
                count: i32::try_from(c.count)
                    .map_err(|_| invalid(format!("batch.counts[{i}].count"), "out of range"))?,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let time_wait = b
        .time_wait
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let f = format!("batch.time_wait[{i}]");
            Ok(TimeWaitCount {
                netns: i64::try_from(g.netns)
                    .map_err(|_| invalid(format!("{f}.netns"), "out of range"))?,
                local_addr: addr(&format!("{f}.local_addr"), &g.local_addr)?,
                remote_addr: addr(&format!("{f}.remote_addr"), &g.remote_addr)?,
                remote_port: port(&format!("{f}.remote_port"), g.remote_port)?,
                count: i32::try_from(g.count)
                    .map_err(|_| invalid(format!("{f}.count"), "out of range"))?,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let namespaces = b
        .namespaces
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let cgroup = sanitise(&n.container_hint, CGROUP_MAX);
            let named = if n.is_host {
                service::ServiceName::default()
            } else {
                service::name(&cgroup)
            };
            Ok(NamespaceRecord {
                netns: i64::try_from(n.inode)
                    .map_err(|_| invalid(format!("batch.namespaces[{i}].inode"), "out of range"))?,
                is_host: n.is_host,
                cgroup,
                service: named.service,
                container: named.container,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let account = b.stats.as_ref().map(account).transpose()?;
    Ok(Batch {
        epoch: b.epoch as i64,
        seq: b.seq as i64,
        taken_at,
        payload,
        counts,
        time_wait,
        namespaces,
        account,
    })
}

/// The cycle's self-account, bounded: reasons and capability names are sanitised and
/// their lists cut, so a hostile agent cannot make a host's coverage row large.
fn account(s: &pb::CycleStats) -> Result<CycleAccount, Invalid> {
    const LIST_MAX: usize = 32;
    let source = match pb::TableSource::try_from(s.source) {
        Ok(pb::TableSource::Netlink) => "netlink",
        Ok(pb::TableSource::Proc) => "proc",
        Ok(pb::TableSource::Unspecified) => "unknown",
        Err(_) => {
            return Err(invalid(
                "batch.stats.source",
                format!("unknown table source {}", s.source),
            ));
        }
    };
    Ok(CycleAccount {
        source: source.to_owned(),
        dump_us: s.dump_us,
        owner_scan_us: s.owner_scan_us,
        sockets: s.sockets,
        processes_scanned: s.processes_scanned,
        processes_unreadable: s.processes_unreadable,
        processes_vanished: s.processes_vanished,
        sockets_without_owner: s.sockets_without_owner,
        namespaces_read: s.namespaces_read,
        namespaces_skipped: s
            .namespaces_skipped
            .iter()
            .take(LIST_MAX)
            .enumerate()
            .map(|(i, n)| {
                let netns = i64::try_from(n.netns).map_err(|_| {
                    invalid(
                        format!("batch.stats.namespaces_skipped[{i}].netns"),
                        "out of range",
                    )
                })?;
                Ok((netns, sanitise(&n.reason, 256)))
            })
            .collect::<Result<_, _>>()?,
        batches_dropped: s.batches_dropped,
        capabilities_missing: s
            .capabilities_missing
            .iter()
            .take(LIST_MAX)
            .map(|c| sanitise(c, 64))
            .collect(),
        agent_uid: s.agent_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: Vec<u8>, port: u32) -> Option<pb::Endpoint> {
        Some(pb::Endpoint { addr, port })
    }

    fn good_socket() -> pb::Socket {
        pb::Socket {
            netns: 1,
            cookie: Some(42),
            state: pb::TcpState::CloseWait as i32,
            local: ep(vec![10, 0, 0, 1], 80),
            remote: ep(vec![10, 0, 0, 2], 40000),
            inode: 7,
            owners: vec![pb::Owner { pid: 5, fd: 3 }],
            ..Default::default()
        }
    }

    fn batch_with(s: pb::Socket) -> pb::Batch {
        pb::Batch {
            epoch: 1,
            seq: 1,
            taken_at_ms: Utc::now().timestamp_millis(),
            payload: Some(pb::batch::Payload::Full(pb::FullTable { sockets: vec![s] })),
            processes: vec![pb::Process {
                pid: 5,
                start_ticks: 1,
                comm: "na\0me\x07".into(),
                cmdline: "x".repeat(5000),
                cgroup: "/system.slice/billing.service".into(),
                hostname: "billing-7f9c4-x2kq8".into(),
            }],
            ..Default::default()
        }
    }

    fn field_of(b: pb::Batch) -> String {
        batch(&b, &Limits::default())
            .expect_err("must be refused")
            .field
    }

    #[test]
    fn a_good_batch_passes_and_process_names_are_sanitised() {
        let b = batch(&batch_with(good_socket()), &Limits::default()).expect("valid");
        let Payload::Full(s) = b.payload else {
            panic!("full")
        };
        assert_eq!(s[0].state, 8);
        assert_eq!(s[0].owners[0].comm, "na\u{fffd}me\u{fffd}");
        assert_eq!(s[0].owners[0].cmdline.len(), CMDLINE_MAX);
        assert_eq!(s[0].owners[0].service.as_deref(), Some("billing.service"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut s = good_socket();
        s.state = 99;
        assert_eq!(field_of(batch_with(s)), "batch.full.sockets[0].state");
        let mut s = good_socket();
        s.local = ep(vec![1, 2, 3, 4, 5], 80);
        assert_eq!(field_of(batch_with(s)), "batch.full.sockets[0].local.addr");
        let mut s = good_socket();
        s.remote = ep(vec![10, 0, 0, 2], 70000);
        assert_eq!(field_of(batch_with(s)), "batch.full.sockets[0].remote.port");
        let mut s = good_socket();
        s.timer = Some(pb::Timer {
            kind: 0,
            expires_ms: 0,
            retransmits: 0,
        });
        assert_eq!(field_of(batch_with(s)), "batch.full.sockets[0].timer.kind");
        let mut s = good_socket();
        s.owners[0].pid = 6;
        assert_eq!(
            field_of(batch_with(s)),
            "batch.full.sockets[0].owners[0].pid"
        );
        let mut b = batch_with(good_socket());
        b.taken_at_ms = 1000;
        assert_eq!(field_of(b), "batch.taken_at_ms");
        let mut b = batch_with(good_socket());
        b.seq = 0;
        assert_eq!(field_of(b), "batch.seq");
        let mut b = batch_with(good_socket());
        b.payload = None;
        assert_eq!(field_of(b), "batch.payload");
    }

    #[test]
    fn a_skipped_namespace_id_past_i64_is_refused_not_wrapped() {
        let mut b = batch_with(good_socket());
        b.stats = Some(pb::CycleStats {
            source: pb::TableSource::Netlink as i32,
            namespaces_skipped: vec![
                pb::NamespaceSkip {
                    netns: 7,
                    reason: "ok".into(),
                },
                pb::NamespaceSkip {
                    netns: u64::MAX,
                    reason: "wraps".into(),
                },
            ],
            ..Default::default()
        });
        assert_eq!(field_of(b), "batch.stats.namespaces_skipped[1].netns");
    }

    #[test]
    fn oversized_batches_are_refused() {
        let limits = Limits {
            max_sockets_per_batch: 0,
            ..Limits::default()
        };
        let e = batch(&batch_with(good_socket()), &limits).expect_err("too big");
        assert_eq!(e.field, "batch.payload");
    }

    #[test]
    fn a_time_ahead_of_the_collectors_clock_is_refused_past_the_tolerance() {
        let mut b = batch_with(good_socket());
        b.taken_at_ms = Utc::now().timestamp_millis() + DEFAULT_CLOCK_AHEAD_MS / 2;
        assert!(
            batch(&b, &Limits::default()).is_ok(),
            "inside the tolerance"
        );
        // An hour ahead was accepted before (the bound was a day).
        b.taken_at_ms = Utc::now().timestamp_millis() + 3600 * 1000;
        let e = batch(&b, &Limits::default()).expect_err("an hour ahead");
        assert_eq!(e.field, "batch.taken_at_ms");
        assert!(e.reason.contains("ahead of the collector's clock"), "{e}");
    }

    #[test]
    fn only_full_tables_come_in_chunks_and_only_chunk_zero_has_counts() {
        let mut b = batch_with(good_socket());
        b.more_chunks = true;
        b.payload = Some(pb::batch::Payload::Delta(pb::Delta::default()));
        assert_eq!(field_of(b), "batch.chunk");
        let mut b = batch_with(good_socket());
        b.chunk = 1;
        b.stats = Some(pb::CycleStats::default());
        assert_eq!(field_of(b), "batch.chunk");
    }

    #[test]
    fn tuple_keys_are_stable_and_distinct() {
        let a = ("10.0.0.1".parse().expect("ip"), 80);
        let b = ("10.0.0.2".parse().expect("ip"), 4000);
        assert_eq!(tuple_key(a, b, 1), tuple_key(a, b, 1));
        assert_ne!(tuple_key(a, b, 1), tuple_key(b, a, 1));
        assert_ne!(tuple_key(a, b, 1), tuple_key(a, b, 2));
        assert!(tuple_key(a, b, 1) >= 0);
    }
}

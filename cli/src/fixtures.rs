//! Answers for the unit tests, built from the shared `finwait_vocab::answer` types so
//! that they cannot drift from what the collector writes: a field the collector adds or
//! renames breaks these constructors at compile time, not a canned JSON string at run
//! time.

use chrono::{DateTime, Utc};
use finwait_vocab::TcpState;
use finwait_vocab::answer::{Host, Owner, PortRange, Side, Socket};

/// An RFC 3339 time.
pub fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid RFC 3339 in a fixture")
        .with_timezone(&Utc)
}

/// The JSON the collector would send for `value`.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("answers serialise")
}

/// One end of a leak with no process, no service, open, 0 s old.
pub fn side(host: &str, state: TcpState, local: &str, remote: &str) -> Side {
    Side {
        host: host.into(),
        netns: 4_026_531_840,
        pid: None,
        comm: None,
        cmdline: None,
        fd: None,
        service: None,
        container: None,
        state,
        local: local.into(),
        remote: remote.into(),
        since: t("2026-11-23T03:00:00Z"),
        age_s: 0,
        rx_queue: 0,
        until: None,
    }
}

/// A socket with no owner, no service and no timer, open, 0 s old.
pub fn socket(host: &str, state: TcpState, local: &str, remote: &str) -> Socket {
    Socket {
        host: host.into(),
        netns: 4_026_531_840,
        state,
        local: local.into(),
        remote: remote.into(),
        pid: None,
        comm: None,
        cmdline: None,
        fd: None,
        service: None,
        container: None,
        owners: Vec::new(),
        since: t("2026-11-23T03:00:00Z"),
        age_s: 0,
        rx_queue: 0,
        tx_queue: 0,
        inode: 0,
        uid: 0,
        timer: None,
        until: None,
    }
}

/// An owner without a service.
pub fn owner(pid: u32, fd: u32, comm: &str, cmdline: &str) -> Owner {
    Owner {
        pid,
        fd,
        comm: comm.into(),
        cmdline: cmdline.into(),
        service: None,
        container: None,
    }
}

/// `s` held by `owners`, the first of them shown as its process.
pub fn owned(mut s: Socket, owners: Vec<Owner>) -> Socket {
    if let Some(first) = owners.first() {
        s.pid = Some(first.pid);
        s.fd = Some(first.fd);
        s.comm = Some(first.comm.clone());
        s.cmdline = Some(first.cmdline.clone());
        s.inode = 12_345;
    }
    s.owners = owners;
    s
}

/// A host that has not reported yet: no states, no coverage, no pressure.
pub fn host(name: &str) -> Host {
    Host {
        hostname: name.into(),
        machine_id: format!("m-{name}"),
        agent_version: "0.1.0".into(),
        last_seen: None,
        reporting: false,
        labels: Default::default(),
        states: Default::default(),
        ephemeral_ports: PortRange {
            low: 32768,
            high: 60999,
        },
        time_wait_pressure: None,
        coverage: None,
    }
}

//! Who this host is: hostname, machine-id and boot-id by default, each overridable,
//! plus the kernel settings the collector needs to judge what it sees (ephemeral port
//! range, tcp_fin_timeout).

use finwait_proto::v1 as pb;

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Overrides from flags or configuration.
#[derive(Debug, Clone, Default)]
pub struct IdentityOverrides {
    /// Use this hostname instead of the kernel's.
    pub hostname: Option<String>,
    /// Use this machine id instead of /etc/machine-id.
    pub machine_id: Option<String>,
    /// Labels to attach.
    pub labels: Vec<(String, String)>,
}

/// Reads the host's identity; fails only when no machine id can be found or given.
pub fn host_identity(
    o: &IdentityOverrides,
    sample_interval_ms: u32,
) -> Result<pb::HostIdentity, String> {
    let hostname = o
        .hostname
        .clone()
        .or_else(|| read_trimmed("/proc/sys/kernel/hostname"))
        .ok_or("cannot read the hostname; give --hostname")?;
    let machine_id = o
        .machine_id
        .clone()
        .or_else(|| read_trimmed("/etc/machine-id"))
        .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
        .ok_or("no /etc/machine-id; give --machine-id")?;
    let (low, high) = read_trimmed("/proc/sys/net/ipv4/ip_local_port_range")
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    Ok(pb::HostIdentity {
        hostname,
        machine_id,
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        labels: o.labels.iter().cloned().collect(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        ephemeral_port_low: low,
        ephemeral_port_high: high,
        tcp_fin_timeout_s: read_trimmed("/proc/sys/net/ipv4/tcp_fin_timeout")
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
        sample_interval_ms,
    })
}

/// A random identifier for this agent process (kernel UUID generator).
pub fn instance_id() -> String {
    read_trimmed("/proc/sys/kernel/random/uuid").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{now}", std::process::id())
    })
}

/// Parses `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_reads_this_host_and_honours_overrides() {
        let o = IdentityOverrides {
            hostname: Some("h1".into()),
            machine_id: Some("m1".into()),
            labels: vec![("env".into(), "test".into())],
        };
        let id = host_identity(&o, 10_000).expect("identity");
        assert_eq!((id.hostname.as_str(), id.machine_id.as_str()), ("h1", "m1"));
        assert!(id.ephemeral_port_low <= id.ephemeral_port_high);
        assert_eq!(id.labels.get("env").map(String::as_str), Some("test"));
        assert!(!instance_id().is_empty());
        assert_eq!(
            parse_label("a=b=c").expect("label"),
            ("a".into(), "b=c".into())
        );
        assert!(parse_label("novalue").is_err());
    }
}

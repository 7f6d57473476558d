//! A host's coverage: what its agent could not see in its last cycle, why, and the
//! fix, derived from the cycle's stored self-account.

use chrono::{DateTime, Utc};
use finwait_vocab::answer::{Coverage, NamespaceSkip};

use crate::model::CycleAccount;

/// Capabilities that reading other processes' descriptors needs.
const OWNER_CAPS: [&str; 2] = ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];

/// The coverage a cycle's account shows.
pub fn coverage(a: &CycleAccount, at: DateTime<Utc>) -> Coverage {
    let mut problems = Vec::new();
    let lacks = |caps: &[&'static str]| -> Vec<&'static str> {
        caps.iter()
            .copied()
            .filter(|c| a.capabilities_missing.iter().any(|m| m == c))
            .collect()
    };
    if a.processes_unreadable > 0 {
        let missing = lacks(&OWNER_CAPS);
        let why = if missing.is_empty() {
            "access was refused (a security module, or a process in another user or pid \
             namespace); check the agent's audit log"
                .to_owned()
        } else {
            format!(
                "the agent (uid {}) lacks {}: run it as root or grant {} (the systemd unit \
                 and DaemonSet in deploy/ do)",
                a.agent_uid.map_or("?".to_owned(), |u| u.to_string()),
                missing.join(" and "),
                missing.join(" and ")
            )
        };
        let who = if a.processes_unreadable == 1 {
            "1 process's descriptors".to_owned()
        } else {
            format!("{} processes' descriptors", a.processes_unreadable)
        };
        problems.push(format!(
            "{who} could not be read, so their sockets show no owner: {why}"
        ));
    }
    if !a.namespaces_skipped.is_empty() {
        let fix = if lacks(&["CAP_SYS_ADMIN"]).is_empty() {
            String::new()
        } else {
            ": entering a namespace needs CAP_SYS_ADMIN".to_owned()
        };
        let first = &a.namespaces_skipped[0].1;
        problems.push(format!(
            "{} network namespaces were not read (first: {first}){fix}",
            a.namespaces_skipped.len()
        ));
    }
    if a.source == "proc" {
        problems.push(
            "the table came from /proc/net/tcp because netlink sock_diag was refused: no \
             timers, so an orphaned FIN_WAIT2 cannot be told from a half-closed one; load \
             the inet_diag and tcp_diag modules"
                .to_owned(),
        );
    }
    if a.batches_dropped > 0 {
        problems.push(format!(
            "the agent dropped {} batches from its full buffer while the collector was \
             unreachable or slow: sockets that opened and closed in between were never seen; \
             raise --buffer-mib or fix the path to the collector",
            a.batches_dropped
        ));
    }
    Coverage {
        at,
        complete: problems.is_empty(),
        problems,
        source: a.source.clone(),
        processes_scanned: i64::from(a.processes_scanned),
        processes_unreadable: i64::from(a.processes_unreadable),
        processes_vanished: i64::from(a.processes_vanished),
        sockets_without_owner: a.sockets_without_owner as i64,
        namespaces_read: i64::from(a.namespaces_read),
        namespaces_skipped: a
            .namespaces_skipped
            .iter()
            .map(|(netns, reason)| NamespaceSkip {
                netns: *netns,
                reason: reason.clone(),
            })
            .collect(),
        capabilities_missing: a.capabilities_missing.clone(),
        agent_uid: a.agent_uid.map(i64::from),
        dump_ms: a.dump_us as f64 / 1000.0,
        owner_scan_ms: a.owner_scan_us as f64 / 1000.0,
        batches_dropped: a.batches_dropped as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unprivileged_agent_is_told_which_capabilities_it_lacks() {
        let at = Utc::now();
        let full = CycleAccount {
            source: "netlink".into(),
            processes_scanned: 40,
            ..CycleAccount::default()
        };
        let c = coverage(&full, at);
        assert!(c.complete && c.problems.is_empty(), "{c:?}");

        let partial = CycleAccount {
            processes_unreadable: 12,
            capabilities_missing: vec!["CAP_DAC_READ_SEARCH".into(), "CAP_SYS_PTRACE".into()],
            agent_uid: Some(65534),
            namespaces_skipped: vec![(4026532000, "cannot enter: EPERM".into())],
            batches_dropped: 3,
            ..full
        };
        let c = coverage(&partial, at);
        assert!(!c.complete);
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert!(
            c.problems[0].starts_with("12 processes' descriptors could not be read")
                && c.problems[0].contains("uid 65534")
                && c.problems[0].contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
            "{}",
            c.problems[0]
        );
        assert!(
            c.problems[1].contains("cannot enter: EPERM"),
            "{}",
            c.problems[1]
        );
        assert!(
            c.problems[2].contains("dropped 3 batches"),
            "{}",
            c.problems[2]
        );
    }
}

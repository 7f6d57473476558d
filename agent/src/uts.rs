//! The hostname a process sees, when it is not the host's: a container's own UTS
//! namespace carries its hostname, which on Kubernetes is the pod's name, so the
//! collector can name a pod by name rather than by UID.
//!
//! Reading it means entering the namespace (setns, from a short-lived thread, as for
//! network namespaces; needs CAP_SYS_ADMIN), so it is done once per UTS namespace and
//! remembered, failures included.

use std::fs::File;
use std::os::fd::AsFd;

use rustix::thread::LinkNameSpaceType;

use crate::fasthash::IntMap;

/// Hostnames by UTS namespace inode.
#[derive(Debug)]
pub struct UtsNames {
    /// The agent's own UTS namespace: its processes see the host's name (sent as "").
    own: Option<u64>,
    /// Namespace inode → hostname ("" when it could not be read).
    names: IntMap<u64, String>,
}

/// Parses a `uts:[4026531838]` link target.
fn parse_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("uts:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn ns_inode(proc_root: &str, pid: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("{proc_root}/{pid}/ns/uts")).ok()?;
    parse_link(&link.to_string_lossy())
}

impl UtsNames {
    /// Knows the agent's own namespace, nothing else yet.
    pub fn new(proc_root: &str) -> UtsNames {
        UtsNames {
            own: ns_inode(proc_root, "self"),
            names: IntMap::default(),
        }
    }

    /// The hostname process `pid` sees; "" when it is the host's (same namespace) or
    /// cannot be read.
    pub fn hostname_of(&mut self, proc_root: &str, pid: u32) -> String {
        let Some(ns) = ns_inode(proc_root, &pid.to_string()) else {
            return String::new();
        };
        if Some(ns) == self.own {
            return String::new();
        }
        self.names
            .entry(ns)
            .or_insert_with(|| read_in(&format!("{proc_root}/{pid}/ns/uts")).unwrap_or_default())
            .clone()
    }
}

/// Enters the UTS namespace at `path` on a throwaway thread and reads its hostname.
fn read_in(path: &str) -> Option<String> {
    std::thread::scope(|s| {
        s.spawn(|| -> Option<String> {
            let f = File::open(path).ok()?;
            rustix::thread::move_into_link_name_space(
                f.as_fd(),
                Some(LinkNameSpaceType::HostNameAndNISDomainName),
            )
            .ok()?;
            let name = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            Some(name.chars().filter(|c| !c.is_control()).take(64).collect())
        })
        .join()
        .ok()
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_our_own_namespace_is_the_hosts() {
        assert_eq!(parse_link("uts:[4026531838]"), Some(4_026_531_838));
        assert_eq!(parse_link("net:[1]"), None);
        let mut names = UtsNames::new("/proc");
        assert_eq!(names.hostname_of("/proc", std::process::id()), "");
    }
}

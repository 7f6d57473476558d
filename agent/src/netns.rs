//! Network namespaces: which ones are in use (`/proc/*/ns/net`), a container hint for
//! each, and opening a sock_diag socket inside one.
//!
//! A netlink socket belongs to the namespace of the thread that created it, so a
//! dedicated short-lived thread enters the namespace (setns), opens the socket and
//! exits; the socket then serves every later cycle from any thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;

use rustix::thread::LinkNameSpaceType;

use crate::netlink::{DiagSocket, NetlinkError};
use crate::sampler::Namespace;

/// Parses a `net:[4026531840]` link target.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inode of the namespace `/proc/PID/ns/net` (or `self`) points to.
pub fn ns_inode(proc_root: &str, pid: &str) -> std::io::Result<u64> {
    let link = std::fs::read_link(format!("{proc_root}/{pid}/ns/net"))?;
    parse_ns_link(&link.to_string_lossy())
        .ok_or_else(|| std::io::Error::other(format!("unexpected ns link {}", link.display())))
}

/// The cgroup path of a process (unified hierarchy line `0::/PATH`, else the first).
pub fn cgroup_hint(proc_root: &str, pid: u32) -> String {
    let mut text = String::new();
    if File::open(format!("{proc_root}/{pid}/cgroup"))
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return String::new();
    }
    parse_cgroup(&text)
}

/// Picks the cgroup path that names a process's service from `/proc/PID/cgroup` text:
/// the unified hierarchy's (`0::/PATH`), else systemd's v1 hierarchy
/// (`N:name=systemd:/PATH`), else the first other path below the root; `/` when every
/// hierarchy puts it at the root (hybrid hosts often keep the unified one empty).
pub fn parse_cgroup(text: &str) -> String {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?, it.next()?))
        })
        .collect();
    let below_root = |want: &dyn Fn(&str) -> bool| {
        entries
            .iter()
            .find(|(ctl, path)| want(ctl) && *path != "/")
            .map(|(_, path)| (*path).to_owned())
    };
    below_root(&|c| c.is_empty())
        .or_else(|| below_root(&|c| c == "name=systemd"))
        .or_else(|| below_root(&|_| true))
        .or_else(|| entries.first().map(|(_, p)| (*p).to_owned()))
        .unwrap_or_default()
}

/// Every network namespace in use, one entry each (the lowest pid inside it), plus how
/// many processes' namespace links could not be read.
pub fn discover(proc_root: &str, own: u64) -> (Vec<Namespace>, u32) {
    let mut found: BTreeMap<u64, u32> = BTreeMap::new();
    let mut unreadable = 0;
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for ent in dir.flatten() {
            let name = ent.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            match ns_inode(proc_root, &pid.to_string()) {
                Ok(inode) => {
                    let e = found.entry(inode).or_insert(pid);
                    *e = (*e).min(pid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => unreadable += 1,
                Err(_) => {} // exited mid-scan
            }
        }
    }
    found.entry(own).or_insert_with(std::process::id);
    let list = found
        .into_iter()
        .map(|(inode, pid)| Namespace {
            inode,
            pid,
            container_hint: if inode == own {
                String::new()
            } else {
                cgroup_hint(proc_root, pid)
            },
            is_host: inode == own,
        })
        .collect();
    (list, unreadable)
}

/// Opens a sock_diag socket inside the namespace of `pid`, from a dedicated thread.
pub fn open_diag_in(proc_root: &str, pid: u32) -> Result<DiagSocket, String> {
    let path = format!("{proc_root}/{pid}/ns/net");
    std::thread::scope(|s| {
        s.spawn(|| -> Result<DiagSocket, String> {
            let f = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
            rustix::thread::move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| format!("cannot enter {path}: {e}"))?;
            DiagSocket::open().map_err(|e: NetlinkError| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("namespace thread panicked".to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_and_cgroups_parse() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(parse_ns_link("mnt:[1]"), None);
        assert_eq!(
            parse_cgroup("12:cpu:/x\n0::/system.slice/docker-ab12.scope\n"),
            "/system.slice/docker-ab12.scope"
        );
        assert_eq!(parse_cgroup("5:memory:/kubepods/pod1\n"), "/kubepods/pod1");
        assert_eq!(parse_cgroup(""), "");
        // A hybrid host: the unified hierarchy at the root, systemd's v1 one set.
        assert_eq!(
            parse_cgroup(
                "9:name=systemd:/system.slice/nginx.service\n4:memory:/process_api/x\n0::/\n"
            ),
            "/system.slice/nginx.service"
        );
        assert_eq!(parse_cgroup("4:memory:/m\n1:cpu:/\n0::/\n"), "/m");
        assert_eq!(parse_cgroup("1:cpu:/\n0::/\n"), "/");
    }

    #[test]
    fn own_namespace_is_discovered() {
        let own = ns_inode("/proc", "self").expect("read own netns link");
        let (list, _) = discover("/proc", own);
        assert!(list.iter().any(|n| n.inode == own && n.is_host));
    }
}

//! Names the service a process belongs to from its cgroup path: people think in
//! services, not pids.
//!
//! Recognised, innermost first: a container (Docker, containerd, CRI-O, Podman: by
//! the runtime's scope name or a bare 64-hex id), inside a Kubernetes pod (the pod UID
//! from `pod<uid>` in the kubepods hierarchy, cgroupfs or systemd driver); else the
//! innermost systemd unit (`.service`, then `.scope`, then a `.slice`). Both cgroup v1
//! (the agent picks the `name=systemd` hierarchy) and v2 paths have this shape.

/// What a cgroup path says about its process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceName {
    /// The service: `nginx.service`, `pod/<uid>`, `docker/<id>`; `None` at the root.
    pub service: Option<String>,
    /// The container's short id (12 hex digits), when in a container.
    pub container: Option<String>,
}

/// Container ids are shown as their first 12 hex digits, as `docker ps` does.
const SHORT_ID: usize = 12;

/// Names the service of a cgroup path (`/system.slice/nginx.service`). Segments are
/// taken without surrounding whitespace, which nobody can see on a page or type into a
/// filter; a blank one is skipped (found by the ingest fuzz target).
pub fn name(cgroup: &str) -> ServiceName {
    let segs: Vec<&str> = cgroup
        .split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if segs.is_empty() {
        return ServiceName::default();
    }
    let container = segs.iter().rev().find_map(|s| container_id(s));
    let pod = segs.iter().rev().find_map(|s| pod_uid(s));
    if let Some(uid) = pod {
        return ServiceName {
            service: Some(format!("pod/{uid}")),
            container: container.map(|(_, id)| id),
        };
    }
    if let Some((runtime, id)) = container {
        return ServiceName {
            service: Some(format!("{runtime}/{id}")),
            container: Some(id),
        };
    }
    let unit = |suffix: &str| {
        segs.iter()
            .rev()
            .find(|s| s.ends_with(suffix) && s.len() > suffix.len() && **s != "-.slice")
            .map(|s| (*s).to_owned())
    };
    let service = unit(".service")
        .or_else(|| unit(".scope"))
        .or_else(|| unit(".slice"))
        .or_else(|| segs.last().map(|s| (*s).to_owned()));
    ServiceName {
        service,
        container: None,
    }
}

/// Names a process's service from its cgroup path and the hostname it sees (its UTS
/// namespace's, sent only when it is not the host's): a Kubernetes pod is named by that
/// hostname, which is the pod's name, rather than by its UID. Only a hostname that can
/// be a pod's name (letters, digits, `-`, `.`, `_`) renames it: anything else (a `/`,
/// spaces, control characters made U+FFFD) would make a name that is not one name, and
/// the UID is kept (found by the ingest fuzz target).
pub fn name_process(cgroup: &str, hostname: &str) -> ServiceName {
    let mut named = name(cgroup);
    if is_pod_name(hostname)
        && named
            .service
            .as_deref()
            .is_some_and(|s| s.starts_with("pod/"))
    {
        named.service = Some(format!("pod/{hostname}"));
    }
    named
}

/// True when `s` can be a Kubernetes pod's name (a DNS subdomain; `_` tolerated).
fn is_pod_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `(runtime, short id)` of a container's cgroup segment.
fn container_id(seg: &str) -> Option<(&'static str, String)> {
    let base = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("containerd-", "containerd"),
        ("docker-", "docker"),
        ("crio-", "crio"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = base.strip_prefix(prefix).filter(|id| is_hex_id(id)) {
            return Some((runtime, id[..SHORT_ID].to_owned()));
        }
    }
    is_hex_id(base).then(|| ("container", base[..SHORT_ID].to_owned()))
}

/// A full container id: 64 hex digits.
fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID of a kubepods segment: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _>.slice` (systemd).
fn pod_uid(seg: &str) -> Option<String> {
    let base = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = base.rfind("pod")?;
    if at > 0 && !base.starts_with("kubepods") {
        return None;
    }
    let uid = base[at + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f5d0a9e3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e";
    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

    fn svc(service: &str, container: Option<&str>) -> ServiceName {
        ServiceName {
            service: Some(service.to_owned()),
            container: container.map(str::to_owned),
        }
    }

    #[test]
    fn golden_cgroup_paths_name_their_service() {
        let uid_ = UID.replace('-', "_");
        let short = &ID[..12];
        let cases: Vec<(String, ServiceName)> = vec![
            // systemd, cgroup v2 and the v1 name=systemd hierarchy look alike.
            (
                "/system.slice/nginx.service".into(),
                svc("nginx.service", None),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/billing.service".into(),
                svc("billing.service", None),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                svc("session-3.scope", None),
            ),
            ("/system.slice".into(), svc("system.slice", None)),
            ("/init.scope".into(), svc("init.scope", None)),
            // Docker: systemd driver (v2) and cgroupfs driver (v1).
            (
                format!("/system.slice/docker-{ID}.scope"),
                svc(&format!("docker/{short}"), Some(short)),
            ),
            (
                format!("/docker/{ID}"),
                svc(&format!("container/{short}"), Some(short)),
            ),
            // Podman and containerd without Kubernetes.
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                svc(&format!("podman/{short}"), Some(short)),
            ),
            (
                format!("/system.slice/containerd.service/default/{ID}"),
                svc(&format!("container/{short}"), Some(short)),
            ),
            // Kubernetes, systemd driver, containerd and CRI-O (v2).
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                svc(&format!("pod/{UID}"), Some(short)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                svc(&format!("pod/{UID}"), Some(short)),
            ),
            // Kubernetes, cgroupfs driver (v1 controllers).
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                svc(&format!("pod/{UID}"), Some(short)),
            ),
            // The pod's sandbox-level cgroup alone: a pod, no container.
            (
                format!("/kubepods/pod{UID}"),
                svc(&format!("pod/{UID}"), None),
            ),
            // Anything else: the innermost directory, as the cgroup is named.
            ("/process_api/batch-7".into(), svc("batch-7", None)),
        ];
        for (path, want) in cases {
            assert_eq!(name(&path), want, "{path}");
        }
        assert_eq!(name("/"), ServiceName::default());
        assert_eq!(name(""), ServiceName::default());
        // Near misses are not containers or pods.
        assert_eq!(
            name("/system.slice/docker-abc.scope"),
            svc("docker-abc.scope", None)
        );
        assert_eq!(
            name("/system.slice/ipod-player.service"),
            svc("ipod-player.service", None)
        );
    }

    #[test]
    fn a_pod_is_named_by_the_hostname_its_containers_see() {
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            name_process(&path, "billing-7f9c4-x2kq8"),
            svc("pod/billing-7f9c4-x2kq8", Some(&ID[..12]))
        );
        assert_eq!(name_process(&path, ""), name(&path));
        // A hostname that cannot be a pod's name keeps the UID: the service stays one
        // name (a `/`, spaces and replaced control characters came from the fuzzer).
        for bad in ["a/b", " ", "web 1", "web\u{fffd}1", "pod/x"] {
            assert_eq!(name_process(&path, bad), name(&path), "{bad:?}");
        }
        // Padding is not part of a name; a blank segment is no segment.
        assert_eq!(
            name("/system.slice/ \u{fffd}web.service "),
            svc("\u{fffd}web.service", None)
        );
        assert_eq!(name("/system.slice/ / "), svc("system.slice", None));
        // Outside a pod the hostname does not rename anything.
        assert_eq!(
            name_process("/system.slice/nginx.service", "web-1"),
            svc("nginx.service", None)
        );
    }
}

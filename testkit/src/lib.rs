//! Test and benchmark support for finwait: throwaway network namespaces, the root
//! check every privileged test starts with, and paths to the workspace's binaries.
//!
//! Real sockets in real states are made by the `finwait-sockpop` binary of this crate,
//! started inside a namespace with [`NetNs::command`]. Pages are tested in a real
//! headless Chromium ([`browser`]); screenshots go to [`artifacts_dir`].

pub mod browser;
pub mod promtool;

pub use browser::{
    Browser, Cookie, Element, SKIP_BROWSER_ENV, require_browser, require_browser_in,
};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Environment variable that opts out of tests needing root (ignored under CI).
pub const SKIP_ROOT_ENV: &str = "FINWAIT_SKIP_ROOT_TESTS";

/// What a privileged test should do on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Running as root: go ahead.
    Root,
    /// Not root and explicitly opted out (never under CI): skip, saying so.
    OptedOut,
}

/// Checks that the test can create network namespaces. Without root it fails with
/// instructions, unless [`SKIP_ROOT_ENV`] is set outside CI.
pub fn require_root(test: &str) -> Privilege {
    if rustix::process::geteuid().is_root() {
        return Privilege::Root;
    }
    if !under_ci() && std::env::var_os(SKIP_ROOT_ENV).is_some() {
        eprintln!("SKIPPED {test}: needs root, and {SKIP_ROOT_ENV} opts out");
        return Privilege::OptedOut;
    }
    panic!(
        "{test} needs root (it creates network namespaces and reads every process's \
         descriptors): run the tests as root (sudo -E cargo test --workspace), or set \
         {SKIP_ROOT_ENV}=1 to skip them explicitly (not allowed under CI)"
    );
}

/// Whether CI is running us (`CI=true`), where no test may opt out.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The profile directory of the running test: target/<profile>/deps/<test> →
/// target/<profile>.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    exe.parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .map(PathBuf::from)
        .context("test executable has no parent directory")
}

/// Where tests leave files for people to look at (screenshots of each page):
/// `test-artifacts/` in the target directory the tests were built in (`target/`, or
/// `$CARGO_TARGET_DIR`), created if missing. Files are overwritten on each run.
pub fn artifacts_dir() -> Result<PathBuf> {
    let profile = profile_dir()?;
    let target = profile.parent().unwrap_or(&profile);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Path of a binary built in the same target directory as the running test.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = profile_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run the tests with `cargo test --workspace` (or build it with \
             `cargo build --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `systemd-analyze verify` on a unit file: `Err` with what it said when it fails
/// or complains at all.
pub fn systemd_verify(unit: &std::path::Path) -> std::result::Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .map_err(|e| format!("systemd-analyze verify (apt-get install systemd): {e}"))?;
    let complaints = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && complaints.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("systemd-analyze verify:\n{complaints}"))
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetNs {
    /// Creates `fw-<tag>-<pid>-<n>` with its loopback up.
    pub fn create(tag: &str) -> Result<NetNs> {
        let name = format!(
            "fw-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, as `ip netns` keeps it; opened, it is a handle a
    /// thread can `setns` into.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Sets a per-namespace sysctl (`net.ipv4.tcp_fin_timeout` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self
            .command("sh")
            .args(["-c", &format!("echo '{value}' > {path}")]))?;
        Ok(())
    }

    /// The namespace's inode, as the agent labels sockets.
    pub fn inode(&self) -> Result<u64> {
        let out = self.output("stat", &["-L", "-c", "%i", "/proc/self/ns/net"])?;
        out.trim().parse().context("parsing namespace inode")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A private test LAN: a "router" namespace holding a bridge (10.77.0.1/24,
/// fd77::1/64) and host namespaces attached to it by veth pairs, host `i` at
/// 10.77.0.(10+i) and fd77::(10+i). Every test gets its own bridge, so the same
/// addresses never meet across tests. Deleted on drop (hosts first).
#[derive(Debug)]
pub struct Lan {
    hosts: Vec<NetNs>,
    router: NetNs,
}

impl Lan {
    /// Creates the router and `n` hosts.
    pub fn create(tag: &str, n: usize) -> Result<Lan> {
        let router = NetNs::create(&format!("{tag}-r"))?;
        let r = router.name().to_owned();
        run(Command::new("ip").args(["-n", &r, "link", "add", "br0", "type", "bridge"]))?;
        run(Command::new("ip").args(["-n", &r, "link", "set", "br0", "up"]))?;
        run(Command::new("ip").args(["-n", &r, "addr", "add", "10.77.0.1/24", "dev", "br0"]))?;
        run(Command::new("ip").args([
            "-n",
            &r,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            "br0",
            "nodad",
        ]))?;
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let h = NetNs::create(&format!("{tag}-h{i}"))?;
            let port = format!("v{i}");
            run(Command::new("ip").args([
                "-n",
                &r,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                h.name(),
            ]))?;
            run(Command::new("ip").args(["-n", &r, "link", "set", &port, "master", "br0", "up"]))?;
            let (v4, v6) = (Lan::v4(i), Lan::v6(i));
            let ip = |args: &[&str]| {
                let mut c = Command::new("ip");
                c.args(["-n", h.name()]).args(args);
                run(&mut c)
            };
            ip(&["link", "set", "eth0", "up"])?;
            ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            hosts.push(h);
        }
        // IPv6 addresses stay tentative until the link has carrier: wait for them, or a
        // bind right after would fail with EADDRNOTAVAIL.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for ns in hosts.iter().chain(std::iter::once(&router)) {
            loop {
                let tentative = run(Command::new("ip").args([
                    "-n",
                    ns.name(),
                    "-6",
                    "addr",
                    "show",
                    "tentative",
                ]))?;
                if tentative.trim().is_empty() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "IPv6 addresses in {} stay tentative: {tentative}",
                        ns.name()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(Lan { hosts, router })
    }

    /// The router namespace (holds the bridge and 10.77.0.1 / fd77::1).
    pub fn router(&self) -> &NetNs {
        &self.router
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &NetNs {
        &self.hosts[i]
    }

    /// Host `i`'s IPv4 address.
    pub fn v4(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 77, 0, 10 + i as u8)
    }

    /// Host `i`'s IPv6 address.
    pub fn v6(i: usize) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 10 + i as u16)
    }

    /// Whether `ip` is in the ranges test LANs take their addresses from (10.77.0.0/16,
    /// fd77::/16): private ranges that exist only inside test namespaces.
    pub fn owns(ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(a) => a.octets()[..2] == [10, 77],
            std::net::IpAddr::V6(a) => a.segments()[0] == 0xfd77,
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.hosts.clear();
    }
}

/// A running `finwait-sockpop` and the manifest line it printed; it ends (stdin
/// closed, then waited for) on drop or [`Sockpop::end`].
#[derive(Debug)]
pub struct Sockpop {
    child: std::process::Child,
    /// The manifest (JSON) the population printed once ready.
    pub manifest: serde_json::Value,
}

impl Sockpop {
    /// Starts `finwait-sockpop --max-seconds 300 ARGS` inside `ns` (or here) and waits
    /// for its manifest.
    pub fn start(ns: Option<&NetNs>, args: &[&str]) -> Result<Sockpop> {
        use std::io::BufRead;
        let bin = workspace_bin("finwait-sockpop")?;
        let mut cmd = match ns {
            Some(ns) => ns.command(&bin),
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(["--max-seconds", "300"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting finwait-sockpop")?;
        let mut line = String::new();
        let out = child.stdout.take().context("sockpop stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
        let manifest = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("finwait-sockpop {args:?} printed no manifest ({status}, {e}): {line:?}");
            }
        };
        Ok(Sockpop { child, manifest })
    }

    /// The population's pid.
    pub fn pid(&self) -> u32 {
        self.manifest["pid"].as_u64().unwrap_or(0) as u32
    }

    /// Ends it and waits until its sockets are gone.
    pub fn end(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Sockpop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cgroup made for one test (as a systemd transient unit would be), removed on drop.
///
/// It is made in the unified (v2) hierarchy, or in systemd's v1 one on hosts without a
/// v2 mount, which are the two hierarchies the agent reads a process's service from.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    root: PathBuf,
    path: String,
}

impl Cgroup {
    /// Creates `/NAME` (e.g. `finwait-it.slice/leaky-42.service`, its parents too).
    pub fn create(name: &str) -> Result<Cgroup> {
        let root = [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .context("no writable cgroup hierarchy under /sys/fs/cgroup (is cgroupfs mounted?)")?;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cgroup {} (needs root)", dir.display()))?;
        Ok(Cgroup {
            dir,
            root,
            path: format!("/{name}"),
        })
    }

    /// The cgroup's path as `/proc/PID/cgroup` shows it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.dir.display()))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed: move any left back to the root.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let mut dir = self.dir.as_path();
        while dir != self.root && std::fs::remove_dir(dir).is_ok() {
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }
}

/// A scratch directory under the system's temporary directory (`/tmp`: reachable by
/// unprivileged users, which the embedded PostgreSQL and an agent run as `nobody`
/// need), removed on drop, also when the test fails.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `finwait-<tag>-<pid>-<n>` with mode 0755.
    pub fn new(tag: &str) -> Result<TempDir> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "finwait-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(TempDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

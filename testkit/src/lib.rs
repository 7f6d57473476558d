//! Test and benchmark support for finwait: throwaway network namespaces, the root
//! check every privileged test starts with, and paths to the workspace's binaries.
//!
//! Real sockets in real states are made by the `finwait-sockpop` binary of this crate,
//! started inside a namespace with [`NetNs::command`].

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
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !ci && std::env::var_os(SKIP_ROOT_ENV).is_some() {
        eprintln!("SKIPPED {test}: needs root, and {SKIP_ROOT_ENV} opts out");
        return Privilege::OptedOut;
    }
    panic!(
        "{test} needs root (it creates network namespaces and reads every process's \
         descriptors): run the tests as root (sudo -E cargo test --workspace), or set \
         {SKIP_ROOT_ENV}=1 to skip them explicitly (not allowed under CI)"
    );
}

/// Path of a binary built in the same target directory as the running test.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .context("test executable has no parent directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run the tests with `cargo test --workspace` (or build it with \
             `cargo build --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
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

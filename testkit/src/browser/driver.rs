//! The chromedriver process: found on this machine, started on a port it picks (in
//! this network namespace or a test's), and killed with every Chromium process it
//! started.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::NetNs;

use super::START_TIMEOUT;

/// What to do when either is missing.
pub(super) const INSTALL_HINT: &str = "install them with `apt-get install chromium \
    chromium-driver` (.ci/run does this on a fresh machine)";

/// Debian's real Chromium binary first: `/usr/bin/chromium` is a shell wrapper that
/// sources `/etc/chromium.d` and adds flags of its own (remote extensions, GPU
/// rasterisation), which a test browser does not want.
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/// Numbers each browser's directory within this test process.
static PROFILES: AtomicU32 = AtomicU32::new(0);

/// The chromedriver child and the directory its browser writes to.
#[derive(Debug)]
pub(super) struct Driver {
    /// Where chromedriver listens (127.0.0.1, the port it chose), in `netns`.
    pub(super) addr: SocketAddr,
    /// The network namespace chromedriver and its Chromium run in, when not ours:
    /// its loopback is not ours, so each command connects from a thread that entered
    /// it. Held open, so the namespace outlives its name while the browser runs.
    netns: Option<File>,
    /// Leads its own process group, which its Chromium processes join; the group
    /// (id: its pid) is killed on drop, so no browser outlives the test even when a
    /// session never opened or could not be closed.
    child: Child,
    /// Fresh per browser, removed on drop: `profile/` is the `--user-data-dir`,
    /// `config/` and `cache/` the XDG homes (Chromium's crash database lands there
    /// rather than in the user's ~/.config).
    pub(super) dir: PathBuf,
}

/// What of Chromium and chromedriver is missing on this machine, if anything.
pub(super) fn missing_programs() -> Option<String> {
    let mut missing = Vec::new();
    if chromium_binary().is_none() {
        missing.push("chromium");
    }
    if on_path("chromedriver").is_none() {
        missing.push("chromedriver");
    }
    (!missing.is_empty()).then(|| format!("{} not found", missing.join(" and ")))
}

pub(super) fn chromium_binary() -> Option<PathBuf> {
    CHROMIUM.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl Driver {
    /// Starts chromedriver on a port of its choosing, inside `ns` when given (through
    /// `ip netns exec`, which execs it, so the pid is chromedriver's), and waits until
    /// it says which port.
    pub(super) fn start(ns: Option<&NetNs>) -> Result<Driver> {
        let program = on_path("chromedriver")
            .with_context(|| format!("chromedriver not found: {INSTALL_HINT}"))?;
        let dir = std::env::temp_dir().join(format!(
            "finwait-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["profile", "config", "cache"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let netns = ns
            .map(|ns| File::open(ns.path()).with_context(|| format!("opening {ns:?}")))
            .transpose()?;
        let mut command = match ns {
            Some(ns) => ns.command(&program),
            None => Command::new(&program),
        };
        let mut child = command
            .arg("--port=0")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("chromedriver stdout")?;
        // Owned from here, so an early return below still kills it and removes the profile.
        let mut driver = Driver {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            netns,
            child,
            dir,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads until chromedriver exits, so its stdout never fills up.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = started_port(&line) {
                        driver.addr.set_port(port);
                        return Ok(driver);
                    }
                    said.push(line);
                }
                Err(e) => bail!(
                    "chromedriver did not report its port ({e}); it said: {}",
                    said.join(" / ")
                ),
            }
        }
    }
}

impl Driver {
    /// A connection to chromedriver, made inside its network namespace: `setns`
    /// moves only the calling thread, so a short-lived thread enters it and connects,
    /// and the socket stays in that namespace after the thread is gone.
    pub(super) fn connect(&self, timeout: Duration) -> Result<TcpStream> {
        let addr = self.addr;
        let dial = move || {
            TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("connecting to chromedriver at {addr}"))
        };
        let Some(ns) = &self.netns else {
            return dial();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                    .context("entering chromedriver's network namespace")?;
                dial()
            })
            .join()
            .unwrap_or_else(|_| bail!("the thread connecting to chromedriver panicked"))
        })
    }
}

/// The port in chromedriver's "ChromeDriver was started successfully on port N." line.
fn started_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim_end_matches(['.', ' ', '\r']).parse().ok()
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The child is not reaped yet, so its pid (the group's id) cannot be reused.
        let group = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromedriver_port_line_is_read() {
        let line = "ChromeDriver was started successfully on port 36793.";
        assert_eq!(started_port(line), Some(36793));
        assert_eq!(started_port("Starting ChromeDriver 156 on port 0"), None);
    }
}

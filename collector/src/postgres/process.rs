//! The postmaster as our child process: started in its own process group (a terminal's
//! Ctrl-C reaches only the collector, which stops the server after its own graceful
//! shutdown), ready when postmaster.pid says so and its socket accepts, stopped with a
//! fast shutdown that escalates to immediate and then to SIGKILL.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tracing::{debug, info, warn};

use super::datadir::Layout;
use super::error::{EmbeddedError, io_err};
use super::lockfile;
use super::log;
use super::user::ServerUser;

/// How long a start may take until the server accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before we escalate to an immediate one.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown (SIGQUIT) may take before SIGKILL.
pub(super) const HALT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often we look at a process we wait for.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// A running postmaster; dropping it stops the server (prefer [`Postmaster::stop`],
/// which reports failures).
#[derive(Debug)]
pub(super) struct Postmaster {
    /// The postmaster, None once stopped; we own its lifetime.
    child: Option<Child>,
    /// The cluster directory, for errors and logs.
    pgdata: PathBuf,
    /// Server log, quoted in errors.
    log: PathBuf,
}

/// Starts the server on an initialised cluster, on `port` or, when 0, on a free
/// loopback port (picked again if another process takes it first); returns it and the
/// port.
pub(super) fn start(
    bin_dir: &Path,
    user: &ServerUser,
    layout: &Layout,
    port: u16,
    listen_tcp: bool,
) -> Result<(Postmaster, u16), EmbeddedError> {
    let mut attempt = 1;
    loop {
        let chosen = match port {
            0 => free_port()?,
            p => p,
        };
        match Postmaster::launch(bin_dir, user, layout, chosen, listen_tcp) {
            // A port we picked can be taken before postgres binds it.
            Err(EmbeddedError::Start { log_tail, .. })
                if port == 0 && attempt < 3 && log_tail.contains("Address already in use") =>
            {
                warn!(
                    port = chosen,
                    "picked port was taken before postgresql bound it, retrying"
                );
                attempt += 1;
            }
            result => return Ok((result?, chosen)),
        }
    }
}

impl Postmaster {
    /// Spawns the postmaster and waits until it is ready.
    fn launch(
        bin_dir: &Path,
        user: &ServerUser,
        layout: &Layout,
        port: u16,
        listen_tcp: bool,
    ) -> Result<Self, EmbeddedError> {
        let log_file = log::open(&layout.log)?;
        let log_err = log_file.try_clone().map_err(io_err("open", &layout.log))?;
        let postgres = bin_dir.join("postgres");
        let mut cmd = user.command(&postgres, &layout.root);
        cmd.arg("-D")
            .arg(&layout.pgdata)
            .arg("-k")
            .arg(layout.quoted_socket_dir()?)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(if listen_tcp {
                "listen_addresses=127.0.0.1"
            } else {
                "listen_addresses="
            })
            .arg("-c")
            .arg("fsync=on")
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0);
        let child = cmd.spawn().map_err(io_err("run", &postgres))?;
        let mut server = Postmaster {
            child: Some(child),
            pgdata: layout.pgdata.clone(),
            log: layout.log.clone(),
        };
        server.wait_ready(&layout.socket(port))?;
        Ok(server)
    }

    /// Reaps the postmaster if it has exited (killed, crashed, stopped by someone
    /// else) and says how; None while it runs. A stopped (SIGSTOP) server still runs.
    pub(super) fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let how = match child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => return None,
            Err(e) => format!("cannot wait for it: {e}"),
        };
        self.child = None;
        Some(how)
    }

    /// The postmaster's pid while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fast shutdown (SIGINT: active transactions are rolled back), waiting up to 30 s;
    /// past that the server is halted and an error returned.
    pub(super) fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        if let Some(status) = child.try_wait().map_err(io_err("wait for", &self.pgdata))? {
            return self.stopped(status, "postgres had already exited");
        }
        signal(&child, Signal::INT);
        match wait_until(&mut child, Instant::now() + STOP_TIMEOUT) {
            Ok(Some(status)) => self.stopped(status, "postgres exited"),
            Ok(None) => {
                warn!(
                    pid,
                    "embedded postgresql fast shutdown timed out, halting it"
                );
                halt(&mut child);
                Err(self.stop_error("fast shutdown did not finish within 30 s".into()))
            }
            Err(e) => {
                halt(&mut child);
                Err(io_err("wait for", &self.pgdata)(e))
            }
        }
    }

    fn stopped(&self, status: ExitStatus, what: &str) -> Result<(), EmbeddedError> {
        if status.success() {
            info!(pgdata = %self.pgdata.display(), "embedded postgresql stopped");
            Ok(())
        } else {
            Err(self.stop_error(format!("{what} with {status}")))
        }
    }

    fn stop_error(&self, reason: String) -> EmbeddedError {
        EmbeddedError::Stop {
            reason,
            log: self.log.clone(),
            log_tail: log::tail(&self.log),
        }
    }

    /// Polls until the postmaster reports `ready` in postmaster.pid (as `pg_ctl -w` does)
    /// and its socket accepts a connection; halts it on failure.
    fn wait_ready(&mut self, socket_path: &Path) -> Result<(), EmbeddedError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let reason = loop {
            match child.try_wait() {
                Ok(Some(status)) => break format!("postgres exited with {status}"),
                Ok(None) => {}
                Err(e) => break format!("cannot wait for postgres: {e}"),
            }
            if lockfile::postmaster_ready(&self.pgdata, child.id())
                && UnixStream::connect(socket_path).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!(
                    "not accepting connections on {} within 30 s",
                    socket_path.display()
                );
            }
            std::thread::sleep(POLL);
        };
        halt(child);
        self.child = None;
        Err(EmbeddedError::Start {
            reason,
            log: self.log.clone(),
            log_tail: log::tail(&self.log),
        })
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(error = %e, "embedded postgresql did not stop cleanly");
        }
    }
}

/// A free loopback port, released for postgres to bind (another process may take it in
/// between; unlikely enough for a default and for tests).
fn free_port() -> Result<u16, EmbeddedError> {
    let here = Path::new("127.0.0.1:0");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind", here))?;
    let port = listener.local_addr().map_err(io_err("bind", here))?.port();
    Ok(port)
}

fn signal(child: &Child, sig: Signal) {
    if let Err(e) = rustix::process::kill_process(Pid::from_child(child), sig) {
        debug!(pid = child.id(), error = %e, "cannot signal postgres");
    }
}

/// Waits for `child` until `deadline`; None if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Immediate shutdown (SIGQUIT: the next start runs crash recovery), SIGKILL if that
/// does not finish in 5 s; best effort, always reaps the child.
fn halt(child: &mut Child) {
    signal(child, Signal::QUIT);
    if matches!(
        wait_until(child, Instant::now() + HALT_TIMEOUT),
        Ok(Some(_))
    ) {
        return;
    }
    warn!(
        pid = child.id(),
        "embedded postgresql ignored SIGQUIT, killing it"
    );
    let _ = child.kill();
    let _ = child.wait();
}

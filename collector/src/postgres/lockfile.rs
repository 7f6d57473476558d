//! Lock-file forensics: what `postmaster.pid` (written by postgres) and `owner.pid`
//! (written by us: the process that started the server) say about a cluster before we
//! start it, so that a server orphaned by a killed collector is taken over while one
//! that another live process runs is left alone.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tracing::{info, warn};

use super::datadir::Layout;
use super::error::{EmbeddedError, io_err};
use super::process::{HALT_TIMEOUT, POLL, STOP_TIMEOUT};

/// Records this process as the one that started the server: a later start uses it to
/// tell an orphan (its collector was killed) from a server another live process runs.
pub(super) fn record_owner(layout: &Layout) -> Result<(), EmbeddedError> {
    fs::write(&layout.owner_file, std::process::id().to_string())
        .map_err(io_err("write", &layout.owner_file))
}

/// Refuses to start when a live postmaster that another live process runs holds the
/// cluster. An orphaned postmaster (the process that started it, recorded in
/// `owner.pid`, is gone, as after a SIGKILL of the collector) is shut down so that this
/// start can take over. A pid file naming a dead process is left for postgres, which
/// removes it itself; one naming a live process that is not postgres (pid reuse,
/// typically in a restarted container) is removed here, since postgres would refuse
/// it. Postgres's shared-memory interlock remains a backstop.
pub(super) fn check(layout: &Layout) -> Result<(), EmbeddedError> {
    let pgdata = &layout.pgdata;
    let path = pgdata.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    // A standalone backend writes its pid negated; malformed files are postgres's call.
    let Some(raw) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    let Some(pid) = Pid::from_raw(raw.saturating_abs()) else {
        return Ok(());
    };
    // EPERM also means alive.
    if rustix::process::test_kill_process(pid) == Err(Errno::SRCH) {
        info!(
            pid = raw,
            "stale postmaster.pid from an earlier run, postgres will replace it"
        );
        return Ok(());
    }
    let comm = fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_pid()));
    if let Ok(comm) = comm
        && !matches!(comm.trim(), "postgres" | "postmaster")
    {
        warn!(
            pid = raw,
            process = comm.trim(),
            "postmaster.pid names a live process that is not postgres, removing it"
        );
        return fs::remove_file(&path).map_err(io_err("remove", &path));
    }
    if is_orphan(pid, &layout.owner_file) {
        warn!(
            pid = raw,
            "postgresql left running by a collector that died; shutting it down to take over"
        );
        stop_orphan(pid, pgdata)?;
        return Ok(());
    }
    Err(EmbeddedError::AlreadyRunning {
        pgdata: pgdata.to_path_buf(),
        pid: raw,
    })
}

/// Whether postmaster.pid names `pid` and says `ready` (line 8, as `pg_ctl -w` reads it).
pub(super) fn postmaster_ready(pgdata: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// True when the postmaster's recorded owner is dead or is not its parent.
fn is_orphan(postmaster: Pid, owner_file: &Path) -> bool {
    let owner = fs::read_to_string(owner_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .and_then(Pid::from_raw);
    let Some(owner) = owner else {
        return false;
    };
    if rustix::process::test_kill_process(owner) == Err(Errno::SRCH) {
        return true;
    }
    let ppid = fs::read_to_string(format!("/proc/{}/stat", postmaster.as_raw_pid()))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s.get(i + 2..)).map(str::to_owned))
        .and_then(|rest| rest.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok()));
    ppid.is_some_and(|p| p != owner.as_raw_pid())
}

/// True while `pid` runs (a zombie waiting for its reaper counts as gone).
fn running(pid: Pid) -> bool {
    if rustix::process::test_kill_process(pid) == Err(Errno::SRCH) {
        return false;
    }
    let state = fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_pid()))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3))
                .map(str::to_owned)
        });
    state.as_deref() != Some("Z")
}

/// Fast shutdown of an orphaned postmaster, escalating to immediate.
fn stop_orphan(pid: Pid, pgdata: &Path) -> Result<(), EmbeddedError> {
    for (sig, wait) in [(Signal::INT, STOP_TIMEOUT), (Signal::QUIT, HALT_TIMEOUT)] {
        let _ = rustix::process::kill_process(pid, sig);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !running(pid) {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }
    Err(EmbeddedError::AlreadyRunning {
        pgdata: pgdata.to_path_buf(),
        pid: pid.as_raw_pid(),
    })
}

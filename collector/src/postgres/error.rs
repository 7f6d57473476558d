//! [`EmbeddedError`]: why the embedded server could not be started or stopped.

use std::io;
use std::path::{Path, PathBuf};

/// Why the embedded server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with both `initdb` and `postgres` was found.
    #[error(
        "postgresql server binaries (initdb, postgres) not found in {searched}; install the \
         debian package `postgresql` (apt-get install postgresql) or configure the bin dir"
    )]
    BinariesMissing {
        /// The directories searched, comma separated.
        searched: String,
    },
    /// A file-system or process operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The file, directory or program concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The options cannot work (e.g. the socket path is too long).
    #[error("invalid embedded postgresql options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// initdb exited unsuccessfully.
    #[error("initdb failed for {} ({status}): {stderr}", pgdata.display())]
    Initdb {
        /// The cluster directory.
        pgdata: PathBuf,
        /// initdb's exit status.
        status: String,
        /// The end of initdb's standard error.
        stderr: String,
    },
    /// Another live postmaster already serves this cluster.
    #[error(
        "postgresql (pid {pid}) is already running on {}; stop it first, e.g. pg_ctl stop -D {}",
        pgdata.display(), pgdata.display()
    )]
    AlreadyRunning {
        /// The cluster directory.
        pgdata: PathBuf,
        /// The pid in its postmaster.pid.
        pid: i32,
    },
    /// The server exited or did not become ready in time.
    #[error("postgresql did not start: {reason}; end of {}:\n{log_tail}", log.display())]
    Start {
        /// What went wrong.
        reason: String,
        /// The server log.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The server did not stop cleanly (it has been halted all the same).
    #[error("postgresql did not stop cleanly: {reason}; end of {}:\n{log_tail}", log.display())]
    Stop {
        /// What went wrong.
        reason: String,
        /// The server log.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The server cannot run as the chosen user.
    #[error("cannot run postgresql as {user}: {reason}")]
    User {
        /// The user name (or uid).
        user: String,
        /// Why not.
        reason: String,
    },
}

/// Wraps an I/O error with what was being done to which path (for `map_err`).
pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

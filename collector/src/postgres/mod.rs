//! The embedded default PostgreSQL: when no database URL is configured, the collector
//! runs its own server from the locally installed binaries (Debian's
//! /usr/lib/postgresql/VERSION/bin), with the cluster in `DATA_DIR/pgdata` and its
//! unix socket in `DATA_DIR/run`, and stops it on shutdown; the next start reuses the
//! cluster. Tests use the same code to start one throwaway cluster per test binary.
//!
//! One job per file: `binaries` finds the programs, `user` picks the account the server
//! runs as (never root), `datadir` lays out and initialises the data directory,
//! `lockfile` judges a cluster someone may still be running, `process` starts and stops
//! the postmaster, `log` keeps its log. This is synchronous std code; async callers use
//! `spawn_blocking`.

mod binaries;
mod datadir;
mod error;
mod lockfile;
mod log;
mod process;
mod user;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sqlx::postgres::PgConnectOptions;
use tracing::{debug, info};

pub use error::EmbeddedError;

use datadir::Layout;
use error::io_err;
use process::Postmaster;
use user::ServerUser;

/// The cluster's superuser, created by initdb; every connection to the server uses it.
pub const SUPERUSER: &str = "finwait";

/// Where and how to run the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The cluster lives in `data_dir/pgdata`, the unix socket in `data_dir/run`, the
    /// server log in `data_dir/postgres.log` (the previous run's in `postgres.log.1`).
    pub data_dir: PathBuf,
    /// Directory holding `initdb` and `postgres`. None: the cluster's own major version
    /// under /usr/lib/postgresql, else the highest version there, then PATH.
    pub bin_dir: Option<PathBuf>,
    /// User the server runs as. None: when root, the owner of an existing cluster, else
    /// `postgres` if that user exists, else `nobody`; not root, ourselves.
    pub run_as: Option<String>,
    /// Port number (also names the socket file); 0 picks a free loopback port.
    pub port: u16,
    /// false: unix socket only; true: also TCP on 127.0.0.1. Authentication is `trust`,
    /// so with TCP every local user can connect as superuser: enable it only on hosts
    /// (or network namespaces) without untrusted local users.
    pub listen_tcp: bool,
}

/// A running embedded server; dropping it stops the server (prefer [`Self::stop`],
/// which reports failures, from a blocking thread).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// The server process; stopping it is stopping us.
    postmaster: Postmaster,
    /// Absolute directory of the unix socket, for connections.
    socket_dir: PathBuf,
    /// The port the server listens on (and that names its socket file).
    port: u16,
    /// What a restart needs: the same binaries, account, directories and port.
    relaunch: Relaunch,
}

/// How the server was started, kept so that [`EmbeddedPostgres::restart`] starts it
/// the same way (same port, so the collector's connection options stay valid).
struct Relaunch {
    bin_dir: PathBuf,
    user: ServerUser,
    layout: Layout,
    listen_tcp: bool,
}

impl std::fmt::Debug for Relaunch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relaunch")
            .field("bin_dir", &self.bin_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedPostgres {
    /// Initialises the cluster if it has no PG_VERSION yet, starts the server and waits
    /// (up to 30 s) until it accepts connections.
    #[tracing::instrument(skip_all, fields(data_dir = %opts.data_dir.display()), err)]
    pub fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let data_dir = std::path::absolute(&opts.data_dir)
            .map_err(io_err("resolve data directory", &opts.data_dir))?;
        let cluster_version = Layout::new(data_dir.clone()).cluster_version()?;
        let bin_dir = binaries::find(opts.bin_dir.as_deref(), cluster_version.as_deref())?;
        let pgdata = data_dir.join("pgdata");
        let existing_owner = match cluster_version {
            Some(_) => Some(
                std::fs::metadata(&pgdata)
                    .map_err(io_err("inspect", &pgdata))?
                    .uid(),
            ),
            None => None,
        };
        let user = ServerUser::resolve(opts.run_as.as_deref(), existing_owner)?;
        if let Some(owner) = existing_owner
            && owner != user.uid
        {
            return Err(EmbeddedError::User {
                user: user.name.clone(),
                reason: format!(
                    "cluster {} belongs to uid {}; run as its owner",
                    pgdata.display(),
                    owner
                ),
            });
        }

        let layout = datadir::prepare(&data_dir, &user)?;
        if cluster_version.is_none() {
            datadir::initdb(&bin_dir, &layout, &user)?;
        } else {
            debug!(pgdata = %layout.pgdata.display(), "reusing embedded postgresql cluster");
            lockfile::check(&layout)?;
        }
        let (postmaster, port) =
            process::start(&bin_dir, &user, &layout, opts.port, opts.listen_tcp)?;
        let server = EmbeddedPostgres {
            postmaster,
            socket_dir: layout.socket_dir.clone(),
            port,
            relaunch: Relaunch {
                bin_dir,
                user: user.clone(),
                layout: layout.clone(),
                listen_tcp: opts.listen_tcp,
            },
        };
        lockfile::record_owner(&layout)?;
        info!(
            data_dir = %layout.root.display(),
            port,
            pid = server.postmaster.pid(),
            user = %user.name,
            "embedded postgresql started"
        );
        Ok(server)
    }

    /// Connection options for `database` on this server, as [`SUPERUSER`] through its
    /// unix socket (what the collector connects with).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        // No password file: authentication is `trust`. The environment's other PG*
        // defaults still apply, as they would to a parsed URL.
        PgConnectOptions::new_without_pgpass()
            .host("localhost")
            .socket(&self.socket_dir)
            .port(self.port)
            .username(SUPERUSER)
            .database(database)
    }

    /// The same as a libpq- and sqlx-compatible URL, for what only takes a string
    /// (psql, `--database-url-file`): `postgres://finwait@localhost:PORT/DB?host=/dir`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{}/{}?host={}",
            self.port,
            percent_encode(database, false),
            percent_encode(&self.socket_dir.to_string_lossy(), true)
        )
    }

    /// The port the server listens on (and that names its socket file).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The absolute directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.pid()
    }

    /// Whether the server has exited (killed, crashed): how, reaping it; None while it
    /// runs (a server stopped with SIGSTOP still runs).
    pub fn exited(&mut self) -> Option<String> {
        self.postmaster.exited()
    }

    /// Starts the server again, the same way and on the same port, after it exited;
    /// waits (up to 30 s) until it accepts connections. Backends orphaned by a killed
    /// postmaster keep its shared memory until they notice and exit: the first attempt
    /// right after a kill may fail, so callers retry with a backoff.
    #[tracing::instrument(skip_all, fields(port = self.port), err)]
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        let r = &self.relaunch;
        lockfile::check(&r.layout)?;
        let (postmaster, _) =
            process::start(&r.bin_dir, &r.user, &r.layout, self.port, r.listen_tcp)?;
        self.postmaster = postmaster;
        lockfile::record_owner(&r.layout)?;
        info!(
            port = self.port,
            pid = self.postmaster.pid(),
            "embedded postgresql restarted"
        );
        Ok(())
    }

    /// Fast shutdown (SIGINT to the postmaster: active transactions are rolled back),
    /// waiting up to 30 s; past that the server is halted and an error returned.
    pub fn stop(self) -> Result<(), EmbeddedError> {
        self.postmaster.stop()
    }
}

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` when asked).
fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;

//! The embedded default PostgreSQL: when no database URL is configured, the collector
//! runs its own server from the locally installed binaries (Debian's
//! /usr/lib/postgresql/VERSION/bin), with the cluster in `DATA_DIR/pgdata` and its
//! unix socket in `DATA_DIR/run`, and stops it on shutdown; the next start reuses the
//! cluster. Tests use the same code to start one throwaway cluster per test binary.
//!
//! initdb and postgres refuse to run as root, and CI runs as root, so when our
//! effective uid is 0 the server runs as an unprivileged user (the owner of an existing
//! cluster, else `postgres` when that user exists, else `nobody`) through std's safe
//! `CommandExt::uid/gid` (std also drops root's supplementary groups); the cluster
//! and socket directories are owned by that user. Not root, everything runs as
//! ourselves. This is synchronous std code; async callers use `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tracing::{debug, info, warn};

/// The cluster's superuser, created by initdb and used in [`EmbeddedPostgres::url`].
pub const SUPERUSER: &str = "finwait";
/// How long a start may take until the server accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before we escalate to an immediate one.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown (SIGQUIT) may take before SIGKILL.
const HALT_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
/// `sizeof(sun_path)` on Linux, including the terminating NUL.
const SUN_PATH_MAX: usize = 108;
/// File in the data directory naming the process that started the server.
const OWNER_FILE: &str = "owner.pid";
/// Lines of server log quoted in errors.
const LOG_TAIL_LINES: usize = 20;

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
    /// The postmaster, None once stopped; we own its lifetime.
    child: Option<Child>,
    /// The cluster directory, for errors and logs.
    pgdata: PathBuf,
    /// Absolute directory of the unix socket, for [`Self::url`].
    socket_dir: PathBuf,
    /// Server log, quoted in errors.
    log_path: PathBuf,
    /// The port the server listens on (and that names its socket file).
    port: u16,
}

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

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

impl EmbeddedPostgres {
    /// Initialises the cluster if it has no PG_VERSION yet, starts the server and waits
    /// (up to 30 s) until it accepts connections.
    #[tracing::instrument(skip_all, fields(data_dir = %opts.data_dir.display()), err)]
    pub fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let data_dir = std::path::absolute(&opts.data_dir)
            .map_err(io_err("resolve data directory", &opts.data_dir))?;
        let pgdata = data_dir.join("pgdata");
        let version_file = pgdata.join("PG_VERSION");
        let cluster_version = match fs::read_to_string(&version_file) {
            Ok(v) => Some(v.trim().to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &version_file)(e)),
        };
        let bin_dir = find_binaries(opts.bin_dir.as_deref(), cluster_version.as_deref())?;
        let existing_owner = match cluster_version {
            Some(_) => Some(
                fs::metadata(&pgdata)
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

        let data_dir = create_data_dir(&data_dir, &user)?;
        let pgdata = data_dir.join("pgdata");
        // Checked before initdb, for the longest port number.
        let longest_socket = data_dir.join("run/.s.PGSQL.65535");
        if longest_socket.as_os_str().len() >= SUN_PATH_MAX {
            return Err(EmbeddedError::InvalidOptions {
                reason: format!(
                    "socket path {} would be longer than {} bytes; use a shorter data directory",
                    longest_socket.display(),
                    SUN_PATH_MAX - 1
                ),
            });
        }
        // Authentication is `trust`. That is acceptable only because the socket
        // directory is private (mode 0700, owned by the server user, so only that user
        // and root can reach the socket; not root, everything runs as ourselves) and TCP,
        // when enabled at all, listens on 127.0.0.1 only (see `listen_tcp`).
        private_dir(&data_dir.join("run"), &user)?;
        if cluster_version.is_none() {
            private_dir(&pgdata, &user)?;
            initdb(&bin_dir, &pgdata, &data_dir, &user)?;
        } else {
            debug!(pgdata = %pgdata.display(), "reusing embedded postgresql cluster");
            check_lock_file(&pgdata, &data_dir)?;
        }

        let mut attempt = 1;
        let server = loop {
            let port = match opts.port {
                0 => free_port()?,
                p => p,
            };
            match Self::launch(&bin_dir, &user, &data_dir, port, opts.listen_tcp) {
                // A port we picked can be taken before postgres binds it.
                Err(EmbeddedError::Start { log_tail, .. })
                    if opts.port == 0
                        && attempt < 3
                        && log_tail.contains("Address already in use") =>
                {
                    warn!(
                        port,
                        "picked port was taken before postgresql bound it, retrying"
                    );
                    attempt += 1;
                }
                result => break result?,
            }
        };
        // Who owns the server: a later start uses it to tell an orphan (its collector
        // was killed) from a server another live process runs.
        let owner_file = data_dir.join(OWNER_FILE);
        fs::write(&owner_file, std::process::id().to_string())
            .map_err(io_err("write", &owner_file))?;
        info!(
            data_dir = %data_dir.display(),
            port = server.port,
            pid = server.child.as_ref().map(Child::id),
            user = %user.name,
            "embedded postgresql started"
        );
        Ok(server)
    }

    /// Spawns the postmaster on an initialised cluster and waits until it is ready.
    fn launch(
        bin_dir: &Path,
        user: &ServerUser,
        data_dir: &Path,
        port: u16,
        listen_tcp: bool,
    ) -> Result<Self, EmbeddedError> {
        let pgdata = data_dir.join("pgdata");
        let socket_dir = data_dir.join("run");
        let socket_path = socket_dir.join(format!(".s.PGSQL.{port}"));
        let log_path = data_dir.join("postgres.log");
        let log = open_log(&log_path)?;
        let log_err = log.try_clone().map_err(io_err("open", &log_path))?;
        let postgres = bin_dir.join("postgres");
        let mut cmd = user.command(&postgres, data_dir);
        cmd.arg("-D")
            .arg(&pgdata)
            .arg("-k")
            .arg(quoted_dir(&socket_dir)?)
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
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a terminal's Ctrl-C reaches only the collector,
            // which stops the server after its own graceful shutdown.
            .process_group(0);
        let child = cmd.spawn().map_err(io_err("run", &postgres))?;
        let mut server = EmbeddedPostgres {
            child: Some(child),
            pgdata,
            socket_dir,
            log_path,
            port,
        };
        server.wait_ready(&socket_path)?;
        Ok(server)
    }

    /// sqlx- and libpq-compatible URL for `database` on this server, through its unix
    /// socket: `postgres://finwait@localhost:PORT/DB?host=/abs/socket/dir`.
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

    /// Fast shutdown (SIGINT to the postmaster: active transactions are rolled back),
    /// waiting up to 30 s; past that the server is halted and an error returned.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
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
            log: self.log_path.clone(),
            log_tail: log_tail(&self.log_path),
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
            if postmaster_ready(&self.pgdata, child.id())
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
            log: self.log_path.clone(),
            log_tail: log_tail(&self.log_path),
        })
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(error = %e, "embedded postgresql did not stop cleanly");
        }
    }
}

/// The account the server runs as.
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
    /// Some when we are root and switch to this user (with this HOME) for every child.
    switch_home: Option<PathBuf>,
}

impl ServerUser {
    fn resolve(run_as: Option<&str>, existing_owner: Option<u32>) -> Result<Self, EmbeddedError> {
        let euid = rustix::process::geteuid().as_raw();
        let passwd = Passwd::read()?;
        let unknown = |name: &str| EmbeddedError::User {
            user: name.to_owned(),
            reason: "no such user in /etc/passwd".into(),
        };
        if euid != 0 {
            if let Some(name) = run_as {
                let entry = passwd.by_name(name).ok_or_else(|| unknown(name))?;
                if entry.uid != euid {
                    return Err(EmbeddedError::User {
                        user: name.to_owned(),
                        reason: format!("only root can switch users and we run as uid {euid}"),
                    });
                }
            }
            let name = passwd
                .by_uid(euid)
                .map_or_else(|| format!("uid {euid}"), |e| e.name.clone());
            return Ok(ServerUser {
                name,
                uid: euid,
                gid: rustix::process::getegid().as_raw(),
                switch_home: None,
            });
        }
        let entry = match run_as {
            Some(name) => passwd.by_name(name).ok_or_else(|| unknown(name))?,
            // The owner of an existing cluster first, so that installing the postgresql
            // package later does not orphan a cluster initialised as nobody.
            None => existing_owner
                .filter(|&uid| uid != 0)
                .and_then(|uid| passwd.by_uid(uid))
                .or_else(|| passwd.by_name("postgres"))
                .or_else(|| passwd.by_name("nobody"))
                .ok_or_else(|| unknown("postgres or nobody"))?,
        };
        if entry.uid == 0 {
            return Err(EmbeddedError::User {
                user: entry.name.clone(),
                reason: "postgresql refuses to run as root; choose an unprivileged user".into(),
            });
        }
        Ok(ServerUser {
            name: entry.name.clone(),
            uid: entry.uid,
            gid: entry.gid,
            switch_home: Some(entry.home.clone()),
        })
    }

    /// A command for `program` as this user, in `cwd`, without PG* variables (they
    /// would redirect initdb or the server, e.g. PGDATA, PGPORT).
    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        if let Some(home) = &self.switch_home {
            cmd.uid(self.uid)
                .gid(self.gid)
                .env("HOME", home)
                .env("USER", &self.name)
                .env("LOGNAME", &self.name);
        }
        cmd
    }

    /// Whether the child can enter a directory with this metadata (std drops root's
    /// supplementary groups when switching, so only the primary group counts).
    fn can_traverse(&self, meta: &fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// /etc/passwd, read directly (std has no getpwnam; NSS-only users are not seen).
struct Passwd(Vec<PasswdEntry>);

impl Passwd {
    fn read() -> Result<Self, EmbeddedError> {
        let path = Path::new("/etc/passwd");
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        Ok(Passwd(text.lines().filter_map(parse_passwd_line).collect()))
    }

    fn by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.0.iter().find(|e| e.name == name)
    }

    fn by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.0.iter().find(|e| e.uid == uid)
    }
}

fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let _gecos = fields.next()?;
    let home = fields.next()?;
    Some(PasswdEntry {
        name: name.to_owned(),
        uid,
        gid,
        home: PathBuf::from(home),
    })
}

/// The directory holding both `initdb` and `postgres`: `explicit` only, else the
/// cluster's major version under /usr/lib/postgresql, else the highest there, else PATH.
fn find_binaries(
    explicit: Option<&Path>,
    cluster_version: Option<&str>,
) -> Result<PathBuf, EmbeddedError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(dir) => vec![dir.to_path_buf()],
        None => {
            let root = Path::new("/usr/lib/postgresql");
            let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    let key = name
                        .split('.')
                        .map(str::parse)
                        .collect::<Result<Vec<u32>, _>>()
                        .ok()?;
                    let rank = u32::from(Some(name.as_str()) == cluster_version);
                    Some((
                        std::iter::once(rank).chain(key).collect(),
                        entry.path().join("bin"),
                    ))
                })
                .collect();
            versions.sort_by(|a, b| b.0.cmp(&a.0));
            let path = std::env::var_os("PATH").unwrap_or_default();
            versions
                .into_iter()
                .map(|(_, dir)| dir)
                .chain(std::env::split_paths(&path))
                .collect()
        }
    };
    let executable =
        |p: PathBuf| fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    candidates
        .iter()
        .find(|dir| executable(dir.join("initdb")) && executable(dir.join("postgres")))
        .cloned()
        .ok_or_else(|| EmbeddedError::BinariesMissing {
            searched: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Creates `data_dir` (and missing parents) and makes the path traversable by a switched
/// user: directories we create or own as data dir get o+x (never read), other ancestors
/// must already allow it. Returns the canonical path.
fn create_data_dir(data_dir: &Path, user: &ServerUser) -> Result<PathBuf, EmbeddedError> {
    let created: Vec<PathBuf> = data_dir
        .ancestors()
        .take_while(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(data_dir).map_err(io_err("create directory", data_dir))?;
    let data_dir = fs::canonicalize(data_dir).map_err(io_err("resolve", data_dir))?;
    if user.switch_home.is_none() {
        return Ok(data_dir);
    }
    for dir in data_dir.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
        if user.can_traverse(&meta) {
            continue;
        }
        if dir == data_dir || created.iter().any(|c| c == dir) {
            let mode = meta.permissions().mode() | 0o001;
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .map_err(io_err("make traversable", dir))?;
            debug!(dir = %dir.display(), "made directory traversable for embedded postgresql");
        } else {
            return Err(EmbeddedError::User {
                user: user.name.clone(),
                reason: format!("cannot traverse {}; allow search (x) for it", dir.display()),
            });
        }
    }
    Ok(data_dir)
}

/// Makes `dir` exist with mode 0700, owned by the server user.
fn private_dir(dir: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
    }
    if user.switch_home.is_some() {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(io_err("change owner of", dir))?;
    }
    let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
    if meta.uid() != user.uid {
        return Err(EmbeddedError::User {
            user: user.name.clone(),
            reason: format!(
                "{} is owned by uid {}, not {}",
                dir.display(),
                meta.uid(),
                user.uid
            ),
        });
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("change mode of", dir))?;
    }
    Ok(())
}

fn initdb(
    bin_dir: &Path,
    pgdata: &Path,
    cwd: &Path,
    user: &ServerUser,
) -> Result<(), EmbeddedError> {
    info!(pgdata = %pgdata.display(), user = %user.name, "initialising embedded postgresql cluster");
    let program = bin_dir.join("initdb");
    let output = user
        .command(&program, cwd)
        .arg("-D")
        .arg(pgdata)
        .arg("-U")
        .arg(SUPERUSER)
        .arg("--auth=trust")
        .arg("--encoding=UTF8")
        // Not the environment's locale: it may name one that is not installed.
        .arg("--locale=C")
        .arg("--no-instructions")
        .output()
        .map_err(io_err("run", &program))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(EmbeddedError::Initdb {
        pgdata: pgdata.to_path_buf(),
        status: output.status.to_string(),
        stderr: last_lines(&stderr, LOG_TAIL_LINES),
    })
}

/// Refuses to start when a live postmaster that another live process runs holds the
/// cluster. An orphaned postmaster (the process that started it, recorded in
/// `owner.pid`, is gone, as after a SIGKILL of the collector) is shut down so that this
/// start can take over. A pid file naming a dead
/// process is left for postgres, which removes it itself; one naming a live process that
/// is not postgres (pid reuse, typically in a restarted container) is removed here,
/// since postgres would refuse it. Postgres's shared-memory interlock remains a backstop.
fn check_lock_file(pgdata: &Path, data_dir: &Path) -> Result<(), EmbeddedError> {
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
    if is_orphan(pid, data_dir) {
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

/// True when the postmaster's recorded owner is dead or is not its parent.
fn is_orphan(postmaster: Pid, data_dir: &Path) -> bool {
    let owner = fs::read_to_string(data_dir.join(OWNER_FILE))
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

/// Whether postmaster.pid names `pid` and says `ready` (line 8, as `pg_ctl -w` reads it).
fn postmaster_ready(pgdata: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// A free loopback port, released for postgres to bind (another process may take it in
/// between; unlikely enough for a default and for tests).
fn free_port() -> Result<u16, EmbeddedError> {
    let here = Path::new("127.0.0.1:0");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind", here))?;
    let port = listener.local_addr().map_err(io_err("bind", here))?.port();
    Ok(port)
}

/// The socket directory as one element of postgres's directory list (`,` separates,
/// `"` quotes).
fn quoted_dir(dir: &Path) -> Result<String, EmbeddedError> {
    let text = dir.to_str().ok_or_else(|| EmbeddedError::InvalidOptions {
        reason: format!("data directory {} is not valid UTF-8", dir.display()),
    })?;
    Ok(format!("\"{}\"", text.replace('"', "\"\"")))
}

/// Opens a fresh server log, keeping the previous run's as `.1`.
fn open_log(path: &Path) -> Result<File, EmbeddedError> {
    if path.exists() {
        fs::rename(path, path.with_extension("log.1")).map_err(io_err("rotate", path))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

fn log_tail(path: &Path) -> String {
    const MAX: u64 = 8192;
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(len > MAX)
    });
    match read {
        // The first line may be cut.
        Ok(true) => last_lines(
            text.split_once('\n').map_or("", |(_, rest)| rest),
            LOG_TAIL_LINES,
        ),
        Ok(false) => last_lines(&text, LOG_TAIL_LINES),
        Err(e) => format!("(cannot read server log: {e})"),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn signal(child: &Child, sig: Signal) {
    if let Err(e) = rustix::process::kill_process(Pid::from_child(child), sig) {
        debug!(pid = child.id(), error = %e, "cannot signal postgres");
    }
}

/// Waits for `child` until `deadline`; None if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
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
mod tests {
    use super::*;
    use anyhow::{Context, ensure};

    /// A fresh directory under the system temp dir, removed on drop (declare it before
    /// the server so the server is dropped, and stopped, first).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> anyhow::Result<Self> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
            let dir = std::env::temp_dir()
                .join(format!("finwait-pg-{name}-{}-{nanos}", std::process::id()));
            fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            Ok(TempDir(dir))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn options(data_dir: &Path) -> EmbeddedOptions {
        EmbeddedOptions {
            data_dir: data_dir.to_path_buf(),
            bin_dir: None,
            run_as: None,
            port: 0,
            listen_tcp: false,
        }
    }

    /// Runs `select 1` through psql with the given connection arguments.
    fn psql_select_one(args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new("/usr/bin/psql");
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        let output = cmd
            .arg("-X")
            .args(args)
            .args(["-Atc", "select 1"])
            .output()?;
        ensure!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "1",
            "psql {args:?}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    #[test]
    fn cluster_is_reused_across_restarts() -> anyhow::Result<()> {
        let tmp = TempDir::new("reuse")?;
        let pg = EmbeddedPostgres::start(options(&tmp.0))?;
        let socket = pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port()));
        UnixStream::connect(&socket).with_context(|| format!("connect {}", socket.display()))?;
        let port = pg.port().to_string();
        let socket_dir = pg.socket_dir().to_string_lossy().into_owned();
        psql_select_one(&[
            "-h",
            &socket_dir,
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
        ])?;
        psql_select_one(&[&pg.url("postgres")])?;
        pg.stop()?;

        let pgdata = tmp.0.join("pgdata");
        let version_before = fs::read_to_string(pgdata.join("PG_VERSION"))?;
        let meta = fs::metadata(&pgdata)?;
        ensure!(
            meta.mode() & 0o777 == 0o700,
            "pgdata mode {:o}",
            meta.mode()
        );
        if rustix::process::geteuid().is_root() {
            ensure!(meta.uid() != 0, "pgdata is owned by root");
        }
        let system_id = fs::read(pgdata.join("global/pg_control"))?;

        let pg = EmbeddedPostgres::start(options(&tmp.0))?;
        psql_select_one(&[&pg.url("postgres")])?;
        ensure!(fs::read_to_string(pgdata.join("PG_VERSION"))? == version_before);
        // A second initdb would have made a new system identifier (first 8 bytes).
        let control = fs::read(pgdata.join("global/pg_control"))?;
        ensure!(
            control[..8] == system_id[..8],
            "cluster was initialised again"
        );
        pg.stop()?;
        Ok(())
    }

    #[test]
    fn second_start_on_a_running_cluster_is_refused() -> anyhow::Result<()> {
        let tmp = TempDir::new("twice")?;
        let pg = EmbeddedPostgres::start(options(&tmp.0))?;
        match EmbeddedPostgres::start(options(&tmp.0)) {
            Err(EmbeddedError::AlreadyRunning { .. }) => {}
            Err(e) => anyhow::bail!("expected AlreadyRunning, got {e}"),
            Ok(_) => anyhow::bail!("a second server started on the same cluster"),
        }
        psql_select_one(&[&pg.url("postgres")])?;
        pg.stop()?;
        Ok(())
    }

    #[test]
    fn stale_pid_file_from_a_crash_does_not_block_start() -> anyhow::Result<()> {
        let tmp = TempDir::new("stale")?;
        let pgdata = tmp.0.join("pgdata");
        EmbeddedPostgres::start(options(&tmp.0))?.stop()?;

        // A live process that is not postgres, as after pid reuse in a restarted container.
        let mut sleeper = Command::new("sleep").arg("60").spawn()?;
        fs::write(
            pgdata.join("postmaster.pid"),
            format!("{}\n{}\n", sleeper.id(), pgdata.display()),
        )?;
        let started = EmbeddedPostgres::start(EmbeddedOptions {
            listen_tcp: true,
            ..options(&tmp.0)
        });
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let pg = started?;
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, pg.port()))?;
        pg.stop()?;

        // A dead pid, left for postgres to judge.
        let mut done = Command::new("true").spawn()?;
        let dead = done.id();
        done.wait()?;
        fs::write(
            pgdata.join("postmaster.pid"),
            format!("{dead}\n{}\n", pgdata.display()),
        )?;
        EmbeddedPostgres::start(options(&tmp.0))?.stop()?;
        Ok(())
    }

    #[test]
    fn missing_binaries_name_the_debian_package() {
        let dir = std::env::temp_dir().join("finwait-pg-no-such-bin-dir");
        let result = EmbeddedPostgres::start(EmbeddedOptions {
            bin_dir: Some(dir.clone()),
            ..options(&dir.join("data"))
        });
        match result {
            Err(e @ EmbeddedError::BinariesMissing { .. }) => {
                let message = e.to_string();
                assert!(message.contains("postgresql"), "{message}");
                assert!(message.contains("apt-get install postgresql"), "{message}");
            }
            Err(e) => panic!("expected BinariesMissing, got {e}"),
            Ok(_) => panic!("started without binaries"),
        }
        assert!(
            !dir.exists(),
            "nothing is created before the binaries are found"
        );
    }

    #[test]
    fn url_escapes_the_socket_dir_and_database() {
        assert_eq!(percent_encode("/tmp/a b/run", true), "/tmp/a%20b/run");
        assert_eq!(percent_encode("my/db&x", false), "my%2Fdb%26x");
    }
}

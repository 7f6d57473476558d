//! The data directory: its layout, the permissions that let a switched server user in
//! (and nobody else), and initialising a cluster in it.
//!
//! Authentication is `trust`. That is acceptable only because the socket directory is
//! private (mode 0700, owned by the server user, so only that user and root can reach
//! the socket; not root, everything runs as ourselves) and TCP, when enabled at all,
//! listens on 127.0.0.1 only (see `EmbeddedOptions::listen_tcp`).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::SUPERUSER;
use super::error::{EmbeddedError, io_err};
use super::log;
use super::user::ServerUser;

/// `sizeof(sun_path)` on Linux, including the terminating NUL.
const SUN_PATH_MAX: usize = 108;

/// Where everything lives under a data directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The data directory itself (absolute).
    pub(super) root: PathBuf,
    /// The cluster: `root/pgdata`.
    pub(super) pgdata: PathBuf,
    /// The unix socket's directory: `root/run`.
    pub(super) socket_dir: PathBuf,
    /// The server log: `root/postgres.log`.
    pub(super) log: PathBuf,
    /// The pid of the process that started the server: `root/owner.pid`.
    pub(super) owner_file: PathBuf,
}

impl Layout {
    /// The layout under `root` (absolute).
    pub(super) fn new(root: PathBuf) -> Layout {
        Layout {
            pgdata: root.join("pgdata"),
            socket_dir: root.join("run"),
            log: root.join("postgres.log"),
            owner_file: root.join("owner.pid"),
            root,
        }
    }

    /// The socket file of a server on `port`.
    pub(super) fn socket(&self, port: u16) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{port}"))
    }

    /// The major version of the cluster in `pgdata`, None when there is none yet.
    pub(super) fn cluster_version(&self) -> Result<Option<String>, EmbeddedError> {
        let file = self.pgdata.join("PG_VERSION");
        match fs::read_to_string(&file) {
            Ok(v) => Ok(Some(v.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &file)(e)),
        }
    }

    /// The socket directory as one element of postgres's directory list (`,`
    /// separates, `"` quotes).
    pub(super) fn quoted_socket_dir(&self) -> Result<String, EmbeddedError> {
        let dir = &self.socket_dir;
        let text = dir.to_str().ok_or_else(|| EmbeddedError::InvalidOptions {
            reason: format!("data directory {} is not valid UTF-8", dir.display()),
        })?;
        Ok(format!("\"{}\"", text.replace('"', "\"\"")))
    }
}

/// Creates the data directory for `user` (see [`create`]) with a private socket
/// directory, and checks the socket path fits; returns the canonical layout.
pub(super) fn prepare(data_dir: &Path, user: &ServerUser) -> Result<Layout, EmbeddedError> {
    let layout = Layout::new(create(data_dir, user)?);
    // Checked before initdb, for the longest port number.
    let longest_socket = layout.socket(65535);
    if longest_socket.as_os_str().len() >= SUN_PATH_MAX {
        return Err(EmbeddedError::InvalidOptions {
            reason: format!(
                "socket path {} would be longer than {} bytes; use a shorter data directory",
                longest_socket.display(),
                SUN_PATH_MAX - 1
            ),
        });
    }
    private_dir(&layout.socket_dir, user)?;
    Ok(layout)
}

/// Creates `data_dir` (and missing parents) and makes the path traversable by a switched
/// user: directories we create or own as data dir get o+x (never read), other ancestors
/// must already allow it. Returns the canonical path.
fn create(data_dir: &Path, user: &ServerUser) -> Result<PathBuf, EmbeddedError> {
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

/// Initialises a cluster in `layout.pgdata` (made private to `user` first) with
/// [`SUPERUSER`], trust authentication, UTF-8 and the C locale.
pub(super) fn initdb(
    bin_dir: &Path,
    layout: &Layout,
    user: &ServerUser,
) -> Result<(), EmbeddedError> {
    let pgdata = &layout.pgdata;
    private_dir(pgdata, user)?;
    info!(pgdata = %pgdata.display(), user = %user.name, "initialising embedded postgresql cluster");
    let program = bin_dir.join("initdb");
    let output = user
        .command(&program, &layout.root)
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
        stderr: log::last_lines(&stderr, log::TAIL_LINES),
    })
}

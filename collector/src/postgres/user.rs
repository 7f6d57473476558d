//! The account the server runs as. initdb and postgres refuse to run as root, and CI
//! runs as root, so when our effective uid is 0 every server process runs as an
//! unprivileged user (the owner of an existing cluster, else `postgres` when that user
//! exists, else `nobody`) through std's safe `CommandExt::uid/gid` (std also drops
//! root's supplementary groups). Not root, everything runs as ourselves.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{EmbeddedError, io_err};

/// The account the server runs as.
#[derive(Clone)]
pub(super) struct ServerUser {
    /// User name (or `uid N` when /etc/passwd does not know us).
    pub(super) name: String,
    /// Its uid: the owner of the cluster and socket directories.
    pub(super) uid: u32,
    /// Its primary group.
    pub(super) gid: u32,
    /// Some when we are root and switch to this user (with this HOME) for every child.
    pub(super) switch_home: Option<PathBuf>,
}

impl ServerUser {
    /// Picks the account: `run_as` if given (only root may name another user), else as
    /// the module says; `existing_owner` is the uid owning an existing cluster.
    pub(super) fn resolve(
        run_as: Option<&str>,
        existing_owner: Option<u32>,
    ) -> Result<Self, EmbeddedError> {
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
    pub(super) fn command(&self, program: &Path, cwd: &Path) -> Command {
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
    pub(super) fn can_traverse(&self, meta: &fs::Metadata) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_name_ids_and_home_and_malformed_ones_are_skipped() {
        let e = parse_passwd_line(
            "postgres:x:104:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash",
        )
        .expect("a valid line");
        assert_eq!(
            (e.name.as_str(), e.uid, e.gid, e.home.as_path()),
            ("postgres", 104, 110, Path::new("/var/lib/postgresql"))
        );
        assert!(parse_passwd_line("broken:x:notanumber:1::/").is_none());
        assert!(parse_passwd_line("short:x:1").is_none());
        assert!(parse_passwd_line("").is_none());
    }
}

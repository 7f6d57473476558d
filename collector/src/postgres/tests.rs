//! The whole start/stop cycle against the installed server, one cluster per test.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

use anyhow::{Context, ensure};
use sqlx::Connection;

use super::*;

/// A fresh directory under the system temp dir, removed on drop (declare it before
/// the server so the server is dropped, and stopped, first).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("finwait-pg-{name}-{}-{nanos}", std::process::id()));
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

#[tokio::test]
async fn connect_options_reach_the_database_as_the_superuser() -> anyhow::Result<()> {
    let tmp = TempDir::new("options")?;
    let dir = tmp.0.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(options(&dir))).await??;
    let mut conn = sqlx::PgConnection::connect_with(&pg.connect_options("postgres")).await?;
    let (user, db): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut conn)
            .await?;
    ensure!(
        (user.as_str(), db.as_str()) == (SUPERUSER, "postgres"),
        "{user} on {db}"
    );
    conn.close().await?;
    // The URL for external tools names the same server.
    psql_select_one(&[&pg.url("postgres")])?;
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    Ok(())
}

#[test]
fn url_escapes_the_socket_dir_and_database() {
    assert_eq!(percent_encode("/tmp/a b/run", true), "/tmp/a%20b/run");
    assert_eq!(percent_encode("my/db&x", false), "my%2Fdb%26x");
}

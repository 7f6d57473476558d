//! A collector and its PostgreSQL for benches: the embedded server in a scratch
//! directory and the release `finwait-collector` binary pointed at it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use finwait_collector::postgres::{EmbeddedOptions, EmbeddedPostgres};
use finwait_testkit::workspace_bin;
use sqlx::postgres::PgConnectOptions;

/// PostgreSQL plus a collector process; both stopped on drop.
pub struct Service {
    /// Scratch directory (removed on drop).
    pub dir: PathBuf,
    /// The server.
    pub pg: Option<EmbeddedPostgres>,
    /// The collector process.
    pub collector: Child,
    /// Its gRPC address.
    pub addr: String,
    /// The collector's extra flags, for restarts.
    extra: Vec<String>,
}

impl Service {
    /// Starts PostgreSQL with databases `dbs` (the first serves the collector) and the
    /// collector with `extra` flags; `wrap` can run it in a namespace.
    pub fn start(
        tag: &str,
        dbs: &[&str],
        wrap: Option<&finwait_testkit::NetNs>,
        extra: &[&str],
    ) -> Result<Service> {
        let dir = std::env::temp_dir().join(format!("finwait-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pg = EmbeddedPostgres::start(EmbeddedOptions {
            data_dir: dir.join("pg"),
            bin_dir: None,
            run_as: None,
            port: 0,
            listen_tcp: false,
        })?;
        for db in dbs {
            let out = Command::new("psql")
                .args([
                    &pg.url("postgres"),
                    "-Atc",
                    &format!("CREATE DATABASE {db}"),
                ])
                .output()?;
            if !out.status.success() {
                bail!(
                    "create database {db}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        std::fs::write(dir.join("url"), pg.url(dbs[0]))?;
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let (collector, addr) = spawn_collector(&dir, wrap, "127.0.0.1:0", &extra)?;
        Ok(Service {
            dir,
            pg: Some(pg),
            collector,
            addr,
            extra,
        })
    }

    /// Stops the collector (SIGTERM, its graceful shutdown) and starts it again on the
    /// same address (not in a namespace).
    pub fn restart_collector(&mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.collector.id().to_string()])
            .status();
        let _ = self.collector.wait();
        let (collector, addr) = spawn_collector(&self.dir, None, &self.addr, &self.extra)?;
        self.collector = collector;
        self.addr = addr;
        Ok(())
    }

    /// The PostgreSQL postmaster's process id.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.pg.as_ref()?.pid()
    }

    /// Connection options for database `db` on the bench's server.
    pub fn connect_options(&self, db: &str) -> Result<PgConnectOptions> {
        let pg = self.pg.as_ref().context("PostgreSQL already stopped")?;
        Ok(pg.connect_options(db))
    }

    /// The collector's peak RSS so far, MiB.
    pub fn collector_peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.collector.id())
    }
}

/// VmHWM of a process, in MiB (0 when unreadable).
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.collector.id().to_string()])
            .status();
        let _ = self.collector.wait();
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the release collector on `listen` against the database URL in `dir/url`;
/// returns it and the address it printed.
fn spawn_collector(
    dir: &std::path::Path,
    wrap: Option<&finwait_testkit::NetNs>,
    listen: &str,
    extra: &[String],
) -> Result<(Child, String)> {
    let bin = workspace_bin("finwait-collector")?;
    let mut cmd = match wrap {
        Some(ns) => ns.command(&bin),
        None => Command::new(&bin),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("collector.log"))?;
    let mut collector = cmd
        .args([
            "--insecure-loopback",
            "--listen",
            listen,
            "--database-url-file",
        ])
        .arg(dir.join("url"))
        .args(["--data-dir"])
        .arg(dir.join("c"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting finwait-collector")?;
    let mut line = String::new();
    BufReader::new(collector.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line.trim().rsplit(' ').next().unwrap_or("").to_owned();
    if !line.contains("listening on") {
        bail!(
            "collector did not start; see {}",
            dir.join("collector.log").display()
        );
    }
    Ok((collector, addr))
}

//! The spool directory belongs to one agent: a second `finwait-agent run` on the same
//! `--spool-dir` is refused at start with a message naming the flag and the holder,
//! and the directory is free again once the first agent is gone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use finwait_testkit::TempDir;

/// `finwait-agent run` against a closed loopback port (it keeps retrying) with its
/// spool in `dir`.
fn agent(dir: &std::path::Path) -> Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_finwait-agent"))
        .args([
            "run",
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:9",
        ])
        .args(["--hostname", "spool-test", "--machine-id", "spool-test"])
        .arg("--spool-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start finwait-agent")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Waits (bounded) until the agent wrote its pid into the lock file.
fn holds(dir: &std::path::Path, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(dir.join("lock"))
        .unwrap_or_default()
        .trim()
        != pid.to_string()
    {
        if Instant::now() > deadline {
            bail!("agent {pid} never took the spool lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_second_agent_on_the_same_spool_directory_is_refused() -> Result<()> {
    let tmp = TempDir::new("spool-lock")?;
    let dir = tmp.path().join("spool");
    let first = agent(&dir)?;
    let first_pid = first.id();
    if let Err(e) = holds(&dir, first_pid) {
        stop(first);
        return Err(e);
    }
    let mut second = agent(&dir)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while second.try_wait()?.is_none() {
        if Instant::now() > deadline {
            stop(second);
            stop(first);
            bail!("a second agent on the same spool directory kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused = !out.status.success()
        && stderr.contains(&format!(
            "--spool-dir {}: in use by another finwait-agent (pid {first_pid})",
            dir.display()
        ));
    // Once the first agent is gone, the directory is free again.
    stop(first);
    if !refused {
        bail!("second agent: {:?}, stderr: {stderr}", out.status);
    }
    let third = agent(&dir)?;
    let third_pid = third.id();
    let res = holds(&dir, third_pid);
    stop(third);
    res
}

//! Prometheus's own checker, `promtool` (Debian package `prometheus`): the judge of
//! the collector's and the agent's `/metrics` text and of the alert rules in
//! `deploy/prometheus/`. A test that needs it fails, saying how to install it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What promtool said: whether it passed, and everything it printed.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Exit status 0.
    pub ok: bool,
    /// stdout and stderr together.
    pub text: String,
}

/// Panics with the install line when promtool is missing.
pub fn require_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        panic!(
            "promtool is missing: apt-get install prometheus (Debian's package ships it; \
             .ci/run installs it)"
        );
    }
}

/// `promtool ARGS...` in `dir`, with `stdin` fed to it.
pub fn promtool(dir: &Path, args: &[&str], stdin: &[u8]) -> Verdict {
    require_promtool();
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    if let Some(mut input) = child.stdin.take() {
        // A checker that stops reading early has already answered.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().expect("promtool runs");
    Verdict {
        ok: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `promtool check metrics` on an exposition: passes only with nothing to complain
/// about (promtool's lint findings, such as a missing `# HELP`, fail too).
pub fn check_metrics(exposition: &str) -> Verdict {
    let mut v = promtool(Path::new("."), &["check", "metrics"], exposition.as_bytes());
    v.ok &= v.text.trim().is_empty();
    v
}

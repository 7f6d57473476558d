//! The server log: one file per run (the previous run's kept as `.1`), and its last
//! lines quoted in errors, since "postgres exited with 1" alone says nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::error::{EmbeddedError, io_err};

/// Lines of server log quoted in errors.
pub(super) const TAIL_LINES: usize = 20;

/// Opens a fresh server log, keeping the previous run's as `.1`.
pub(super) fn open(path: &Path) -> Result<File, EmbeddedError> {
    if path.exists() {
        fs::rename(path, path.with_extension("log.1")).map_err(io_err("rotate", path))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// The last [`TAIL_LINES`] lines of the log (read from its last 8 KiB).
pub(super) fn tail(path: &Path) -> String {
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
            TAIL_LINES,
        ),
        Ok(false) => last_lines(&text, TAIL_LINES),
        Err(e) => format!("(cannot read server log: {e})"),
    }
}

/// The last `n` lines of `text`.
pub(super) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

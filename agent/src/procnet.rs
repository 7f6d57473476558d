//! The fallback table reader: `/proc/net/tcp` and `/proc/net/tcp6` through procfs.
//!
//! Used when netlink sock_diag is refused, or when asked for. It lacks socket cookies
//! and timers, so identities fall back to the tuple and timers are absent. Another
//! namespace's table is read through `/proc/PID/net/` of a process inside it, which
//! needs no setns.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use procfs::FromBufReadSI;
use procfs::net::TcpNetEntries;

use crate::socket::{Socket, TcpState};

/// What can go wrong reading /proc/net/tcp.
#[derive(Debug, thiserror::Error)]
pub enum ProcNetError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text did not parse.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// procfs's description.
        message: String,
    },
}

/// Parses the text of one `/proc/net/tcp{,6}` file into sockets of namespace `netns`.
pub fn parse(
    text: impl std::io::Read,
    netns: u64,
    path_for_errors: &str,
    out: &mut Vec<Socket>,
) -> Result<(), ProcNetError> {
    let entries = TcpNetEntries::from_buf_read(BufReader::new(text), procfs::current_system_info())
        .map_err(|e| ProcNetError::Parse {
            path: path_for_errors.to_owned(),
            message: e.to_string(),
        })?;
    out.reserve(entries.0.len());
    for e in entries.0 {
        let Some(state) = TcpState::from_kernel(e.state.to_u8()) else {
            continue;
        };
        out.push(Socket {
            netns,
            cookie: None,
            state,
            local: e.local_address,
            remote: e.remote_address,
            inode: e.inode,
            uid: e.uid,
            rx_queue: e.rx_queue,
            tx_queue: e.tx_queue,
            timer: None,
            owners: std::sync::Arc::default(),
        });
    }
    Ok(())
}

/// Reads `dir/tcp` and `dir/tcp6` (a `/proc/.../net` directory) into `out`.
/// A missing tcp6 (IPv6 disabled) is not an error.
pub fn read_dir_tables(dir: &Path, netns: u64, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
    for (name, required) in [("tcp", true), ("tcp6", false)] {
        let path = dir.join(name);
        let shown = path.display().to_string();
        match File::open(&path) {
            Ok(f) => parse(f, netns, &shown, out)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProcNetError::Io {
                    path: shown,
                    source,
                });
            }
        }
    }
    Ok(())
}

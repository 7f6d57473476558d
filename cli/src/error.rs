//! The crate's one error type. Every variant displays as one line that names what went
//! wrong and where (the server, the file, the parameter), because `main` prints it as
//! `finwait: <error>` and nothing else.

use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, argument or environment variable is wrong.
    #[error("{0}")]
    Usage(String),
    /// The TCP connection to the collector could not be made.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The `--server` URL.
        server: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TLS handshake failed (unknown CA, wrong name, not TLS).
    #[error("TLS handshake with {server} failed: {source}")]
    Tls {
        /// The `--server` URL.
        server: String,
        /// rustls' reason, wrapped in an I/O error by tokio-rustls.
        source: std::io::Error,
    },
    /// Nothing (or not everything) arrived within `--timeout`.
    #[error("no complete answer from {server} within {after}")]
    Timeout {
        /// The `--server` URL.
        server: String,
        /// The timeout, as given.
        after: String,
    },
    /// The HTTP exchange broke (connection closed early, malformed response, too large).
    #[error("HTTP exchange with {server} failed: {reason}")]
    Http {
        /// The `--server` URL.
        server: String,
        /// What broke.
        reason: String,
    },
    /// The collector answered with its JSON error body.
    #[error("{message} (HTTP {status} {code})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The collector's stable error code, e.g. `InvalidArgument`.
        code: String,
        /// The collector's message (for a 400 it starts with the parameter name).
        message: String,
    },
    /// The collector answered with an error status but no JSON error body (a proxy, or a
    /// collector that does not know the endpoint yet).
    #[error("{server} answered HTTP {status} for {path}{detail}")]
    Status {
        /// The `--server` URL.
        server: String,
        /// HTTP status line, e.g. `404 Not Found`.
        status: String,
        /// The endpoint path asked.
        path: String,
        /// `: <start of the body>` when there was one, else empty.
        detail: String,
    },
    /// A success status with a body that is not the contract's JSON.
    #[error("unexpected answer from {server} for {path}: {reason}")]
    BadResponse {
        /// The `--server` URL.
        server: String,
        /// The endpoint path asked.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--token-file` could not be read or is empty.
    #[error("token file {}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// `--ca` could not be read or holds no certificate.
    #[error("CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// `finwait explain` was given a name it does not know.
    #[error("unknown state or verdict {name:?}; known: {known}")]
    UnknownName {
        /// What was asked.
        name: String,
        /// Every known name, comma separated.
        known: String,
    },
    /// Writing to standard output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

impl Error {
    /// The process exit status for this error: 2 for usage errors (as clap does), 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::UnknownName { .. } => 2,
            _ => 1,
        }
    }

    /// True when standard output was closed by the reader (`finwait leaks | head`):
    /// not a failure worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

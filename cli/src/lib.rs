//! finwait-cli: the `finwait` command, an HTTP client of the collector's JSON API
//! (`/api/v1`). It asks which processes leak connections and who is on the other end,
//! who holds an endpoint, what a host's socket table held at an instant and how its
//! state counts moved, and prints aligned tables or, with `--json`, the server's JSON
//! as received. `finwait explain` answers offline what a TCP state or a leak verdict
//! means and what does (and does not) fix it.
//!
//! The HTTP client is hyper's low-level HTTP/1.1 connection over tokio, with rustls on
//! the ring provider for `https://`; one connection per request, every request bounded
//! by `--timeout`. Errors are one [`Error`] whose message is a single line. The answers
//! are read into `finwait_vocab::answer` types, the very types the collector writes.

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod explain;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod paging;
pub mod render;
pub mod table;
pub mod url;

pub use commands::run;
pub use error::Error;

/// `FINWAIT_TOKEN` from the environment: `None` when unset.
pub fn env_token() -> Result<Option<String>, Error> {
    match std::env::var("FINWAIT_TOKEN") {
        Ok(t) => Ok(Some(t)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Usage("FINWAIT_TOKEN is not valid UTF-8".into()))
        }
    }
}

//! Reloading without a restart: on SIGHUP (`systemctl reload finwait-collector`) the
//! collector reads its tokens file and its TLS certificate and key again.
//!
//! All or nothing: every file is read and checked first (the tokens parse, the key
//! belongs to the certificate), and only then is anything replaced. A file that cannot
//! be used is refused with an error log naming it, and the set in force stays, so a
//! half-written file or a typo never locks agents out. What changes applies to new
//! requests and connections: a token removed from the file is refused from the next
//! request on (an agent's stream already open keeps streaming until it reconnects), a
//! new certificate is served from the next handshake on. Changed tokens also end the
//! dashboard's sessions (their key is derived from the set).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{LiveTokens, Tokens};
use crate::tls::CertStore;

/// Why a reload was refused; names the file, never a token or a key.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The tokens file could not be read or parsed.
    #[error("tokens file {}: {reason}", .path.display())]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The certificate or key could not be read or do not make a usable pair.
    #[error("TLS certificate {} / key {}: {reason}", .cert.display(), .key.display())]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Tokens in the new set (0 without a tokens file).
    pub tokens: usize,
    /// A certificate was loaded.
    pub certificate: bool,
}

/// The files the collector serves from and the live sets they fill.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    tokens: Option<(PathBuf, LiveTokens)>,
    tls: Option<(PathBuf, PathBuf, Arc<CertStore>)>,
}

impl Reloader {
    /// Reloads `path` into `live` on every reload.
    pub fn with_tokens(mut self, path: PathBuf, live: LiveTokens) -> Reloader {
        self.tokens = Some((path, live));
        self
    }

    /// Reloads the pair `cert`, `key` into `store` on every reload.
    pub fn with_tls(mut self, cert: PathBuf, key: PathBuf, store: Arc<CertStore>) -> Reloader {
        self.tls = Some((cert, key, store));
        self
    }

    /// Reads every file, then replaces everything, or nothing when any file is unusable
    /// (each problem is returned).
    pub fn reload(&self) -> Result<Reloaded, Vec<ReloadError>> {
        let mut problems = Vec::new();
        let tokens = self
            .tokens
            .as_ref()
            .and_then(|(path, _)| match read_tokens(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(e);
                    None
                }
            });
        let pair = self.tls.as_ref().and_then(|(cert, key, _)| {
            let loaded = std::fs::read(cert)
                .map_err(|e| format!("reading the certificate: {e}"))
                .and_then(|c| {
                    std::fs::read(key)
                        .map_err(|e| format!("reading the key: {e}"))
                        .map(|k| (c, k))
                })
                .and_then(|(c, k)| crate::tls::certified_key(&c, &k).map_err(|e| e.to_string()));
            match loaded {
                Ok(pair) => Some(pair),
                Err(reason) => {
                    problems.push(ReloadError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason,
                    });
                    None
                }
            }
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut done = Reloaded {
            tokens: 0,
            certificate: false,
        };
        if let (Some((_, live)), Some(t)) = (&self.tokens, tokens) {
            done.tokens = t.len();
            crate::auth::log_roles(&t);
            live.replace(t);
        }
        if let (Some((_, _, store)), Some(pair)) = (&self.tls, pair) {
            store.replace(pair);
            done.certificate = true;
        }
        Ok(done)
    }

    /// Reloads once, logging the outcome (and counting it by result).
    pub fn reload_logged(&self) {
        if self.tokens.is_none() && self.tls.is_none() {
            tracing::info!("reload asked; no tokens file or certificate to reload");
            return;
        }
        match self.reload() {
            Ok(r) => {
                metrics::counter!("finwait_reloads_total", "result" => "ok").increment(1);
                tracing::info!(
                    tokens = r.tokens,
                    certificate = r.certificate,
                    "reloaded tokens and certificate"
                );
            }
            Err(problems) => {
                metrics::counter!("finwait_reloads_total", "result" => "refused").increment(1);
                for p in problems {
                    tracing::error!(error = %p, "reload refused; the previous tokens and certificate stay in force");
                }
            }
        }
    }
}

fn read_tokens(path: &PathBuf) -> Result<Tokens, ReloadError> {
    let err = |reason: String| ReloadError::Tokens {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    Tokens::parse(&text).map_err(|e| err(e.to_string()))
}

/// Reloads on every SIGHUP until `stop`; a task of the collector's tracker.
pub async fn on_sighup(reloader: Reloader, stop: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading needs a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            got = hup.recv() => {
                if got.is_none() {
                    break;
                }
                let r = reloader.clone();
                // File reads and key parsing are blocking work.
                if let Err(e) = tokio::task::spawn_blocking(move || r.reload_logged()).await {
                    tracing::error!(error = %e, "reload task failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::pair;

    #[test]
    fn a_bad_file_changes_nothing_and_a_good_set_replaces_everything() {
        let dir = std::env::temp_dir().join(format!("finwait-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (tokens, cert, key) = (dir.join("tokens"), dir.join("c.pem"), dir.join("k.pem"));
        let (c1, k1) = pair("one.example");
        std::fs::write(&tokens, "ingest:A\n").expect("write");
        std::fs::write(&cert, &c1).expect("write");
        std::fs::write(&key, &k1).expect("write");
        let live = LiveTokens::new(Tokens::parse("ingest:A\n").expect("tokens"));
        let store =
            CertStore::new(crate::tls::certified_key(c1.as_bytes(), k1.as_bytes()).expect("pair"));
        let r = Reloader::default()
            .with_tokens(tokens.clone(), live.clone())
            .with_tls(cert.clone(), key.clone(), store);
        let accepts = |t: &str| {
            crate::auth::check(
                Some(&live.current()),
                Some(&format!("Bearer {t}")),
                crate::auth::Role::Ingest,
            )
            .is_ok()
        };

        // New tokens, but a key that is not the certificate's: nothing changes.
        let (c2, k2) = pair("two.example");
        let (_, stray) = pair("stray.example");
        std::fs::write(&tokens, "ingest:B\n").expect("write");
        std::fs::write(&cert, &c2).expect("write");
        std::fs::write(&key, &stray).expect("write");
        let e = r.reload().expect_err("mismatched pair");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("does not belong"), "{}", e[0]);
        assert!(accepts("A") && !accepts("B"), "the old set stays");

        // A broken tokens file: refused naming the file and line, never the token.
        std::fs::write(&key, &k2).expect("write");
        std::fs::write(&tokens, "admin:B\n").expect("write");
        let e = r.reload().expect_err("unknown role");
        assert!(
            e[0].to_string().contains("tokens file") && e[0].to_string().contains("line 1"),
            "{}",
            e[0]
        );
        assert!(accepts("A"));

        std::fs::write(&tokens, "ingest:B\n").expect("write");
        let done = r.reload().expect("good files");
        assert_eq!(
            done,
            Reloaded {
                tokens: 1,
                certificate: true
            }
        );
        assert!(accepts("B") && !accepts("A"), "rotated");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The listener's TLS, done here rather than by tonic so the certificate can be
//! replaced while the collector serves (SIGHUP, see [`crate::reload`]): every
//! handshake asks [`CertStore`] for the pair in force, so a new certificate reaches
//! new connections at once and open ones keep theirs.
//!
//! Behaves as tonic's own acceptor did: rustls on ring, ALPN `h2` only (the agent
//! speaks HTTP/2; the CLI offers no ALPN and speaks HTTP/1.1 on the same port), the
//! handshake bounded by `--handshake-seconds`. Handshakes run in their own tasks so a
//! slow client never holds up the accept loop; each holds its connection's place under
//! the cap ([`crate::conn_limit`]), so there are never more than the cap at once.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use crate::conn_limit::{Conn, ConnInfo};

/// A certificate chain and key that cannot be served; says which part, never the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No `CERTIFICATE` block, or one that is not PEM.
    #[error("no usable certificate: {0}")]
    Certificate(String),
    /// No private key block, or one rustls cannot use.
    #[error("no usable private key: {0}")]
    Key(String),
    /// A key that is not the certificate's.
    #[error("the private key does not belong to the certificate: {0}")]
    Mismatch(String),
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and key into a pair rustls serves, refusing a key
/// that does not match the first certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch(e.to_string()),
        other => TlsError::Key(other.to_string()),
    })
}

/// The certificate in force, replaced whole by [`CertStore::replace`].
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore(<certificate>)")
    }
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Serves `key` to every handshake from now on.
    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration over `store`: ring, safe default versions, no
/// client certificates, ALPN `h2`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A served connection: plaintext, or TLS over it.
pub enum Io {
    /// `--insecure-loopback`.
    Plain(Conn),
    /// After a finished handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

/// Turns admitted connections into served ones: passed through without TLS, else each
/// handshake in its own task, bounded by `handshake`; a failed or slow handshake closes
/// its connection and is logged at debug (scanners do it all day).
pub fn serve(
    conns: impl Stream<Item = io::Result<Conn>> + Send + Unpin + 'static,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake: Duration,
) -> ReceiverStream<io::Result<Io>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut conns = conns;
        while let Some(conn) = conns.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(config) = &tls else {
                if tx.send(Ok(Io::Plain(conn))).await.is_err() {
                    break;
                }
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Io::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        metrics::counter!("finwait_connections_closed_total", "reason" => "handshake")
                            .increment(1);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_flush(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(c) => c.is_write_vectored(),
            Io::Tls(t) => t.is_write_vectored(),
        }
    }
}

impl Connected for Io {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Io::Plain(c) => c.connect_info(),
            Io::Tls(t) => t.get_ref().0.connect_info(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, both PEM.
    pub(crate) fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_pair_loads_and_a_mismatched_or_broken_one_is_refused_saying_which_part() {
        let (cert, key) = pair("a.example");
        let (_, other_key) = pair("b.example");
        certified_key(cert.as_bytes(), key.as_bytes()).expect("a matching pair");
        let e = certified_key(cert.as_bytes(), other_key.as_bytes()).expect_err("mismatch");
        assert!(matches!(e, TlsError::Mismatch(_)), "{e}");
        let e = certified_key(b"not pem", key.as_bytes()).expect_err("no cert");
        assert!(matches!(e, TlsError::Certificate(_)), "{e}");
        let e = certified_key(cert.as_bytes(), cert.as_bytes()).expect_err("no key");
        assert!(matches!(e, TlsError::Key(_)), "{e}");
        assert!(!e.to_string().contains("PRIVATE KEY-----\n"), "{e}");
    }
}

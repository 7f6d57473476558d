//! One HTTP GET against the collector: a fresh HTTP/1.1 connection per request (hyper's
//! low-level client over a tokio `TcpStream`, wrapped in rustls for `https://`), the
//! bearer token when there is one, the whole exchange bounded by `--timeout` and the
//! body bounded in bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use finwait_vocab::answer::ErrorBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::Error;
use crate::url::{Query, Scheme, ServerUrl};

/// The largest response body accepted. A full page (10,000 sockets with command lines)
/// is a few MiB; anything near this is not the collector talking.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A bearer token. Never printed: `Debug` hides it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token, trimmed; `None` when nothing is left.
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    /// Reads the token from a file (its only content, surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Token, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::TokenFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Token::new(&text).ok_or_else(|| Error::TokenFile {
            path: path.to_path_buf(),
            reason: "empty".into(),
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// How to reach the collector.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL.
    pub server: ServerUrl,
    /// Sent as `Authorization: Bearer …` when present.
    pub token: Option<Token>,
    /// PEM file of CA certificates trusted for `https://` (required for it: no system
    /// roots are consulted).
    pub ca: Option<PathBuf>,
    /// Bound on one whole request: connect, TLS, response and body.
    pub timeout: Duration,
    /// The timeout as the user wrote it, for messages.
    pub timeout_shown: String,
}

/// An HTTP client of one collector.
pub struct Client {
    server: ServerUrl,
    authorization: Option<HeaderValue>,
    tls: Option<TlsConnector>,
    timeout: Duration,
    timeout_shown: String,
}

impl Client {
    /// Checks the options (token usable in a header, CA readable) without connecting.
    pub fn new(options: ClientOptions) -> Result<Client, Error> {
        let authorization = match &options.token {
            None => None,
            Some(Token(t)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    Error::Usage("the token holds characters not allowed in an HTTP header".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let tls = match options.server.scheme() {
            Scheme::Http => None,
            Scheme::Https => {
                let Some(ca) = &options.ca else {
                    return Err(Error::Usage(format!(
                        "{} is https: give --ca (or FINWAIT_CA) with the PEM certificate of the CA that signed the collector's certificate",
                        options.server
                    )));
                };
                Some(tls_connector(ca)?)
            }
        };
        Ok(Client {
            server: options.server,
            authorization,
            tls,
            timeout: options.timeout,
            timeout_shown: options.timeout_shown,
        })
    }

    /// The base URL, for messages.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// GETs `path` with `query` and returns the body of a 2xx answer. Any other status
    /// becomes [`Error::Api`] (with the collector's message) or [`Error::Status`].
    pub async fn get(&self, path: &str, query: &Query) -> Result<Bytes, Error> {
        let target = self.server.target(path, query);
        let exchange = self.exchange(&target);
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                server: self.server.to_string(),
                after: self.timeout_shown.clone(),
            })??;
        if status.is_success() {
            return Ok(body);
        }
        Err(self.status_error(status, path, &body))
    }

    fn status_error(&self, status: StatusCode, path: &str, body: &[u8]) -> Error {
        if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
            return Error::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = crate::format::truncate(&crate::format::one_line(text.trim()), 200);
        Error::Status {
            server: self.server.to_string(),
            status: status.to_string(),
            path: path.to_string(),
            detail: if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            },
        }
    }

    async fn exchange(&self, target: &str) -> Result<(StatusCode, Bytes), Error> {
        let server = || self.server.to_string();
        let tcp = TcpStream::connect((self.server.host(), self.server.port()))
            .await
            .map_err(|source| Error::Connect {
                server: server(),
                source,
            })?;
        // Best effort: a request is one small write, Nagle only delays it.
        let _ = tcp.set_nodelay(true);
        let request = self.request(target)?;
        match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.server.host().to_string())
                    .map_err(|e| Error::Usage(format!("{}: {e} for TLS", self.server)))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|source| Error::Tls {
                        server: server(),
                        source,
                    })?;
                send(TokioIo::new(stream), request).await
            }
        }
        .map_err(|reason| Error::Http {
            server: server(),
            reason,
        })
    }

    fn request(&self, target: &str) -> Result<Request<Empty<Bytes>>, Error> {
        let mut builder = Request::get(target)
            .header(HOST, self.server.authority())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("finwait/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        builder
            .body(Empty::new())
            .map_err(|e| Error::Usage(format!("cannot build a request for {target}: {e}")))
    }
}

/// One request on a new HTTP/1.1 connection; the error is a one-line reason.
async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| chain(&e))?;
    // The connection future does the socket I/O; it ends when `sender` is dropped or the
    // server closes, and its errors surface through `send_request` and the body.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                format!("response larger than {} MiB", MAX_BODY_BYTES >> 20)
            } else {
                chain(e.as_ref())
            }
        })?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((status, body))
}

/// An error and its sources on one line (hyper's own messages are terse).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A TLS connector trusting only the CA certificates in `ca` (PEM), TLS 1.2 and 1.3 on
/// the ring provider. No ALPN is offered: the collector's port also speaks gRPC and
/// picks HTTP/1.1 by the request itself.
fn tls_connector(ca: &Path) -> Result<TlsConnector, Error> {
    let bad = |reason: String| Error::Ca {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_hidden() {
        assert!(Token::new("  \n").is_none());
        let t = Token::new(" s3cret\n").expect("non-empty");
        assert_eq!(t.0, "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn https_without_ca_is_refused_before_connecting() {
        let options = ClientOptions {
            server: ServerUrl::parse("https://collector:7070").expect("valid"),
            token: None,
            ca: None,
            timeout: Duration::from_secs(1),
            timeout_shown: "1s".into(),
        };
        let Err(e) = Client::new(options) else {
            panic!("https without --ca must be refused")
        };
        assert!(e.to_string().contains("--ca"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("finwait-cli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let Err(e) = tls_connector(&path) else {
            panic!("an empty CA file must be refused")
        };
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let Err(e) = tls_connector(&dir.join("missing.pem")) else {
            panic!("a missing CA file must be refused")
        };
        assert!(e.to_string().starts_with("CA file "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn error_bodies_become_the_servers_message() {
        let c = Client::new(ClientOptions {
            server: ServerUrl::parse("http://127.0.0.1:7070").expect("valid"),
            token: Token::new("t"),
            ca: None,
            timeout: Duration::from_secs(1),
            timeout_shown: "1s".into(),
        })
        .expect("valid options");
        let e = c.status_error(
            StatusCode::BAD_REQUEST,
            "/api/v1/leaks",
            br#"{"error": {"code": "InvalidArgument", "message": "limit: \"x\" is not a whole number from 1 to 10000"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "limit: \"x\" is not a whole number from 1 to 10000 (HTTP 400 InvalidArgument)"
        );
        let e = c.status_error(StatusCode::NOT_FOUND, "/api/v1/who", b"");
        assert_eq!(
            e.to_string(),
            "http://127.0.0.1:7070 answered HTTP 404 Not Found for /api/v1/who"
        );
        let e = c.status_error(
            StatusCode::BAD_GATEWAY,
            "/api/v1/who",
            b"<html>\nbad\n</html>",
        );
        assert_eq!(
            e.to_string(),
            "http://127.0.0.1:7070 answered HTTP 502 Bad Gateway for /api/v1/who: <html> bad </html>"
        );
    }
}

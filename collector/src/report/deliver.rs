//! Delivering stored reports: files in a directory, or a JSON POST to a webhook.
//!
//! Each (report, destination) is one `report_deliveries` row. A due row is taken
//! with `FOR UPDATE SKIP LOCKED` (so two collectors never send the same delivery at
//! once), sent, and marked `delivered` in the same transaction; a failure is retried
//! with doubling, jittered delays up to the attempt limit, across restarts, because
//! the state is in the database. A destination that acknowledged (2xx) is never sent
//! the report again. If the collector dies between the 2xx and the commit, the
//! report is sent once more: webhooks carry `Idempotency-Key: finwait-report-ID` so a
//! receiver can drop the repeat.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use finwait_vocab::report::{Report, ReportFormat};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sqlx::{PgPool, Row};

use super::render::render;
use super::schedule::{Destination, Schedules};

/// A webhook gets this long to answer.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// The system's CA bundle (Debian), for `https://` webhooks without a `ca_file`.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Delivers every due delivery (at most `limit`); returns how many were attempted.
pub async fn deliver_due(
    pool: &PgPool,
    settings: &Schedules,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    let mut attempted = 0;
    while attempted < limit {
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "SELECT d.report_id, d.label, d.destination, d.attempts, r.document \
             FROM report_deliveries d JOIN reports r USING (report_id) \
             WHERE d.state = 'pending' AND d.next_attempt_at <= now() \
             ORDER BY d.next_attempt_at, d.report_id LIMIT 1 \
             FOR UPDATE OF d SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            break;
        };
        attempted += 1;
        let id: i64 = row.try_get("report_id")?;
        let label: String = row.try_get("label")?;
        let attempts: i32 = row.try_get::<i32, _>("attempts")? + 1;
        let dest: sqlx::types::Json<Destination> = row.try_get("destination")?;
        let doc: sqlx::types::Json<Report> = row.try_get("document")?;
        let mut report = doc.0;
        report.id = Some(id);
        let span = tracing::info_span!("report_delivery", report = id, destination = %label, attempt = attempts);
        let outcome = {
            let _e = span.enter();
            tokio::time::timeout(
                WEBHOOK_TIMEOUT + Duration::from_secs(5),
                send(&dest.0, &report),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
        };
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "UPDATE report_deliveries SET state = 'delivered', attempts = $3, \
                     delivered_at = now(), last_error = NULL WHERE report_id = $1 AND label = $2",
                )
                .bind(id)
                .bind(&label)
                .bind(attempts)
                .execute(&mut *tx)
                .await?;
                tracing::info!(parent: &span, "report delivered");
            }
            Err(e) => {
                let give_up = attempts as u32 >= settings.max_attempts;
                let delay = backoff(settings, attempts as u32);
                sqlx::query(
                    "UPDATE report_deliveries SET state = $3, attempts = $4, last_error = $5, \
                     next_attempt_at = now() + $6 * interval '1 millisecond' \
                     WHERE report_id = $1 AND label = $2",
                )
                .bind(id)
                .bind(&label)
                .bind(if give_up { "failed" } else { "pending" })
                .bind(attempts)
                .bind(&e)
                .bind(delay.as_millis() as i64)
                .execute(&mut *tx)
                .await?;
                if give_up {
                    tracing::error!(parent: &span, error = %e, "report delivery failed; giving up");
                } else {
                    tracing::warn!(parent: &span, error = %e, retry_in_ms = delay.as_millis() as u64, "report delivery failed; will retry");
                }
            }
        }
        tx.commit().await?;
    }
    Ok(attempted)
}

/// The delay before attempt `attempts + 1`: `retry_initial` doubled per failure, at
/// most `retry_max`, minus up to a quarter at random so retries spread out.
pub fn backoff(s: &Schedules, attempts: u32) -> Duration {
    let base = s
        .retry_initial
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(s.retry_max);
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let jitter = base.mul_f64(f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 4.0);
    base.saturating_sub(jitter)
}

/// Sends `report` to `dest` once.
pub async fn send(dest: &Destination, report: &Report) -> Result<(), String> {
    match dest {
        Destination::Directory { path, formats } => write_files(path, formats, report).await,
        Destination::Webhook {
            url,
            text_only,
            ca_file,
        } => {
            let text = render(report, ReportFormat::Text);
            let body = if *text_only {
                serde_json::json!({ "text": text })
            } else {
                serde_json::json!({ "text": text, "report": report })
            };
            let key = format!("finwait-report-{}", report.id.unwrap_or(0));
            post(url, ca_file.as_deref(), &key, body.to_string()).await
        }
    }
}

/// The file name of `report` in `format`: `<schedule>-<end, UTC>.<ext>`.
pub fn file_name(report: &Report, format: ReportFormat) -> String {
    format!(
        "{}-{}.{}",
        report.scope.schedule,
        report.scope.window.end.format("%Y%m%dT%H%MZ"),
        format.extension()
    )
}

async fn write_files(dir: &Path, formats: &[ReportFormat], report: &Report) -> Result<(), String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in formats {
        let name = file_name(report, *f);
        let tmp = dir.join(format!(".{name}.tmp"));
        let dest = dir.join(&name);
        tokio::fs::write(&tmp, render(report, *f))
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(())
}

/// An `http(s)://host[:port]/path` URL, split.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    target: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or("unclosed [ in URL")?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("port {p:?} in {url:?}"))?,
        None => default,
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok(Url {
        tls,
        host,
        port,
        target,
    })
}

async fn post(url: &str, ca_file: Option<&Path>, key: &str, body: String) -> Result<(), String> {
    let u = parse_url(url)?;
    let tcp = tokio::net::TcpStream::connect((u.host.as_str(), u.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", u.host, u.port))?;
    let host_header = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let request = Request::post(&u.target)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("finwait-collector/", env!("CARGO_PKG_VERSION")),
        )
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        if u.tls {
            let connector = tls(ca_file)?;
            let name =
                ServerName::try_from(u.host.clone()).map_err(|e| format!("{}: {e}", u.host))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", u.host))?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    };
    let (status, reply) = tokio::time::timeout(WEBHOOK_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", WEBHOOK_TIMEOUT.as_secs()))??;
    if status.is_success() {
        Ok(())
    } else {
        let snippet: String = String::from_utf8_lossy(&reply).chars().take(200).collect();
        Err(format!("HTTP {status}: {}", snippet.trim()))
    }
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let out = match response {
        Ok(r) => {
            let status = r.status();
            // A receiver's answer is read up to 64 KiB: only a snippet is kept.
            let body = http_body_util::Limited::new(r.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok((status, body))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

fn tls(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CAS));
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificates", path.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_with_default_ports_and_v6() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook/x?y=1"),
            Ok(Url {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                target: "/hook/x?y=1".into()
            })
        );
        assert_eq!(
            parse_url("https://chat.example.net"),
            Ok(Url {
                tls: true,
                host: "chat.example.net".into(),
                port: 443,
                target: "/".into()
            })
        );
        assert_eq!(
            parse_url("http://[::1]:9/h"),
            Ok(Url {
                tls: false,
                host: "::1".into(),
                port: 9,
                target: "/h".into()
            })
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let mut s = Schedules::defaults(&Default::default()).expect("defaults");
        s.retry_initial = Duration::from_secs(10);
        s.retry_max = Duration::from_secs(60);
        for (attempt, base) in [(1, 10), (2, 20), (3, 40), (4, 60), (30, 60)] {
            let d = backoff(&s, attempt);
            let base = Duration::from_secs(base);
            assert!(
                d <= base && d >= base.mul_f64(0.75),
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }
}

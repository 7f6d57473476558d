//! A minimal HTTP/1.1 GET over a tokio `TcpStream`, enough to time the collector's JSON
//! API from the outside: one connection per request (`Connection: close`, so the
//! timing includes the connect, as a fresh client's would), the whole answer read
//! (bounded), `Content-Length` or chunked bodies.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer accepted, bytes (the API pages at 10,000 rows).
const MAX_RESPONSE: u64 = 256 << 20;

/// An answer: status and decoded body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// `GET path` from `addr`, all of it within `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::with_capacity(64 << 10);
        (&mut s)
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut raw)
            .await
            .with_context(|| format!("reading the answer to {path}"))?;
        if raw.len() as u64 > MAX_RESPONSE {
            bail!("answer to {path} is larger than {MAX_RESPONSE} bytes");
        }
        parse(&raw).with_context(|| format!("answer to {path}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("GET {path}: no full answer within {timeout:?}"))?
}

/// Parses a whole HTTP/1.1 response (the connection closed after it).
fn parse(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .with_context(|| format!("body shorter than content-length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line not ended")?;
        let line = std::str::from_utf8(&b[..eol]).context("chunk size is not UTF-8")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {line:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).context("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).context("chunk not followed by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body_is_cut_at_its_length() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .expect("parses");
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"{}".to_vec()
            }
        );
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let r = parse(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"a\": 1}".to_vec());
    }

    #[test]
    fn truncated_answers_are_errors() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}

//! The smallest HTTP/1.1 client chromedriver needs: one blocking request per loopback
//! connection, JSON in and out, every read and write bounded by a timeout. A WebDriver
//! session is a handful of sequential commands, so a pooled async client would add a
//! runtime to every test for nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Largest response accepted (a full-page screenshot of a big window is a few MB).
const MAX_RESPONSE: usize = 64 << 20;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Sends `method path` with an optional JSON body over `stream` (connected to
/// chromedriver) and reads the whole answer, giving up after `timeout` on each read or
/// write.
pub(crate) fn request(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response> {
    let addr = stream.peer_addr().context("chromedriver's address")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = match body {
        Some(v) => serde_json::to_vec(v)?,
        None => Vec::new(),
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .with_context(|| format!("sending {method} {path}"))?;
    // chromedriver keeps the connection open despite `Connection: close`, so the
    // answer ends where its framing says, not at end of stream.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            // A signal landed on this thread mid-read; nothing was lost.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.with_context(|| {
                format!("reading the answer to {method} {path} (timeout {timeout:?})")
            })?,
        };
        raw.extend_from_slice(&buf[..n]);
        let eof = n == 0;
        if let Some(resp) =
            parse(&raw, eof).with_context(|| format!("answer to {method} {path}"))?
        {
            return Ok(resp);
        }
        if raw.len() > MAX_RESPONSE {
            bail!("answer to {method} {path} is over {MAX_RESPONSE} bytes");
        }
    }
}

/// Parses an HTTP/1.1 response: `None` while it is incomplete and more may come, an
/// error when it is malformed or the stream ended (`eof`) before it was complete.
fn parse(raw: &[u8], eof: bool) -> Result<Option<Response>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if eof {
            bail!("connection closed before the end of headers");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        (rest.len() >= n).then(|| rest[..n].to_vec())
    } else if eof {
        Some(rest.to_vec())
    } else {
        None
    };
    match body {
        Some(body) => Ok(Some(Response { status, body })),
        None if eof => bail!("connection closed before the end of the body"),
        None => Ok(None),
    }
}

/// Decodes a chunked body (extensions and trailers ignored); `None` until the last
/// chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).context("chunk size is not UTF-8")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8], eof: bool) -> Result<Response> {
        parse(raw, eof)?.context("incomplete")
    }

    #[test]
    fn content_length_body_is_complete_without_end_of_stream() -> Result<()> {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let r = complete(raw, false)?;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        assert!(parse(&raw[..raw.len() - 1], false)?.is_none());
        Ok(())
    }

    #[test]
    fn chunked_body_is_joined() -> Result<()> {
        let raw = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n\
                    3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        let r = complete(raw, false)?;
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{\"a\":1}"[..]));
        assert!(parse(&raw[..raw.len() - 7], false)?.is_none());
        Ok(())
    }

    #[test]
    fn answers_cut_short_by_the_server_are_errors() -> Result<()> {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", true).is_err());
        let chunk_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse(chunk_cut, true).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n", true).is_err());
        assert_eq!(complete(b"HTTP/1.1 200 OK\r\n\r\n{}", true)?.body, b"{}");
        Ok(())
    }
}

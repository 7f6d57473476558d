//! The dashboard's pages on the same fleet: each page's time (GET from the outside,
//! fresh connection) beside the JSON API answer of the question it shows, so the
//! ratio is what rendering the page adds; and the overview's first load in bytes
//! (its HTML, every asset it names and its chart's JSON).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::http;
use super::queries::{Targets, encode};

/// One timed page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Short name.
    pub name: &'static str,
    /// Path and query.
    pub path: String,
    /// The API answer of the question the page shows.
    pub api: String,
}

/// The pages, about `t`; `leak` is a `/leak?...` path taken from the leak list.
pub fn all(t: &Targets, leak: &str) -> Vec<Page> {
    let ep = encode(&t.endpoint());
    let host = encode(&t.host);
    vec![
        Page {
            name: "overview",
            path: "/".into(),
            api: "/api/v1/leaks?limit=10000".into(),
        },
        Page {
            name: "leaks",
            path: "/leaks".into(),
            api: "/api/v1/leaks".into(),
        },
        Page {
            name: "leak",
            path: leak.to_owned(),
            api: "/api/v1/leaks".into(),
        },
        Page {
            name: "host",
            path: format!("/host?name={host}"),
            api: format!("/api/v1/sockets?host={host}"),
        },
        Page {
            name: "host-at",
            path: format!("/host?name={host}&at={}h", t.sockets_at_h),
            api: format!("/api/v1/sockets?host={host}&at={}h", t.sockets_at_h),
        },
        Page {
            name: "service",
            path: "/service?name=leaky-svc.service".into(),
            api: "/api/v1/leaks?service=leaky-svc.service&since=7d&limit=10000".into(),
        },
        Page {
            name: "who",
            path: format!("/who?endpoint={ep}"),
            api: format!("/api/v1/who?endpoint={ep}"),
        },
    ]
}

/// A page's timings.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Page times, ms.
    pub page_ms: Vec<f64>,
    /// API times, ms.
    pub api_ms: Vec<f64>,
    /// The page's size, bytes.
    pub bytes: usize,
}

async fn get_ms(addr: SocketAddr, path: &str) -> Result<(f64, usize)> {
    let t = Instant::now();
    let r = http::get(addr, path, Duration::from_secs(60)).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if r.status != 200 {
        bail!("GET {path} answered HTTP {}", r.status);
    }
    Ok((ms, r.body.len()))
}

/// A `/leak?...` link from the leak list (the first one).
pub async fn a_leak(addr: SocketAddr) -> Result<String> {
    let r = http::get(addr, "/leaks", Duration::from_secs(60)).await?;
    let html = String::from_utf8_lossy(&r.body);
    let start = html
        .find("href=\"/leak?")
        .context("the leak list links no leak")?;
    let rest = &html[start + 6..];
    let end = rest.find('"').context("unterminated link")?;
    Ok(rest[..end].replace("&#38;", "&").replace("&amp;", "&"))
}

/// Times every page and its API answer, interleaved, `warmup + runs` times.
pub async fn time(
    addr: SocketAddr,
    pages: &[Page],
    warmup: usize,
    runs: usize,
    deadline: Instant,
) -> Result<Vec<Sample>> {
    let mut out: Vec<Sample> = pages.iter().map(|_| Sample::default()).collect();
    for run in 0..warmup + runs {
        if Instant::now() > deadline {
            break;
        }
        for (p, s) in pages.iter().zip(out.iter_mut()) {
            let (ms, bytes) = get_ms(addr, &p.path).await?;
            let (ams, _) = get_ms(addr, &p.api).await?;
            if run >= warmup {
                s.page_ms.push(ms);
                s.api_ms.push(ams);
            }
            s.bytes = bytes;
        }
    }
    Ok(out)
}

/// The overview's first load: (what, bytes) for the HTML, each asset and the chart
/// data, as a browser with an empty cache fetches them.
pub async fn first_load(addr: SocketAddr) -> Result<Vec<(String, usize)>> {
    let r = http::get(addr, "/", Duration::from_secs(60)).await?;
    let html = String::from_utf8_lossy(&r.body).into_owned();
    let mut parts = vec![("/ (HTML)".to_owned(), r.body.len())];
    let mut urls: Vec<String> = Vec::new();
    for attr in ["src=\"", "href=\"", "data-src=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let Some(end) = rest.find('"') else { continue };
            let url = rest[..end].replace("&#38;", "&");
            let fetched =
                url.starts_with("/assets/") || (attr == "data-src=\"" && url.starts_with("/api/"));
            if fetched && !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    for u in urls {
        let r = http::get(addr, &u, Duration::from_secs(60)).await?;
        parts.push((u, r.body.len()));
    }
    Ok(parts)
}

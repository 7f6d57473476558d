//! The browser harness against a tiny page server on 127.0.0.1: navigation, forms,
//! screenshots, console errors and cookie flags, in a real headless Chromium; and a
//! browser inside a test LAN's router, which reaches the LAN and nothing else.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use finwait_testkit::{
    Browser, Lan, NetNs, Privilege, artifacts_dir, require_browser, require_browser_in,
    require_root,
};

/// A clean page: a link, a form field, and a session cookie with the flags a login
/// would set. The empty icon keeps Chromium from asking for /favicon.ico.
const ONE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>One</title>
<link rel="icon" href="data:,"></head><body>
<h1 id="head" data-kind="first">Page one</h1>
<form><input id="q" name="q" type="text" value=""></form>
<ul><li class="item">a</li><li class="item">b</li><li class="item">c</li></ul>
<a id="next" href="/two">to page two</a>
</body></html>"#;

/// A page whose inline script throws (served with no Content-Security-Policy).
const TWO: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Two</title>
<link rel="icon" href="data:,"></head><body>
<p id="msg">Page two</p>
<script>throw new Error("planted failure");</script>
</body></html>"#;

/// Serves ONE at `/` and TWO at `/two` on a loopback port, for the life of the test
/// process.
fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the page server");
    let addr = listener.local_addr().expect("page server address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    addr
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Skip the headers; the pages are fixed.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request.split(' ').nth(1).unwrap_or("/");
    let (status, extra, body) = match path {
        "/" => (
            "200 OK",
            "Set-Cookie: fw_session=s3cret; Path=/; HttpOnly; SameSite=Strict\r\n",
            ONE,
        ),
        "/two" => ("200 OK", "", TWO),
        _ => ("404 Not Found", "", "not found"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn navigates_reads_types_and_clicks_through_to_the_next_page() -> Result<()> {
    let Some(b) = require_browser("navigates_reads_types_and_clicks_through_to_the_next_page")
    else {
        return Ok(());
    };
    let base = format!("http://{}", serve());
    b.goto(&format!("{base}/"))?;
    assert_eq!(b.title()?, "One");
    assert_eq!(b.current_url()?, format!("{base}/"));
    assert!(b.source()?.contains("Page one"));

    let head = b.find("#head")?;
    assert_eq!(head.text()?, "Page one");
    assert_eq!(head.attr("data-kind")?.as_deref(), Some("first"));
    assert_eq!(head.attr("data-missing")?, None);
    let items = b.find_all("li.item")?;
    let texts = items.iter().map(|e| e.text()).collect::<Result<Vec<_>>>()?;
    assert_eq!(texts, ["a", "b", "c"]);
    assert!(b.find_all("li.none")?.is_empty());

    let q = b.find("#q")?;
    q.send_keys("CLOSE_WAIT")?;
    assert_eq!(q.property("value")?, "CLOSE_WAIT");
    assert_eq!(q.attr("value")?.as_deref(), Some(""), "the markup's value");

    b.find("a#next")?.click()?;
    let msg = b.wait_for("#msg", Duration::from_secs(10))?;
    assert_eq!(msg.text()?, "Page two");
    assert_eq!(b.current_url()?, format!("{base}/two"));
    assert_eq!(b.title()?, "Two");
    Ok(())
}

#[test]
fn missing_elements_are_errors_and_waiting_for_one_is_bounded() -> Result<()> {
    let Some(b) = require_browser("missing_elements_are_errors_and_waiting_for_one_is_bounded")
    else {
        return Ok(());
    };
    b.goto(&format!("http://{}/", serve()))?;
    let e = b.find("#nowhere").err().context("#nowhere was found")?;
    assert!(format!("{e:#}").contains("no such element"), "{e:#}");
    let started = Instant::now();
    let e = b
        .wait_for("#nowhere", Duration::from_millis(300))
        .err()
        .context("#nowhere appeared")?;
    assert!(e.to_string().contains("after 300ms"), "{e:#}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        b.goto("http://192.0.2.1/").is_err(),
        "only loopback URLs are visited"
    );
    Ok(())
}

#[test]
fn screenshot_is_a_png_in_the_artifacts_dir() -> Result<()> {
    let Some(b) = require_browser("screenshot_is_a_png_in_the_artifacts_dir") else {
        return Ok(());
    };
    b.set_window_size(1024, 700)?;
    b.goto(&format!("http://{}/", serve()))?;
    let path = artifacts_dir()?.join("testkit-browser-one.png");
    let _ = std::fs::remove_file(&path);
    b.screenshot_png(&path)?;
    let png = std::fs::read(&path)?;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG magic bytes");
    assert!(
        png.len() > 2_000,
        "a rendered page, not a blank image: {} bytes",
        png.len()
    );
    // IHDR holds the size: the viewport of a 1024 × 700 window, less the height
    // headless Chromium keeps for its (invisible) toolbars.
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!(width, 1024);
    assert!((400..=700).contains(&height), "viewport height {height}");
    Ok(())
}

#[test]
fn console_errors_come_from_the_throwing_page_only() -> Result<()> {
    let Some(b) = require_browser("console_errors_come_from_the_throwing_page_only") else {
        return Ok(());
    };
    let base = format!("http://{}", serve());
    b.goto(&format!("{base}/"))?;
    assert_eq!(b.console_errors()?, Vec::<String>::new());

    b.goto(&format!("{base}/two"))?;
    let errors = b.console_errors()?;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("planted failure"), "{errors:?}");
    // Each entry is handed out once.
    assert_eq!(b.console_errors()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn cookie_flags_set_by_the_server_are_visible() -> Result<()> {
    let Some(b) = require_browser("cookie_flags_set_by_the_server_are_visible") else {
        return Ok(());
    };
    b.goto(&format!("http://{}/", serve()))?;
    let cookies = b.cookies()?;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(
        (c.name.as_str(), c.value.as_str()),
        ("fw_session", "s3cret")
    );
    assert!(c.http_only, "{c:?}");
    assert!(!c.secure, "{c:?}");
    assert_eq!(c.same_site.as_deref(), Some("Strict"));
    assert_eq!(c.path.as_deref(), Some("/"));
    assert_eq!(c.expiry, None, "a session cookie");
    Ok(())
}

/// Binds `addr` inside `ns` (from a thread that entered it; the listener stays there)
/// and answers every request with `page`, counting connections in `hits`.
fn serve_in(ns: &NetNs, addr: &str, page: String, hits: Arc<AtomicUsize>) -> SocketAddr {
    let netns = std::fs::File::open(ns.path()).expect("opening the namespace");
    let addr: SocketAddr = addr.parse().expect("address");
    let listener = std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                netns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("entering the namespace");
            TcpListener::bind(addr).expect("binding in the namespace")
        })
        .join()
        .expect("binding thread")
    });
    let bound = listener.local_addr().expect("bound address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            hits.fetch_add(1, Ordering::Relaxed);
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    bound
}

#[test]
fn a_browser_in_a_lan_router_reaches_the_lan_and_nothing_else() -> Result<()> {
    if require_root("a_browser_in_a_lan_router_reaches_the_lan_and_nothing_else")
        == Privilege::OptedOut
    {
        return Ok(());
    }
    let lan = Lan::create("brw", 1)?;
    let router = lan.router();
    // An address the router can reach that is not a test LAN's: stands for the world.
    router.output("ip", &["addr", "add", "10.79.0.1/32", "dev", "lo"])?;
    let outside_hits = Arc::new(AtomicUsize::new(0));
    let outside = serve_in(
        router,
        "10.79.0.1:0",
        "outside".into(),
        outside_hits.clone(),
    );
    // A LAN page that tries to load something from outside.
    let page = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>LAN</title>
<link rel="icon" href="data:,"></head><body><p id="msg">on the LAN</p>
<img src="http://{outside}/probe.png" alt=""></body></html>"#
    );
    let v4 = serve_in(router, "10.77.0.1:0", page.clone(), Arc::default());
    let v6 = serve_in(router, "[fd77::1]:0", page, Arc::default());

    let Some(b) = require_browser_in(
        "a_browser_in_a_lan_router_reaches_the_lan_and_nothing_else",
        Some(router),
    ) else {
        return Ok(());
    };
    for base in [format!("http://{v4}"), format!("http://{v6}")] {
        b.goto(&format!("{base}/"))?;
        assert_eq!(b.title()?, "LAN", "{base}");
        assert_eq!(b.find("#msg")?.text()?, "on the LAN");
        let errors = b.console_errors()?;
        assert!(
            errors.iter().any(|e| e.contains("ERR_NAME_NOT_RESOLVED")),
            "the outside image must not resolve: {errors:?}"
        );
    }
    let refused = b.goto(&format!("http://{outside}/"));
    assert!(refused.is_err(), "goto leaves the LAN: {refused:?}");
    assert_eq!(
        outside_hits.load(Ordering::Relaxed),
        0,
        "Chromium reached an address outside the test LANs"
    );
    // Dropping the browser kills chromedriver and every Chromium process it started:
    // nothing is left running in the namespace.
    let running = || -> Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", router.name()])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    assert!(!running()?.is_empty(), "the browser runs in the router");
    drop::<Browser>(b);
    // SIGKILL is delivered at once, but a process takes a moment to be gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = running()?;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running in the router: {left}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

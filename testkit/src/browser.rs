//! A real headless Chromium for page tests, driven over W3C WebDriver.
//!
//! [`Browser::start`] starts its own `chromedriver` on a loopback port chromedriver
//! picks itself (`--port=0`, so no port race), opens one session with a fresh profile,
//! and on drop closes the session, kills that chromedriver's process group (its pid,
//! which every Chromium process it started belongs to) and removes the profile.
//! [`Browser::start_in`] does the same inside a test's network namespace (a
//! [`crate::Lan`]'s router, say), so pages served on the test LAN are reachable.
//! Everything is blocking: a page test is a short sequence of commands.
//!
//! The browser never dials out: background networking, component updates, sync and
//! QUIC are off, no host resolves (by name or address) but loopback and, for a browser
//! inside a test namespace, the test LANs' ranges ([`crate::Lan::owns`]), and
//! [`Browser::goto`] refuses any other URL.

mod driver;
mod element;
mod http;

pub use element::Element;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::{Lan, NetNs};
use driver::{Driver, INSTALL_HINT, chromium_binary, missing_programs};

/// Environment variable that opts out of browser tests when Chromium is not installed
/// (ignored under CI).
pub const SKIP_BROWSER_ENV: &str = "FINWAIT_SKIP_BROWSER_TESTS";

/// Headless as root (hence no sandbox), quiet and offline.
const CHROMIUM_ARGS: [&str; 11] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
    // Test servers present certificates from a CA made for the test, which Chromium
    // cannot be told to trust without an NSS database. Ignoring certificate errors is
    // safe here only because nothing but the test's own servers can be reached (the
    // resolver rules below, and `goto`).
    "--ignore-certificate-errors",
];

/// Only loopback resolves: `*` matches IP literals too, so this stops any other
/// address by name or by number (ERR_NAME_NOT_RESOLVED).
const RESOLVE_LOOPBACK: &str =
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.* , EXCLUDE ::1";
/// Inside a test namespace, the test LANs' ranges resolve too (10.77.0.0/16,
/// fd77::/16; see [`crate::Lan::owns`]).
const RESOLVE_LAN: &str = " , EXCLUDE 10.77.* , EXCLUDE fd77:*";

/// W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// chromedriver printing its port, then Chromium starting and opening a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket timeout of one command; page loads are capped below it by the session.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE_LOAD_MS: u64 = 30_000;
const POLL: Duration = Duration::from_millis(50);

/// A headless Chromium session; closed, with its chromedriver killed, on drop.
#[derive(Debug)]
pub struct Browser {
    /// The session every command is addressed to.
    session: String,
    /// Dropped after the session is closed.
    driver: Driver,
    /// Runs in a test's namespace, so test-LAN addresses may be visited.
    lan: bool,
}

/// A cookie as the browser stores it, with the flags a login page must set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Path attribute.
    #[serde(default)]
    pub path: Option<String>,
    /// Domain attribute (the host when none was set).
    #[serde(default)]
    pub domain: Option<String>,
    /// `HttpOnly`: hidden from page scripts.
    #[serde(default)]
    pub http_only: bool,
    /// `Secure`: sent over HTTPS only.
    #[serde(default)]
    pub secure: bool,
    /// `SameSite` as Chromium reports it (`Strict`, `Lax`, `None`).
    #[serde(default)]
    pub same_site: Option<String>,
    /// Expiry in seconds since the epoch; `None` for a session cookie.
    #[serde(default)]
    pub expiry: Option<u64>,
}

/// An error answer from chromedriver (`no such element`, `timeout`, ...).
#[derive(Debug)]
struct WebDriverError {
    error: String,
    message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl std::error::Error for WebDriverError {}

/// Starts a browser for `test`. Without Chromium or chromedriver it panics with how to
/// install them, unless [`SKIP_BROWSER_ENV`] is set outside CI: then it says the test
/// is skipped and returns `None`. Any other start-up failure panics.
pub fn require_browser(test: &str) -> Option<Browser> {
    require_browser_in(test, None)
}

/// [`require_browser`], with the browser inside network namespace `ns` when given
/// (see [`Browser::start_in`]).
pub fn require_browser_in(test: &str, ns: Option<&NetNs>) -> Option<Browser> {
    if let Some(missing) = missing_programs() {
        if !crate::under_ci() && std::env::var_os(SKIP_BROWSER_ENV).is_some() {
            eprintln!("SKIPPED {test}: {missing}, and {SKIP_BROWSER_ENV} opts out");
            return None;
        }
        panic!(
            "{test} needs headless Chromium: {missing}: {INSTALL_HINT}; or set \
             {SKIP_BROWSER_ENV}=1 to skip browser tests explicitly (not allowed under CI)"
        );
    }
    match Browser::start_in(ns) {
        Ok(b) => Some(b),
        Err(e) => panic!("{test}: {e:#}"),
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with browser console
    /// logging on, in this network namespace (loopback URLs only). Fails, saying how
    /// to install them, when either is missing.
    pub fn start() -> Result<Browser> {
        Browser::start_in(None)
    }

    /// [`Browser::start`] inside network namespace `ns` when given: chromedriver and
    /// Chromium run there, and besides loopback the test LANs' addresses
    /// ([`crate::Lan::owns`]) may be visited, e.g. a collector on a LAN's router.
    pub fn start_in(ns: Option<&NetNs>) -> Result<Browser> {
        if let Some(missing) = missing_programs() {
            bail!("headless Chromium is needed: {missing}: {INSTALL_HINT}");
        }
        let binary = chromium_binary().context("chromium disappeared")?;
        let driver = Driver::start(ns)?;
        let lan = ns.is_some();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(if lan {
            format!("{RESOLVE_LOOPBACK}{RESOLVE_LAN}")
        } else {
            RESOLVE_LOOPBACK.to_owned()
        });
        args.push(format!(
            "--user-data-dir={}",
            driver.dir.join("profile").display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": PAGE_LOAD_MS, "script": PAGE_LOAD_MS, "implicit": 0},
            "goog:chromeOptions": {"binary": binary, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = call(&driver, "POST", "/session", Some(&caps), START_TIMEOUT)
            .context("opening a WebDriver session (starting Chromium)")?;
        let session = answer["sessionId"]
            .as_str()
            .context("chromedriver answered no sessionId")?
            .to_owned();
        Ok(Browser {
            session,
            driver,
            lan,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        call(&self.driver, method, &path, body, COMMAND_TIMEOUT)
    }

    /// Opens `url`, which must be on a loopback address (or `about:`/`data:`; or, for
    /// a browser in a test namespace, a test LAN's address), and waits for it to load
    /// (30 s at most).
    pub fn goto(&self, url: &str) -> Result<()> {
        if !is_allowed_url(url, self.lan) {
            bail!(
                "{url} is not a loopback{} URL: test browsers never leave the test",
                if self.lan { " or test-LAN" } else { "" }
            );
        }
        self.cmd("POST", "/url", Some(&json!({"url": url})))
            .with_context(|| format!("opening {url}"))?;
        Ok(())
    }

    /// The URL of the current page.
    pub fn current_url(&self) -> Result<String> {
        string(self.cmd("GET", "/url", None)?)
    }

    /// The current page's title.
    pub fn title(&self) -> Result<String> {
        string(self.cmd("GET", "/title", None)?)
    }

    /// The current DOM serialised as HTML.
    pub fn source(&self) -> Result<String> {
        string(self.cmd("GET", "/source", None)?)
    }

    /// The first element matching `css`; an error if there is none.
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self
            .cmd("POST", "/element", Some(&by_css(css)))
            .with_context(|| format!("finding {css:?}"))?;
        self.element(&v)
    }

    /// Every element matching `css`, in document order (maybe none).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self
            .cmd("POST", "/elements", Some(&by_css(css)))
            .with_context(|| format!("finding all {css:?}"))?;
        let list = v.as_array().context("elements answer is not a list")?;
        list.iter().map(|e| self.element(e)).collect()
    }

    /// The first element matching `css`, polling until it appears or `timeout` passes.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css) {
                Ok(e) => return Ok(e),
                Err(e) if !is_no_such_element(&e) => return Err(e),
                Err(_) if Instant::now() >= deadline => {
                    bail!("no element matches {css:?} after {timeout:?}")
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn element(&self, v: &Value) -> Result<Element<'_>> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not an element reference: {v}"))?;
        Ok(Element {
            browser: self,
            id: id.to_owned(),
        })
    }

    /// Resizes the window. This is the outer size: `--headless=new` keeps room for
    /// browser chrome, so the viewport (and a screenshot) is as wide but 143 px shorter.
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        let rect = json!({"width": width, "height": height});
        self.cmd("POST", "/window/rect", Some(&rect))?;
        Ok(())
    }

    /// Writes a PNG of the viewport to `path`, creating its directory.
    pub fn screenshot_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let b64 = string(self.cmd("GET", "/screenshot", None)?)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Browser console entries at SEVERE (uncaught exceptions, `console.error`, failed
    /// loads) logged since the last call: chromedriver hands each entry out once.
    pub fn console_errors(&self) -> Result<Vec<String>> {
        let v = self.cmd("POST", "/se/log", Some(&json!({"type": "browser"})))?;
        let entries = v.as_array().context("log answer is not a list")?;
        Ok(entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the current page
    /// and returns what it returns; a returned promise is awaited (within the
    /// session's 30 s script timeout).
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// The cookies visible to the current page, with their flags.
    pub fn cookies(&self) -> Result<Vec<Cookie>> {
        let v = self.cmd("GET", "/cookie", None)?;
        serde_json::from_value(v).context("decoding cookies")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session lets Chromium exit cleanly; `driver` drops next and kills
        // whatever is left.
        let _ = call(
            &self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
            Duration::from_secs(10),
        );
    }
}

/// Sends one command and unwraps chromedriver's `{"value": ...}`.
fn call(
    driver: &Driver,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value> {
    let resp = http::request(driver.connect(timeout)?, method, path, body, timeout)?;
    let mut v: Value = serde_json::from_slice(&resp.body).with_context(|| {
        format!(
            "{method} {path}: answer {} is not JSON: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )
    })?;
    let value = v["value"].take();
    if resp.status != 200 || value.get("error").is_some() {
        let err = WebDriverError {
            error: value["error"].as_str().unwrap_or("error").to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        };
        return Err(anyhow::Error::new(err).context(format!("{method} {path}")));
    }
    Ok(value)
}

fn is_no_such_element(e: &anyhow::Error) -> bool {
    e.downcast_ref::<WebDriverError>()
        .is_some_and(|w| w.error == "no such element")
}

fn by_css(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

fn string(v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        v => bail!("expected a string, got {v}"),
    }
}

/// Whether `url` stays within the test: `about:`, `data:`, or http(s) to localhost or
/// a loopback address, or with `lan` to a test LAN's address.
fn is_allowed_url(url: &str, lan: bool) -> bool {
    if url.starts_with("about:") || url.starts_with("data:") {
        return true;
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_loopback() || (lan && Lan::owns(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_local() {
        for ok in [
            "http://127.0.0.1:8080/",
            "http://127.9.9.9",
            "https://[::1]:7070/leaks?x=1",
            "http://localhost/",
            "about:blank",
        ] {
            assert!(is_allowed_url(ok, false), "{ok}");
            assert!(is_allowed_url(ok, true), "{ok}");
        }
        for no in [
            "http://example.com/",
            "http://127.0.0.1.example.com/",
            "http://127.0.0.1@example.com/",
            "http://10.0.0.1/",
            "https://[fd77::1]/",
            "https://10.77.0.1:7070/",
            "file:///etc/passwd",
        ] {
            assert!(!is_allowed_url(no, false), "{no}");
        }
    }

    #[test]
    fn test_lan_urls_are_allowed_only_inside_a_test_namespace() {
        for ok in [
            "https://10.77.0.1:7070/login?next=%2F",
            "http://10.77.255.3/",
            "https://[fd77::1]:7070/",
            "https://[fd77:0:0:1::a]/",
        ] {
            assert!(is_allowed_url(ok, true), "{ok}");
            assert!(!is_allowed_url(ok, false), "{ok}");
        }
        for no in [
            "http://10.78.0.1/",
            "http://10.77.0.1.example.com/",
            "http://10.77.0.1@example.com/",
            "https://[fd78::1]/",
            "https://[fe80::1]/",
            "http://192.168.77.1/",
        ] {
            assert!(!is_allowed_url(no, true), "{no}");
        }
    }
}

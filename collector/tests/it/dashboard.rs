//! The dashboard in a real headless Chromium, against the real collector with real
//! leaks on the three-host namespace LAN of `correlation.rs`: a leaky server on A
//! (IPv4 and IPv6, in a service's cgroup), clients on B (IPv4) and C (IPv6), agents on
//! all three, the collector on the router over TLS with a token. The browser runs in
//! the router's namespace and goes through what a person would: the login redirect,
//! the login form, the overview's open-leak count, the leak list and its host filter,
//! one leak's both ends, a service, `who`, a host's table at a past instant, logout.
//! Every page is screenshotted to `artifacts_dir()` and has no console error; then every
//! same-origin link reachable from the overview is fetched with the session and must
//! answer 200, HTML pages with the security headers.
//!
//! One test, because starting the LAN, the agents and Chromium is the slow part.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use finwait_testkit::{
    Browser, Cgroup, Lan, Privilege, artifacts_dir, require_browser_in, require_root,
};
use serde_json::{Value, json};

use crate::correlation::{Fixture, Proc, poll, sockpop};

const TEST: &str = "dashboard_in_chromium_shows_real_leaks_from_login_to_logout";
/// Leaked connections: two from B to A over IPv4, two from C to A over IPv6.
const LEAKS: usize = 4;
/// The crawl's bound.
const MAX_URLS: usize = 200;
/// How long a page's charts may take to draw.
const CHART_WAIT: Duration = Duration::from_secs(10);

/// Polls `f` every 100 ms until it holds, failing after `timeout`.
fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid(manifest: &Value) -> u32 {
    manifest["pid"].as_u64().expect("pid") as u32
}

/// The browser's URL once it has left `from` (a click's navigation may still be on its
/// way when the click returns).
fn url_after(b: &Browser, from: &str) -> String {
    let mut url = String::new();
    until(&format!("leaving {from}"), Duration::from_secs(10), || {
        url = b.current_url().expect("url");
        url != from
    });
    url
}

fn text(b: &Browser, css: &str) -> String {
    b.find(css)
        .and_then(|e| e.text())
        .unwrap_or_else(|e| panic!("{css}: {e:#}"))
}

/// The rendered text of each row of the first table matching `table`.
fn rows(b: &Browser, table: &str) -> Vec<String> {
    b.find_all(&format!("{table} tbody tr"))
        .expect("rows")
        .iter()
        .map(|r| r.text().expect("row text"))
        .collect()
}

/// Waits until every chart on the page is drawn (a plot, or the no-data note), checks
/// none says its data was unavailable and the console has no error, and writes the
/// page's screenshot as `dashboard-NAME.png`.
fn settled(b: &Browser, name: &str) {
    let drawn = "return Array.from(document.querySelectorAll('.chart'))\
                 .every(c => c.querySelector('svg, canvas, .nochart'));";
    until(&format!("the charts of {name}"), CHART_WAIT, || {
        b.execute(drawn, &[]).expect("charts") == Value::Bool(true)
    });
    for note in b.find_all(".chart .nochart").expect("chart notes") {
        let t = note.text().expect("note");
        assert!(!t.contains("unavailable"), "{name}: a chart says {t:?}");
    }
    let errors = b.console_errors().expect("console");
    assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
    let path = artifacts_dir()
        .expect("artifacts")
        .join(format!("dashboard-{name}.png"));
    b.screenshot_png(&path).expect("screenshot");
}

#[test]
fn dashboard_in_chromium_shows_real_leaks_from_login_to_logout() {
    if require_root(TEST) == Privilege::OptedOut {
        return;
    }
    let started = Instant::now();
    let fx = Fixture::start("dash", 3);
    let lan = &fx.lan;
    let tag = std::process::id();
    let service = format!("leaky-dash-{tag}.service");
    let leaky_cg =
        Cgroup::create(&format!("finwait-it-dash-{tag}.slice/{service}")).expect("cgroup");
    let leak6 = format!("[{}]:8081", Lan::v6(0));
    let (leaky, lm) = sockpop(lan.host(0), &["serve", "10.77.0.10:8080", "--leak"]);
    let (_leaky6, lm6) = sockpop(lan.host(0), &["serve", &leak6, "--leak"]);
    let (_good, _) = sockpop(lan.host(0), &["serve", "10.77.0.10:9090"]);
    let (_b, b_leak) = sockpop(
        lan.host(1),
        &["connect", "10.77.0.10:8080", "--count", "2", "--close"],
    );
    let (_b2, _) = sockpop(
        lan.host(1),
        &["connect", "10.77.0.10:9090", "--count", "2", "--close"],
    );
    let (_c, c_leak) = sockpop(lan.host(2), &["connect", &leak6, "--count", "2", "--close"]);
    for m in [&lm, &lm6] {
        leaky_cg.add(pid(m)).expect("into cgroup");
    }
    let _agents: Vec<Proc> = ["host-a", "host-b", "host-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| fx.agent(i, name))
        .collect();
    let Some(b) = require_browser_in(TEST, Some(lan.router())) else {
        return;
    };
    let base = fx.url().to_owned();
    let at = |path: &str| format!("{base}{path}");

    // No session: every page sends the browser to the login page, and back after.
    b.goto(&at("/leaks?host=host-a")).expect("leaks");
    assert_eq!(
        b.current_url().expect("url"),
        at("/login?next=%2Fleaks%3Fhost%3Dhost-a")
    );
    b.goto(&at("/")).expect("overview");
    assert_eq!(b.current_url().expect("url"), at("/login?next=%2F"));
    assert!(b.title().expect("title").starts_with("Log in"));
    assert!(
        b.find_all("#refresh").expect("refresh").is_empty(),
        "live refresh on the login page swaps the form and wipes a token being typed"
    );
    settled(&b, "login");

    // A wrong token is refused and sets no cookie; the read token logs in.
    b.find("#token")
        .expect("token field")
        .send_keys("not-the-token")
        .expect("type");
    b.find("form.login button[type=submit]")
        .expect("submit")
        .click()
        .expect("submit");
    let refused = url_after(&b, &at("/login?next=%2F"));
    assert_eq!(refused, at("/login?next=%2F&failed=1"));
    assert!(text(&b, "form.login .error").contains("not accepted"));
    assert!(b.cookies().expect("cookies").is_empty(), "no session yet");
    b.find("#token")
        .expect("token field")
        .send_keys(fx.token())
        .expect("type");
    b.find("form.login button[type=submit]")
        .expect("submit")
        .click()
        .expect("submit");
    assert_eq!(url_after(&b, &refused), at("/"), "lands on the overview");
    let cookies = b.cookies().expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "finwait_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert!(session.http_only, "{session:?}");
    assert!(session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    assert_eq!(session.path.as_deref(), Some("/"), "{session:?}");

    // The overview counts the open leaks once the agents have reported them.
    poll("four leaks with their peers", || {
        let l = fx.leaks("since=10m");
        l.len() >= LEAKS && l.iter().all(|l| !l["peer"].is_null())
    });
    until(
        "the overview's open-leak count",
        Duration::from_secs(20),
        || {
            b.goto(&at("/")).expect("overview");
            text(&b, "#open-leaks .n") == LEAKS.to_string()
        },
    );
    let hosts = rows(&b, "table.hosts").join("\n");
    for h in ["host-a", "host-b", "host-c"] {
        assert!(hosts.contains(h), "{h} in the hosts table:\n{hosts}");
    }
    settled(&b, "overview");

    // The open-leaks card leads to the list: every leak, with holder pid and peer.
    b.find("#open-leaks").expect("card").click().expect("card");
    assert_eq!(url_after(&b, &at("/")), at("/leaks?since=24h"));
    let list = rows(&b, "table.leaks");
    assert_eq!(list.len(), LEAKS, "{list:#?}");
    for (holder, peer) in [(pid(&lm), "host-b"), (pid(&lm6), "host-c")] {
        let n = list
            .iter()
            .filter(|r| r.contains(&format!("pid {holder}")) && r.contains(peer))
            .count();
        assert_eq!(n, 2, "pid {holder} paired with {peer}: {list:#?}");
    }
    assert!(
        list.iter()
            .all(|r| r.contains("host-a") && r.contains("FIN_WAIT2"))
    );
    settled(&b, "leaks");

    // The host filter narrows the list: B holds none; A holds them all.
    b.find("form.filters input[name=host]")
        .expect("host")
        .send_keys("host-b")
        .expect("type");
    let here = b.current_url().expect("url");
    b.find("form.filters button[type=submit]")
        .expect("filter")
        .click()
        .expect("filter");
    assert!(url_after(&b, &here).contains("host=host-b"));
    assert!(rows(&b, "table.leaks").is_empty());
    assert!(text(&b, "main .empty").starts_with("No leaks match"));
    assert!(b.console_errors().expect("console").is_empty());
    b.goto(&at("/leaks")).expect("leaks");
    b.find("form.filters input[name=host]")
        .expect("host")
        .send_keys("host-a")
        .expect("type");
    b.find("form.filters button[type=submit]")
        .expect("filter")
        .click()
        .expect("filter");
    assert!(url_after(&b, &at("/leaks")).contains("host=host-a"));
    assert_eq!(rows(&b, "table.leaks").len(), LEAKS);
    assert!(b.console_errors().expect("console").is_empty());

    // One leak's page shows both ends.
    let here = b.current_url().expect("url");
    b.find("table.leaks tbody tr a[href^='/leak?']")
        .expect("details")
        .click()
        .expect("details");
    url_after(&b, &here);
    let holder = text(&b, "section.end[aria-label=Holder]");
    let peer = text(&b, "section.end[aria-label=Peer]");
    let holder_pid = [pid(&lm), pid(&lm6)]
        .into_iter()
        .find(|p| holder.contains(&format!("pid {p}")))
        .unwrap_or_else(|| panic!("a leaky server's pid in {holder}"));
    let peer_host = if holder_pid == pid(&lm) {
        "host-b"
    } else {
        "host-c"
    };
    for want in ["host-a", "finwait-sockpop", "CLOSE_WAIT", service.as_str()] {
        assert!(holder.contains(want), "{want} in the holder:\n{holder}");
    }
    for want in [peer_host, "FIN_WAIT2"] {
        assert!(peer.contains(want), "{want} in the peer:\n{peer}");
    }
    // The same holder's other leak (each server holds two), and the commands that
    // show the same from a terminal.
    let others = rows(&b, "section[aria-labelledby=others-h] table.leaks");
    assert_eq!(others.len(), 1, "{others:#?}");
    assert!(
        others[0].contains(&format!("pid {holder_pid}")),
        "{others:#?}"
    );
    let cli = text(&b, "section[aria-labelledby=cli-h] pre");
    assert!(cli.contains("finwait who "), "{cli}");
    assert!(
        cli.contains("finwait leaks --host host-a --process finwait-sockpop"),
        "{cli}"
    );
    settled(&b, "leak");

    // The holder's service: its leaks over time, on A, with peers on B and C.
    let here = b.current_url().expect("url");
    b.find("section.end[aria-label=Holder] a[href^='/service?']")
        .expect("service link")
        .click()
        .expect("service");
    url_after(&b, &here);
    assert!(b.title().expect("title").contains(&service));
    assert_eq!(rows(&b, "table.leaks").len(), LEAKS);
    let lede = text(&b, "p.lede");
    assert!(
        lede.starts_with(&format!("{LEAKS} leaked sockets")),
        "{lede}"
    );
    settled(&b, "service");

    // Who holds the leaky endpoint: the search box in the header.
    let here = b.current_url().expect("url");
    b.find("#top-endpoint")
        .expect("search")
        .send_keys("10.77.0.10:8080\u{E007}")
        .expect("search");
    assert_eq!(url_after(&b, &here), at("/who?endpoint=10.77.0.10%3A8080"));
    let who = rows(&b, "main table");
    let leaked: Vec<&String> = who.iter().filter(|r| r.contains("CLOSE_WAIT")).collect();
    assert_eq!(leaked.len(), 2, "{who:#?}");
    assert!(
        leaked
            .iter()
            .all(|r| r.contains("host-a") && r.contains("host-b") && r.contains("FIN_WAIT2")),
        "{who:#?}"
    );
    settled(&b, "who");

    // After the IPv4 server exits, A's page at a moment before still shows its
    // CLOSE_WAITs; now only the IPv6 server's are left.
    let leaking_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    drop(leaky);
    poll("the IPv4 leaks reported ended", || {
        fx.leaks("since=10m")
            .iter()
            .filter(|l| l["holder"]["local"] == "10.77.0.10:8080" && !l["until"].is_null())
            .count()
            == 2
    });
    let close_waits = |b: &Browser| -> Vec<String> {
        rows(b, "table.sockets")
            .into_iter()
            .filter(|r| r.starts_with("CLOSE_WAIT"))
            .collect()
    };
    b.goto(&at(&format!(
        "/host?name=host-a&at={}",
        leaking_at.replace(':', "%3A")
    )))
    .expect("host");
    let then = close_waits(&b);
    assert_eq!(then.len(), LEAKS, "at {leaking_at}: {then:#?}");
    // Each client's end, held by its server (the remote of a CLOSE_WAIT).
    for (clients, server) in [(&b_leak, pid(&lm)), (&c_leak, pid(&lm6))] {
        for local in clients["locals"].as_array().expect("locals") {
            let local = local.as_str().expect("local");
            assert!(
                then.iter()
                    .any(|r| r.contains(local) && r.contains(&format!("pid {server}"))),
                "{local} held by {server} at {leaking_at}: {then:#?}"
            );
        }
    }
    settled(&b, "host");
    // The table's filter keeps the instant: CLOSE_WAIT only, still as it was then.
    b.find("form.filters select[name=state] option[value=CLOSE_WAIT]")
        .expect("state option")
        .click()
        .expect("state");
    let here = b.current_url().expect("url");
    b.find("form.filters button[type=submit]")
        .expect("filter")
        .click()
        .expect("filter");
    let filtered = url_after(&b, &here);
    assert!(
        filtered.contains("state=CLOSE_WAIT") && filtered.contains("at=2"),
        "{filtered}"
    );
    let only = rows(&b, "table.sockets");
    assert_eq!(only.len(), LEAKS, "{filtered}: {only:#?}");
    assert!(
        only.iter().all(|r| r.starts_with("CLOSE_WAIT")),
        "{only:#?}"
    );
    assert!(b.console_errors().expect("console").is_empty());
    b.goto(&at("/host?name=host-a")).expect("host");
    let now = close_waits(&b);
    assert_eq!(now.len(), 2, "only the IPv6 leaks now: {now:#?}");
    assert!(
        now.iter()
            .all(|r| r.contains(&format!("pid {}", pid(&lm6)))),
        "{now:#?}"
    );
    settled(&b, "host-now");

    // The overview follows: two open, two ended.
    b.goto(&at("/")).expect("overview");
    assert_eq!(text(&b, "#open-leaks .n"), "2");
    let ended = text(&b, ".cards .card:last-child");
    assert!(ended.starts_with("2") && ended.contains("ended"), "{ended}");
    crawl(&b, &base);
    let errors = b.console_errors().expect("console");
    assert!(errors.is_empty(), "{errors:#?}");

    // Logging out ends the session: the cookie is gone, pages and the API refuse.
    b.goto(&at("/")).expect("overview");
    b.find("form[action='/logout'] button")
        .expect("logout")
        .click()
        .expect("logout");
    assert_eq!(url_after(&b, &at("/")), at("/login"));
    assert!(
        b.cookies()
            .expect("cookies")
            .iter()
            .all(|c| c.name != "finwait_session"),
        "session cookie kept"
    );
    b.goto(&at("/leaks")).expect("leaks");
    assert_eq!(b.current_url().expect("url"), at("/login?next=%2Fleaks"));
    let status = b
        .execute(
            "return fetch('/api/v1/hosts', {credentials: 'same-origin'}).then(r => r.status);",
            &[],
        )
        .expect("fetch");
    assert_eq!(status, json!(401), "the API after logout");
    eprintln!("{TEST}: {:.1} s", started.elapsed().as_secs_f64());
}

/// Fetches, with the page's session, every URL and returns for each its status,
/// content type, security headers and (for HTML) the absolute URLs of its links, as
/// the browser resolves them.
const FETCH_ALL: &str = r#"
const urls = arguments[0];
return Promise.all(urls.map(async (u) => {
  try {
    const r = await fetch(u, {credentials: "same-origin", redirect: "manual"});
    const type = r.headers.get("content-type") || "";
    let links = [];
    const csp = r.headers.get("content-security-policy") || "";
    // A stored report is a standalone document with inline styles (its own policy
    // allows them, and no script): parsed here, under the dashboard's policy, its
    // styles would be reported as violations of a policy that is not its own.
    if (type.startsWith("text/html") && !csp.includes("'unsafe-inline'")) {
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      links = Array.from(doc.querySelectorAll("a[href]"), a => new URL(a.getAttribute("href"), u).href);
    } else {
      await r.arrayBuffer();
    }
    return {url: u, status: r.status, type: type,
            csp: r.headers.get("content-security-policy"),
            nosniff: r.headers.get("x-content-type-options"),
            frame: r.headers.get("x-frame-options"), links: links};
  } catch (e) {
    return {url: u, status: -1, error: String(e)};
  }
}));
"#;

/// From the overview, breadth first: every same-origin link of every HTML page answers
/// 200 with the session (API JSON included), and every HTML page carries the security
/// headers. At most [`MAX_URLS`] URLs.
fn crawl(b: &Browser, base: &str) {
    let start = format!("{base}/");
    let mut seen: HashSet<String> = HashSet::from([start.clone()]);
    let mut queue: VecDeque<String> = VecDeque::from([start]);
    let mut kinds: HashSet<String> = HashSet::new();
    let mut fetched = 0;
    while !queue.is_empty() {
        let batch: Vec<String> = queue.drain(..queue.len().min(16)).collect();
        fetched += batch.len();
        let answers = b.execute(FETCH_ALL, &[json!(batch)]).expect("crawl fetch");
        for a in answers.as_array().expect("answers") {
            let url = a["url"].as_str().expect("url");
            assert_eq!(a["status"], 200, "{url}: {a}");
            let path = url.strip_prefix(base).expect("same origin");
            let kind = path.split('?').next().unwrap_or(path);
            kinds.insert(kind.to_owned());
            let ty = a["type"].as_str().unwrap_or("");
            if kind.starts_with("/api/v1/reports/") {
                // A stored report in the format its link asks for.
                let want = if url.contains("format=markdown") {
                    "text/markdown"
                } else if url.contains("format=csv") {
                    "text/csv"
                } else {
                    "application/json"
                };
                assert!(ty.starts_with(want), "{url}: {ty}");
                continue;
            }
            if kind.starts_with("/api/v1/") {
                assert!(ty.starts_with("application/json"), "{url}: {ty}");
                continue;
            }
            assert!(ty.starts_with("text/html"), "{url}: {ty}");
            assert!(
                a["csp"]
                    .as_str()
                    .is_some_and(|c| c.contains("default-src 'none'")),
                "{url}: {a}"
            );
            if kind.starts_with("/reports/") {
                // Scripts fall back to default-src 'none': a report runs none.
                let csp = a["csp"].as_str().unwrap_or("");
                assert!(!csp.contains("script-src"), "{url}: {csp}");
            }
            assert_eq!(a["nosniff"], "nosniff", "{url}");
            assert_eq!(a["frame"], "DENY", "{url}");
            for link in a["links"].as_array().expect("links") {
                let link = link.as_str().expect("link");
                let link = link.split('#').next().unwrap_or(link);
                if !link.starts_with(&format!("{base}/")) {
                    continue;
                }
                if seen.len() < MAX_URLS && seen.insert(link.to_owned()) {
                    queue.push_back(link.to_owned());
                }
            }
        }
    }
    for kind in [
        "/",
        "/leaks",
        "/leak",
        "/host",
        "/service",
        "/who",
        "/api/v1/leaks",
        "/api/v1/sockets",
        "/api/v1/timeline",
        "/api/v1/fleet",
        "/api/v1/hosts",
    ] {
        assert!(
            kinds.contains(kind),
            "the crawl reached no {kind}: {kinds:?}"
        );
    }
    eprintln!("crawled {fetched} URLs");
}

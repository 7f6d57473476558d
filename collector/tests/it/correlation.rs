//! Leak correlation across real hosts: three namespaces on a private LAN, an agent in
//! each, the collector on the LAN's router over TLS with tokens. A server on host A
//! never closes its connections; clients on B (IPv4) and C (IPv6) connect and close.
//! A well-behaved server runs beside it. The leaks API must return exactly the leaked
//! connections with holder and peers right, confidence exact, and nothing for the
//! well-behaved traffic; when the leaking process exits, the leaks are reported ended.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use finwait_testkit::{Lan, NetNs, Privilege, Sockpop, require_root, workspace_bin};

use crate::e2e::spawn_announced;
use crate::support::{TestDb, certificates};

pub(crate) use crate::e2e::Proc;

/// The real collector inside `ns`, plaintext on the namespace's loopback (where pages
/// and API are open), on `database`, logging to `dir/collector.log`; its process and
/// its `http://` URL.
pub(crate) fn loopback_collector(
    ns: &NetNs,
    extra: &[&str],
    database: &crate::support::TestDb,
    dir: &Path,
) -> (Proc, String) {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_finwait-collector"));
    cmd.args(["--insecure-loopback", "--listen", "127.0.0.1:0"])
        .args(extra)
        .args(["--database-url-file", database.url_file_arg()]);
    let (c, line) = spawn_announced(cmd, &dir.join("collector.log"));
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    (c, format!("http://{addr}"))
}

pub(crate) fn sockpop(ns: &NetNs, args: &[&str]) -> (Sockpop, serde_json::Value) {
    let p = Sockpop::start(Some(ns), args).expect("sockpop");
    let m = p.manifest.clone();
    (p, m)
}

struct Api {
    url: String,
    ca: PathBuf,
    token: String,
}

impl Api {
    fn get(&self, router: &NetNs, path: &str) -> serde_json::Value {
        let out = router
            .output(
                "curl",
                &[
                    "-sS",
                    "--cacert",
                    self.ca.to_str().expect("utf-8"),
                    "-H",
                    &format!("Authorization: Bearer {}", self.token),
                    &format!("{}{path}", self.url),
                ],
            )
            .expect("curl");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    }
}

pub(crate) fn poll(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf-8").to_owned()
}

#[test]
fn leaks_across_three_hosts_are_paired_exactly_and_reported_ended() {
    if require_root("leaks_across_three_hosts_are_paired_exactly") == Privilege::OptedOut {
        return;
    }
    let fx = Fixture::start("corr", 3);
    let lan = &fx.lan;
    let leak6 = format!("[{}]:8081", Lan::v6(0));
    let (leaky, lm) = sockpop(lan.host(0), &["serve", "10.77.0.10:8080", "--leak"]);
    let (_leaky6, lm6) = sockpop(lan.host(0), &["serve", &leak6, "--leak"]);
    let (_good, _) = sockpop(lan.host(0), &["serve", "10.77.0.10:9090"]);
    // IPv4 leaks are held by one server process, IPv6 leaks by the other.
    let holder_pid = |local: &str| {
        if local.starts_with('[') {
            lm6["pid"].as_u64()
        } else {
            lm["pid"].as_u64()
        }
    };
    let (_b1, b_leak) = sockpop(
        lan.host(1),
        &["connect", "10.77.0.10:8080", "--count", "2", "--close"],
    );
    let (_b2, _) = sockpop(
        lan.host(1),
        &["connect", "10.77.0.10:9090", "--count", "2", "--close"],
    );
    let (_c1, c_leak) = sockpop(lan.host(2), &["connect", &leak6, "--count", "2", "--close"]);
    let (_c2, _) = sockpop(
        lan.host(2),
        &["connect", "10.77.0.10:9090", "--count", "1", "--close"],
    );

    let _agents: Vec<Proc> = ["host-a", "host-b", "host-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| fx.agent(i, name))
        .collect();
    let api = &fx.api;
    let mut leaks = Vec::new();
    poll("four leaks with their peers", || {
        leaks = api.get(lan.router(), "/api/v1/leaks?since=10m")["leaks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        leaks.len() >= 4 && leaks.iter().all(|l| !l["peer"].is_null())
    });
    assert_eq!(leaks.len(), 4, "exactly the leaked connections: {leaks:#?}");
    let mut peers: Vec<(String, String)> = Vec::new();
    for l in &leaks {
        assert_eq!(l["kind"], "close_wait", "{l:#}");
        assert_eq!(l["confidence"], "exact", "{l:#}");
        assert_eq!(l["holder"]["host"], "host-a");
        assert_eq!(
            l["holder"]["pid"].as_u64(),
            holder_pid(l["holder"]["local"].as_str().unwrap_or("")),
            "holder pid: {l:#}"
        );
        assert_eq!(l["holder"]["comm"], "finwait-sockpop");
        assert_eq!(l["holder"]["state"], "CLOSE_WAIT");
        assert!(
            !l["holder"]["local"]
                .as_str()
                .unwrap_or("")
                .ends_with(":9090"),
            "well-behaved server reported: {l:#}"
        );
        assert_eq!(l["peer"]["state"], "FIN_WAIT2");
        assert_eq!(l["peer"]["remote"], l["holder"]["local"]);
        assert_eq!(l["peer"]["local"], l["holder"]["remote"]);
        peers.push((
            l["peer"]["host"].as_str().unwrap_or("").to_owned(),
            l["peer"]["local"].as_str().unwrap_or("").to_owned(),
        ));
    }
    peers.sort();
    let mut want: Vec<(String, String)> = b_leak["locals"]
        .as_array()
        .expect("b locals")
        .iter()
        .map(|a| ("host-b".to_owned(), a.as_str().unwrap_or("").to_owned()))
        .chain(
            c_leak["locals"]
                .as_array()
                .expect("c locals")
                .iter()
                .map(|a| ("host-c".to_owned(), a.as_str().unwrap_or("").to_owned())),
        )
        .collect();
    want.sort();
    assert_eq!(peers, want, "peers on B (IPv4) and C (IPv6)");

    // The CLI, run on host B: `--json` is the HTTP JSON (ages aside, which grow between
    // the two requests); the table names the holder and carries a hint per leak.
    let out = fx.cli(1, &["leaks", "--since", "10m", "--json"]);
    let from_cli: serde_json::Value = serde_json::from_str(&out).expect("CLI JSON");
    let from_api = api.get(lan.router(), "/api/v1/leaks?since=10m");
    assert_eq!(
        without_ages(from_cli),
        without_ages(from_api),
        "finwait leaks --json"
    );
    let table = fx.cli(1, &["leaks", "--since", "10m"]);
    assert_eq!(table.matches("hint:").count(), 4, "{table}");
    assert!(
        table.contains("CLOSE_WAIT") || table.contains("close_wait"),
        "{table}"
    );
    assert!(
        table.contains(&lm["pid"].to_string()),
        "holder pid: {table}"
    );
    let who = fx.cli(1, &["who", "10.77.0.10:8080"]);
    assert!(who.contains("host-a") && who.contains("host-b"), "{who}");
    let leaking_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // The API needs the token off loopback; bad parameters are named.
    let denied = lan
        .router()
        .output(
            "curl",
            &[
                "-sS",
                "--cacert",
                &fx.ca,
                &format!("{}/api/v1/leaks", api.url),
            ],
        )
        .expect("curl");
    assert!(denied.contains("Unauthenticated"), "{denied}");
    let bad = api.get(lan.router(), "/api/v1/leaks?min_age=soon");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("min_age"),
        "{bad}"
    );

    // The leaking process exits: its leaks are reported ended, not dropped.
    drop(leaky);
    poll("the two IPv4 leaks reported ended", || {
        let l = api.get(lan.router(), "/api/v1/leaks?since=10m")["leaks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        l.iter()
            .filter(|x| x["holder"]["local"] == "10.77.0.10:8080" && !x["until"].is_null())
            .count()
            == 2
    });
    let hosts = api.get(lan.router(), "/api/v1/hosts");
    assert_eq!(
        hosts["hosts"].as_array().map(Vec::len),
        Some(3),
        "{hosts:#}"
    );

    // A report built after the fact over these minutes names the leaking process, its
    // host and the peers, with the two IPv4 leaks resolved and the IPv6 ones open.
    let report: serde_json::Value = serde_json::from_str(&fx.cli(
        1,
        &[
            "report", "run", "--since", "10m", "--window", "10m", "--format", "json",
        ],
    ))
    .expect("report JSON");
    let p = &report["processes"][0];
    assert_eq!(
        (p["host"].as_str(), p["name"].as_str()),
        (Some("host-a"), Some("finwait-sockpop")),
        "{report:#}"
    );
    assert_eq!(
        (
            p["now"]["new"].as_i64(),
            p["now"]["resolved"].as_i64(),
            p["now"]["open_at_end"].as_i64()
        ),
        (Some(4), Some(2), Some(2)),
        "{p:#}"
    );
    let mut peer_hosts: Vec<(String, i64)> = p["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|x| {
            (
                x["host"].as_str().unwrap_or("").to_owned(),
                x["count"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    peer_hosts.sort();
    assert_eq!(
        peer_hosts,
        [("host-b".to_owned(), 2), ("host-c".to_owned(), 2)]
    );
    assert_eq!(report["now"]["hosts_affected"], 1);
    let md = fx.cli(1, &["report", "run", "--since", "10m", "--window", "10m"]);
    assert!(
        md.contains("host-a") && md.contains("finwait-sockpop") && md.contains("host-b"),
        "{md}"
    );

    // After the exit, the past is still answered: A's CLOSE_WAITs as they were while
    // leaking, and who held the leaky endpoint then (both ends side by side).
    let then: serde_json::Value = serde_json::from_str(&fx.cli(
        1,
        &[
            "sockets",
            "--host",
            "host-a",
            "--state",
            "CLOSE_WAIT",
            "--at",
            &leaking_at,
            "--json",
        ],
    ))
    .expect("sockets JSON");
    let mut remotes: Vec<String> = then["sockets"]
        .as_array()
        .expect("sockets")
        .iter()
        .map(|s| s["remote"].as_str().unwrap_or("").to_owned())
        .collect();
    remotes.sort();
    let mut want_remotes: Vec<String> = b_leak["locals"]
        .as_array()
        .expect("b locals")
        .iter()
        .chain(c_leak["locals"].as_array().expect("c locals"))
        .map(|a| a.as_str().unwrap_or("").to_owned())
        .collect();
    want_remotes.sort();
    assert_eq!(
        remotes, want_remotes,
        "A's CLOSE_WAITs at {leaking_at}: {then:#}"
    );
    let now: serde_json::Value = serde_json::from_str(&fx.cli(
        1,
        &[
            "sockets",
            "--host",
            "host-a",
            "--state",
            "CLOSE_WAIT",
            "--port",
            "8080",
            "--json",
        ],
    ))
    .expect("sockets JSON");
    assert_eq!(
        now["sockets"].as_array().map(Vec::len),
        Some(0),
        "gone now: {now:#}"
    );
    let who: serde_json::Value = serde_json::from_str(&fx.cli(
        2,
        &["who", "10.77.0.10:8080", "--at", &leaking_at, "--json"],
    ))
    .expect("who JSON");
    let mut pairs: Vec<(String, String)> = who["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["local"]["state"] == "CLOSE_WAIT")
        .map(|c| {
            assert_eq!(c["local"]["pid"].as_u64(), lm["pid"].as_u64(), "{c:#}");
            (
                c["remote"]["host"].as_str().unwrap_or("-").to_owned(),
                c["remote"]["state"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![("host-b".to_owned(), "FIN_WAIT2".to_owned()); 2],
        "{who:#}"
    );

    // IPv6 alike: the IPv6 leaks' holder still runs; C's FIN_WAIT2s face them.
    let who6: serde_json::Value =
        serde_json::from_str(&fx.cli(1, &["who", &leak6, "--json"])).expect("who JSON");
    let mut pairs6: Vec<(String, String, String)> = who6["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["local"]["state"] == "CLOSE_WAIT")
        .map(|c| {
            (
                c["local"]["host"].as_str().unwrap_or("-").to_owned(),
                c["remote"]["host"].as_str().unwrap_or("-").to_owned(),
                c["remote"]["state"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    pairs6.sort();
    assert_eq!(
        pairs6,
        vec![
            (
                "host-a".to_owned(),
                "host-c".to_owned(),
                "FIN_WAIT2".to_owned()
            );
            2
        ],
        "{who6:#}"
    );

    // Errors: one line on stderr and a non-zero exit.
    let (code, err) = fx.cli_fails(1, &["sockets", "--host", "no-such-host"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no host named"), "{err}");
}

/// Drops every `age_s`: it grows between two requests.
fn without_ages(mut v: serde_json::Value) -> serde_json::Value {
    match &mut v {
        serde_json::Value::Object(m) => {
            m.remove("age_s");
            for x in m.values_mut() {
                *x = without_ages(x.take());
            }
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                *x = without_ages(x.take());
            }
        }
        _ => {}
    }
    v
}

/// The collector on a LAN's router over TLS with a token, and the means to query it.
pub(crate) struct Fixture {
    pub(crate) lan: Lan,
    pub(crate) dir: PathBuf,
    api: Api,
    ca: String,
    /// The read token, for the CLI.
    token_file: String,
    /// The ingest token, for agents.
    agent_token_file: String,
    _collector: Proc,
}

impl Fixture {
    pub(crate) fn start(tag: &str, hosts: usize) -> Fixture {
        let lan = Lan::create(tag, hosts).expect("lan");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (ca, cert, key) = certificates("10.77.0.1");
        let (ca, cert, key) = (
            write(&dir, "ca.pem", &ca),
            write(&dir, "cert.pem", &cert),
            write(&dir, "key.pem", &key),
        );
        // Agents and readers hold separate tokens, as in a real deployment.
        let token = format!("{tag}-token");
        let agent_token = format!("{tag}-agent-token");
        let tokens = write(
            &dir,
            "tokens",
            &format!("ingest:{agent_token}\nread:{token}\n"),
        );
        let token_file = write(&dir, "token", &token);
        let agent_token_file = write(&dir, "agent-token", &agent_token);
        let database = TestDb::create();
        let mut cmd = lan
            .router()
            .command(env!("CARGO_BIN_EXE_finwait-collector"));
        cmd.args([
            "--listen",
            "10.77.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tokens-file",
            &tokens,
        ])
        .args([
            "--leak-threshold-seconds",
            "2",
            "--correlation-slack-seconds",
            "5",
            "--database-url-file",
            database.url_file_arg(),
        ]);
        let (collector, line) = spawn_announced(cmd, &dir.join("collector.log"));
        let port = line.trim().rsplit(':').next().expect("port").to_owned();
        let api = Api {
            url: format!("https://10.77.0.1:{port}"),
            ca: PathBuf::from(&ca),
            token,
        };
        Fixture {
            lan,
            dir,
            api,
            ca,
            token_file,
            agent_token_file,
            _collector: collector,
        }
    }

    pub(crate) fn agent(&self, i: usize, name: &str) -> Proc {
        Proc(
            self.lan
                .host(i)
                .command(workspace_bin("finwait-agent").expect("agent"))
                .args([
                    "run",
                    "--interval",
                    "0.5",
                    "--collector",
                    &self.api.url,
                    "--ca-file",
                    &self.ca,
                ])
                .args([
                    "--token-file",
                    &self.agent_token_file,
                    "--hostname",
                    name,
                    "--machine-id",
                    &format!("m-{name}"),
                ])
                .arg("--spool-dir")
                .arg(self.dir.join(format!("{name}-spool")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log"))
                .spawn()
                .expect("agent"),
        )
    }

    fn cli_command(&self, host: usize, args: &[&str]) -> std::process::Command {
        let mut cmd = self
            .lan
            .host(host)
            .command(workspace_bin("finwait").expect("finwait CLI"));
        cmd.args([
            "--server",
            &self.api.url,
            "--ca",
            &self.ca,
            "--token-file",
            &self.token_file,
        ])
        .args(args)
        .stdin(Stdio::null());
        cmd
    }

    /// Runs the `finwait` CLI on host `host`; its stdout (fails the test on failure).
    pub(crate) fn cli(&self, host: usize, args: &[&str]) -> String {
        let out = self.cli_command(host, args).output().expect("finwait");
        assert!(
            out.status.success(),
            "finwait {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs the `finwait` CLI expecting failure; (exit code, stderr).
    pub(crate) fn cli_fails(&self, host: usize, args: &[&str]) -> (i32, String) {
        let out = self.cli_command(host, args).output().expect("finwait");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The collector's base URL, `https://10.77.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.api.url
    }

    /// The read token the collector accepts.
    pub(crate) fn token(&self) -> &str {
        &self.api.token
    }

    pub(crate) fn leaks(&self, query: &str) -> Vec<serde_json::Value> {
        self.api
            .get(self.lan.router(), &format!("/api/v1/leaks?{query}"))["leaks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_close_wait_whose_peer_expired_unseen_is_reported_one_sided() {
    if require_root("a_close_wait_whose_peer_expired_unseen_is_reported_one_sided")
        == Privilege::OptedOut
    {
        return;
    }
    let fx = Fixture::start("oneside", 2);
    // The client's orphaned FIN_WAIT2 lives one second, and its agent starts later.
    fx.lan
        .host(1)
        .sysctl("net.ipv4.tcp_fin_timeout", "1")
        .expect("sysctl");
    let (_srv, sm) = sockpop(fx.lan.host(0), &["serve", "10.77.0.10:8080", "--leak"]);
    let (_cli, _) = sockpop(
        fx.lan.host(1),
        &["connect", "10.77.0.10:8080", "--count", "2", "--close"],
    );
    std::thread::sleep(Duration::from_secs(3));
    let fin = fx
        .lan
        .host(1)
        .output("ss", &["-tanH", "state", "fin-wait-2"])
        .expect("ss");
    assert!(
        fin.trim().is_empty(),
        "the peer's FIN_WAIT2 should have expired:\n{fin}"
    );
    let _a = fx.agent(0, "server");
    let _b = fx.agent(1, "client");
    let mut leaks = Vec::new();
    poll("two one-sided leaks", || {
        leaks = fx.leaks("since=10m");
        leaks.len() >= 2
    });
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    for l in &leaks {
        assert_eq!(
            (l["kind"].as_str(), l["confidence"].as_str()),
            (Some("close_wait"), Some("one_sided")),
            "{l:#}"
        );
        assert!(l["peer"].is_null(), "{l:#}");
        assert_eq!(l["holder"]["pid"].as_u64(), sm["pid"].as_u64());
        assert!(l["holder"]["age_s"].as_i64().unwrap_or(0) >= 2, "{l:#}");
    }
}

#[test]
fn time_wait_filling_the_ephemeral_range_is_reported_as_pressure() {
    if require_root("time_wait_filling_the_ephemeral_range_is_reported_as_pressure")
        == Privilege::OptedOut
    {
        return;
    }
    let fx = Fixture::start("twpress", 2);
    // B has 100 ephemeral ports; 70 connections it closes first leave 70 TIME_WAITs
    // towards one destination. A's ephemeral range stays wide.
    fx.lan
        .host(1)
        .sysctl("net.ipv4.ip_local_port_range", "40000 40099")
        .expect("sysctl");
    let (_srv, _) = sockpop(fx.lan.host(0), &["serve", "10.77.0.10:9090"]);
    let (_cli, _) = sockpop(
        fx.lan.host(1),
        &["connect", "10.77.0.10:9090", "--count", "70", "--close"],
    );
    let _a = fx.agent(0, "server");
    let _b = fx.agent(1, "client");
    let mut hosts = serde_json::Value::Null;
    poll("TIME_WAIT pressure on the client", || {
        hosts = fx.api.get(fx.lan.router(), "/api/v1/hosts");
        hosts["hosts"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| !h["time_wait_pressure"].is_null()))
    });
    let hs = hosts["hosts"].as_array().expect("hosts");
    let client = hs
        .iter()
        .find(|h| h["hostname"] == "client")
        .expect("client");
    let p = &client["time_wait_pressure"];
    assert_eq!(p["remote"], "10.77.0.10:9090", "{client:#}");
    assert_eq!(p["local_addr"], "10.77.0.11");
    assert_eq!(p["ports"], 100);
    assert!(p["count"].as_i64().unwrap_or(0) >= 50, "{p}");
    assert_eq!(
        client["ephemeral_ports"],
        serde_json::json!({"low": 40000, "high": 40099})
    );
    assert!(
        client["states"]["TIME_WAIT"].as_i64().unwrap_or(0) >= 50,
        "{client:#}"
    );
    let server = hs
        .iter()
        .find(|h| h["hostname"] == "server")
        .expect("server");
    assert!(server["time_wait_pressure"].is_null(), "{server:#}");
    // The leaks view lists it beside the (absent) leaks.
    let leaks = fx.api.get(fx.lan.router(), "/api/v1/leaks?since=10m");
    assert_eq!(
        leaks["leaks"].as_array().map(Vec::len),
        Some(0),
        "{leaks:#}"
    );
    let tw = leaks["time_wait_pressure"].as_array().expect("pressure");
    assert_eq!(tw.len(), 1, "{leaks:#}");
    assert_eq!(tw[0]["host"], "client");
    assert!(tw[0]["ratio"].as_f64().unwrap_or(0.0) >= 0.5, "{leaks:#}");
}

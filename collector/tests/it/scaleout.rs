//! Past one collector: two real collector processes share one PostgreSQL database
//! (the shared test cluster), agents on four namespace hosts of a private LAN are
//! spread across them by the order of their `--collector` lists, and leaks between
//! hosts on different collectors are paired. Both collectors answer every question
//! identically; one is killed with SIGKILL, its agents move to the other on their next
//! reconnect, the ledger shows every (host, epoch, seq) once with no gap, and the
//! survivor answers the questions asked as of an instant before the kill exactly as
//! both did before.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use finwait_testkit::{Lan, NetNs, Privilege, require_root, workspace_bin};

use crate::correlation::{poll, sockpop};
use crate::e2e::{Proc, spawn_announced};
use crate::support::{TestDb, certificates, stable};

/// A collector process on the LAN's router.
struct Node {
    proc: Proc,
    url: String,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf-8").to_owned()
}

/// Everything the test's processes need: the LAN, TLS material, tokens, the database.
struct Site {
    lan: Lan,
    dir: PathBuf,
    ca: String,
    cert: String,
    key: String,
    tokens: String,
    agent_token: String,
    read_token: String,
    database: TestDb,
}

impl Site {
    fn new(tag: &str, hosts: usize) -> Site {
        let lan = Lan::create(tag, hosts).expect("lan");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        // Both collectors listen on the router's address, so one certificate serves both.
        let (ca, cert, key) = certificates("10.77.0.1");
        let read_token = format!("{tag}-read");
        let agent_token = format!("{tag}-ingest");
        Site {
            ca: write(&dir, "ca.pem", &ca),
            cert: write(&dir, "cert.pem", &cert),
            key: write(&dir, "key.pem", &key),
            tokens: write(
                &dir,
                "tokens",
                &format!("ingest:{agent_token}\nread:{read_token}\n"),
            ),
            agent_token: write(&dir, "agent-token", &agent_token),
            read_token,
            database: TestDb::create(),
            lan,
            dir,
        }
    }

    /// Starts a collector process on the router, on the shared database.
    fn collector(&self, name: &str) -> Node {
        let mut cmd = self
            .lan
            .router()
            .command(env!("CARGO_BIN_EXE_finwait-collector"));
        cmd.args(["--listen", "10.77.0.1:0", "--tls-cert", &self.cert])
            .args(["--tls-key", &self.key, "--tokens-file", &self.tokens])
            .args([
                "--leak-threshold-seconds",
                "2",
                "--correlation-slack-seconds",
                "5",
                "--database-url-file",
                self.database.url_file_arg(),
            ]);
        let (proc, line) = spawn_announced(cmd, &self.dir.join(format!("{name}.log")));
        assert!(
            line.contains("listening on"),
            "{name} did not start: {line:?}"
        );
        let port = line.trim().rsplit(':').next().expect("port").to_owned();
        Node {
            proc,
            url: format!("https://10.77.0.1:{port}"),
        }
    }

    /// Starts the agent on host `i` with the collectors `urls`, in that order.
    fn agent(&self, i: usize, urls: &[&str]) -> Proc {
        let name = format!("h{i}");
        let child: Child = self
            .lan
            .host(i)
            .command(workspace_bin("finwait-agent").expect("agent"))
            .args(["run", "--interval", "0.5", "--collector", &urls.join(",")])
            .args(["--ca-file", &self.ca, "--token-file", &self.agent_token])
            .args(["--hostname", &name, "--machine-id", &format!("m-{name}")])
            // Each agent owns a spool of its own (the default is one per machine).
            .arg("--spool-dir")
            .arg(self.dir.join(format!("{name}-spool")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.agent_log(i)).expect("log"))
            .spawn()
            .expect("agent");
        Proc(child)
    }

    fn agent_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent-h{i}.log"))
    }

    /// How many streams agent `i` opened to `url` (its "connected" log lines).
    fn connections(&self, i: usize, url: &str) -> usize {
        std::fs::read_to_string(self.agent_log(i))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(url) && l.contains(" connected"))
            .count()
    }

    /// GET `path` from `node` (from the router, with the read token): status and body.
    fn get(&self, node: &Node, path: &str) -> (u16, String) {
        get(
            self.lan.router(),
            &self.ca,
            &self.read_token,
            &node.url,
            path,
        )
    }

    fn json(&self, node: &Node, path: &str) -> serde_json::Value {
        let (status, body) = self.get(node, path);
        assert_eq!(status, 200, "{path} from {}: {body}", node.url);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn get(ns: &NetNs, ca: &str, token: &str, base: &str, path: &str) -> (u16, String) {
    let out = ns
        .output(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                ca,
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-w",
                "\n%{http_code}",
                &format!("{base}{path}"),
            ],
        )
        .expect("curl");
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Drops what was learnt after `at` about `at`: a socket alive then whose end came
/// later carries that end (`until`) once it is known, from any collector.
fn as_known_at(mut v: serde_json::Value, at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    match &mut v {
        serde_json::Value::Object(m) => {
            let later = m
                .get("until")
                .and_then(|u| u.as_str())
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                .is_some_and(|u| u > at);
            if later {
                m.insert("until".into(), serde_json::Value::Null);
            }
            for x in m.values_mut() {
                *x = as_known_at(x.take(), at);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                *x = as_known_at(x.take(), at);
            }
        }
        _ => {}
    }
    v
}

/// Every (host, epoch): sequence numbers from 1 (or, for a later epoch, from its first)
/// with no gap and none twice; returns the committed batches per host.
async fn ledger_has_no_gap(db: &sqlx::PgPool) -> Vec<(String, i64)> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT h.hostname, b.epoch, min(b.seq), max(b.seq), count(*) \
         FROM ingest_batches b JOIN hosts h USING (host_id) \
         GROUP BY h.hostname, b.epoch ORDER BY 1, 2",
    )
    .fetch_all(db)
    .await
    .expect("ledger");
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM ingest_batches GROUP BY host_id, epoch, seq \
         HAVING count(*) > 1) d",
    )
    .fetch_one(db)
    .await
    .expect("duplicates");
    assert_eq!(dup, 0, "a batch committed twice");
    let mut per_host: Vec<(String, i64)> = Vec::new();
    for (host, epoch, min, max, n) in &rows {
        assert_eq!(
            *n,
            max - min + 1,
            "{host} epoch {epoch}: a gap in {min}..={max} ({n} batches): {rows:?}"
        );
        match per_host.last_mut() {
            Some((h, total)) if h == host => *total += n,
            _ => {
                // An agent's first stream starts its epoch at seq 1.
                assert_eq!(*min, 1, "{host}: first batch of epoch {epoch} is {min}");
                per_host.push((host.clone(), *n));
            }
        }
    }
    per_host
}

/// The questions asked as of one instant `at` (RFC 3339), which must answer the same
/// from every collector and at any later time.
fn questions_at(at: &str, from: &str, window_s: i64) -> Vec<String> {
    let mut q: Vec<String> = (0..4)
        .map(|i| format!("/api/v1/sockets?host=h{i}&at={at}&limit=1000"))
        .collect();
    q.extend([
        format!("/api/v1/who?endpoint=10.77.0.10:8080&at={at}"),
        format!("/api/v1/who?endpoint=10.77.0.12:9090&at={at}"),
        format!("/api/v1/timeline?host=h0&since={from}&until={at}&step=1s"),
        format!("/api/v1/reports/run?since={from}&window={window_s}s&format=json"),
    ]);
    q
}

#[tokio::test]
async fn two_collectors_on_one_database_answer_alike_and_a_killed_ones_agents_move_losing_nothing()
{
    if require_root("two_collectors_on_one_database_answer_alike") == Privilege::OptedOut {
        return;
    }
    let site = Site::new("scale", 4);
    let a = site.collector("collector-a");
    let b = site.collector("collector-b");
    // Leaking servers on h0 and h2, their clients on h1 and h3: every leak's two ends
    // stream to different collectors.
    let (_s0, _) = sockpop(site.lan.host(0), &["serve", "10.77.0.10:8080", "--leak"]);
    let (_s2, _) = sockpop(site.lan.host(2), &["serve", "10.77.0.12:9090", "--leak"]);
    let (_c1, _) = sockpop(
        site.lan.host(1),
        &["connect", "10.77.0.10:8080", "--count", "2", "--close"],
    );
    let (_c3, _) = sockpop(
        site.lan.host(3),
        &["connect", "10.77.0.12:9090", "--count", "2", "--close"],
    );
    // Even hosts prefer a, odd ones b; each list names the other as the fallback.
    let agents: Vec<Proc> = (0..4)
        .map(|i| {
            if i % 2 == 0 {
                site.agent(i, &[&a.url, &b.url])
            } else {
                site.agent(i, &[&b.url, &a.url])
            }
        })
        .collect();
    poll("four exact leaks", || {
        let leaks = site.json(&a, "/api/v1/leaks?since=10m");
        let leaks = leaks["leaks"].as_array().cloned().unwrap_or_default();
        leaks.len() == 4 && leaks.iter().all(|l| l["confidence"] == "exact")
    });
    for i in 0..4 {
        let (first, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert!(
            site.connections(i, &first.url) >= 1 && site.connections(i, &other.url) == 0,
            "h{i} should stream to {} only so far",
            first.url
        );
    }

    // One instant, well after every host's first report; let every host report past it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_t = chrono::Utc::now();
    let at = at_t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // A report's window is at least a minute: it ends at `at`.
    let window_s = 120;
    let from = (at_t - chrono::Duration::seconds(window_s))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let db = site.database.pool().await;
    let reported_past = |t: chrono::DateTime<chrono::Utc>| {
        let db = db.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM hosts WHERE last_report > $1")
                        .bind(t)
                        .fetch_one(&db)
                        .await
                        .expect("hosts");
                if n == 4 {
                    return;
                }
                assert!(Instant::now() < deadline, "every host reporting past {t}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    reported_past(at_t + chrono::Duration::seconds(1)).await;
    let questions = questions_at(&at, &from, window_s);
    let mut before = Vec::new();
    for q in &questions {
        let (ja, jb) = (stable(site.json(&a, q)), stable(site.json(&b, q)));
        assert_eq!(ja, jb, "{q}: collectors a and b answer differently");
        before.push(as_known_at(ja, at_t));
    }
    // The report's leaks are the four, as of `at`.
    let report = before.last().expect("report");
    assert!(
        report.to_string().contains("10.77.0.10") && report.to_string().contains("10.77.0.12"),
        "the report names both leaking servers: {report:#}"
    );
    // Questions about now: both collectors read the same database; a batch may land
    // between the two requests, so the pair is asked again until it straddles none.
    for q in [
        "/api/v1/leaks?since=10m",
        "/api/v1/leaks/groups?since=10m",
        "/api/v1/hosts",
    ] {
        let mut same = false;
        for _ in 0..20 {
            if stable(site.json(&a, q)) == stable(site.json(&b, q)) {
                same = true;
                break;
            }
        }
        assert!(same, "{q}: a and b never answered alike in 20 tries");
    }

    // a dies without a word; its agents (h0, h2) must move to b.
    let mut a = a;
    let killed_at = chrono::Utc::now();
    a.proc.signal("-KILL");
    poll("h0 and h2 streaming to b", || {
        site.connections(0, &b.url) >= 1 && site.connections(2, &b.url) >= 1
    });
    reported_past(killed_at + chrono::Duration::seconds(2)).await;
    for i in [1, 3] {
        assert_eq!(site.connections(i, &a.url), 0, "h{i} never touched a");
    }
    let after_kill: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT host_id) FROM ingest_batches WHERE committed_at > $1",
    )
    .bind(killed_at + chrono::Duration::seconds(1))
    .fetch_one(&db)
    .await
    .expect("batches after the kill");
    assert_eq!(after_kill, 4, "every host keeps committing through b");

    let per_host = ledger_has_no_gap(&db).await;
    assert_eq!(per_host.len(), 4, "{per_host:?}");
    // The survivor answers the questions about `at` as both did.
    for (q, was) in questions.iter().zip(&before) {
        // The agents' own connections to a ended after `at`: that end is news, not a
        // different answer about `at`.
        assert_eq!(
            &as_known_at(stable(site.json(&b, q)), at_t),
            was,
            "{q}: b's answer after the kill differs from before"
        );
    }
    let leaks = site.json(&b, "/api/v1/leaks?since=10m");
    assert_eq!(
        leaks["leaks"].as_array().map(Vec::len),
        Some(4),
        "the four leaks, from b alone: {leaks:#}"
    );
    eprintln!("batches per host: {per_host:?}");
    db.close().await;
    drop(agents);
    drop(b);
}

//! The README's deploy steps, followed on clean namespace "hosts" of a private LAN:
//! `finwait-collector init` with the collector's name and address, then the very
//! commands it printed (program names swapped for the built binaries): the collector
//! on host A with TLS and tokens on its LAN address, the agent on host B with the CA
//! and the agent token, and the `finwait` CLI on host B with the reader token, which
//! sees a real leak (a CLOSE_WAIT server and its FIN_WAIT2 client on host B). Host B
//! resolves the collector's name through its own /etc/hosts (`ip netns exec` mounts
//! /etc/netns/NS/hosts), as a real host would through DNS.
//!
//! Added to the printed commands, and only these: the test database
//! (`--database-url-file`, `--data-dir`), shorter leak thresholds so the leak counts
//! within seconds, and the agent's identity and sampling interval.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use finwait_testkit::{Lan, NetNs, Privilege, TempDir, require_root, workspace_bin};
use serde_json::Value;

use crate::correlation::{Proc, poll, sockpop};
use crate::e2e::spawn_announced;
use crate::support::TestDb;

const NAME: &str = "collector.finwait.test";

/// /etc/netns/NS/hosts naming the collector, removed on drop.
struct HostsFile(PathBuf);

impl HostsFile {
    fn create(ns: &NetNs, line: &str) -> HostsFile {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{line}\n")).expect("hosts");
        HostsFile(dir)
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The printed command starting with `program `, split into words.
fn printed(instructions: &str, program: &str) -> Vec<String> {
    let line = instructions
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{program} ")))
        .unwrap_or_else(|| panic!("init printed no `{program}` command:\n{instructions}"));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

fn built(program: &str) -> PathBuf {
    if program == "finwait-collector" {
        PathBuf::from(env!("CARGO_BIN_EXE_finwait-collector"))
    } else {
        workspace_bin(program).unwrap_or_else(|e| panic!("{program}: {e:#}"))
    }
}

#[test]
fn the_readme_deploy_steps_work_on_clean_namespace_hosts() {
    if require_root("the_readme_deploy_steps_work_on_clean_namespace_hosts") == Privilege::OptedOut
    {
        return;
    }
    let lan = Lan::create("deploy", 2).expect("LAN");
    let (host_a, host_b) = (lan.host(0), lan.host(1));
    let collector_ip = Lan::v4(0).to_string();
    let _hosts = HostsFile::create(host_b, &format!("{collector_ip} {NAME}"));
    let scratch = TempDir::new("deploy").expect("scratch");
    let etc = scratch.path().join("etc-finwait");

    // Step 1: init, on the collector's host.
    let said = crate::reload::init(&etc, &["--name", NAME, "--ip", &collector_ip]);
    for secret in [
        "ca.key",
        "tls/server.key",
        "tokens",
        "agent.token",
        "read.token",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(etc.join(secret))
            .expect(secret)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    // Step 2: the collector, as printed, on host A.
    let database = TestDb::create();
    let log = scratch.path().join("collector.log");
    let mut cmd = host_a.command(built("finwait-collector"));
    cmd.args(printed(&said, "finwait-collector"))
        .arg("--database-url-file")
        .arg(&database.url_file)
        .arg("--data-dir")
        .arg(scratch.path().join("data"))
        .args([
            "--leak-threshold-seconds",
            "2",
            "--correlation-slack-seconds",
            "5",
        ])
        .stdin(Stdio::null());
    let (_collector, line) = spawn_announced(cmd, &log);
    assert!(
        line.contains("listening on 0.0.0.0:7070"),
        "{line:?}; see {}",
        log.display()
    );

    // A leak on host B: a server that never closes, clients that did.
    let server_addr = format!("{}:8080", Lan::v4(1));
    let (_server, server) = sockpop(host_b, &["serve", &server_addr, "--leak"]);
    let (_clients, clients) = sockpop(
        host_b,
        &["connect", &server_addr, "--count", "2", "--close"],
    );

    // Step 3: the agent, as printed, on host B.
    let agent_args = printed(&said, "finwait-agent");
    assert!(
        agent_args.contains(&format!("https://{NAME}:7070")),
        "{agent_args:?}"
    );
    let _agent = Proc::from(
        host_b
            .command(built("finwait-agent"))
            .args(&agent_args)
            .args([
                "--interval",
                "0.5",
                "--hostname",
                "app-b",
                "--machine-id",
                "app-b",
            ])
            // Its own spool, not the machine's default one other tests' agents may hold.
            .arg("--spool-dir")
            .arg(scratch.path().join("agent-spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path().join("agent.log")).expect("log"))
            .spawn()
            .expect("start agent"),
    );

    // Step 4: the CLI, as printed, on host B, with the reader token.
    let cli = printed(&said, "finwait");
    let run_cli = |extra: &[&str], token: Option<&Path>| {
        let mut args = cli.clone();
        if let Some(t) = token {
            let i = args
                .iter()
                .position(|a| a == "--token-file")
                .expect("--token-file");
            args[i + 1] = t.display().to_string();
        }
        host_b
            .command(built("finwait"))
            .args(&args)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("finwait")
    };
    let server_pid = server["pid"].as_u64().expect("pid");
    let mut leaks: Vec<Value> = Vec::new();
    poll("the leak seen through the CLI", || {
        let out = run_cli(&["--json", "--since", "10m"], None);
        if !out.status.success() {
            return false;
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        leaks = v["leaks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["holder"]["pid"].as_u64() == Some(server_pid))
            .cloned()
            .collect();
        leaks.len() >= 2 && leaks.iter().all(|l| !l["peer"].is_null())
    });
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    let client_locals: Vec<&str> = clients["locals"]
        .as_array()
        .expect("locals")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for l in &leaks {
        assert_eq!(l["holder"]["host"], "app-b", "{l:#}");
        assert_eq!(l["holder"]["state"], "CLOSE_WAIT", "{l:#}");
        assert_eq!(l["peer"]["state"], "FIN_WAIT2", "{l:#}");
        assert_eq!(l["confidence"], "exact", "{l:#}");
        assert!(
            client_locals.contains(&l["peer"]["local"].as_str().unwrap_or("")),
            "{l:#}"
        );
    }
    // No token reaches the collector's log.
    let logged = std::fs::read_to_string(&log).expect("collector log");
    for t in ["agent.token", "read.token"] {
        let token = std::fs::read_to_string(etc.join(t)).expect("token");
        assert!(!logged.contains(token.trim()), "{t} logged");
    }
    // The agent's token may stream but not read: the CLI with it is refused.
    let denied = run_cli(&["--json"], Some(&etc.join("agent.token")));
    assert!(!denied.status.success(), "an agent token read the API");
    let why = String::from_utf8_lossy(&denied.stderr);
    assert!(why.contains("403") || why.contains("read"), "{why}");
}

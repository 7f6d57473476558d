//! Honest coverage: an agent run as an unprivileged user cannot read other users'
//! descriptors, and its host says so on `hosts`, with the missing capabilities and
//! the fix.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use finwait_testkit::{NetNs, Privilege, TempDir, require_root, workspace_bin};
use serde_json::Value;

use crate::correlation::{Proc, loopback_collector, poll};
use crate::support::TestDb;

#[test]
fn an_unprivileged_agent_reports_what_it_cannot_see_and_why() {
    if require_root("an_unprivileged_agent_reports_what_it_cannot_see_and_why")
        == Privilege::OptedOut
    {
        return;
    }
    let ns = NetNs::create("cov").expect("namespace");
    // A copy of the agent that user `nobody` can execute wherever the checkout lives.
    let scratch = TempDir::new("cov").expect("scratch dir");
    let dir = scratch.path();
    let agent = dir.join("finwait-agent");
    std::fs::copy(workspace_bin("finwait-agent").expect("agent"), &agent).expect("copy agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let database = TestDb::create();
    let (_collector, url) = loopback_collector(&ns, &[], &database, dir);
    let _agent = Proc::from(
        ns.command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&agent)
            .args([
                "run",
                "--interval",
                "0.5",
                "--insecure-loopback",
                "--collector",
                &url,
            ])
            .args(["--hostname", "cov", "--machine-id", "m-cov", "--no-spool"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
            .spawn()
            .expect("setpriv (util-linux) running the agent as nobody"),
    );

    let mut host = Value::Null;
    poll("the host's coverage", || {
        let out = ns
            .output("curl", &["-sS", &format!("{url}/api/v1/hosts")])
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        host = v["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["hostname"] == "cov")
            .cloned()
            .unwrap_or_default();
        !host["coverage"].is_null()
    });
    let cov = &host["coverage"];
    assert_eq!(cov["complete"], false, "{cov:#}");
    assert_eq!(cov["agent_uid"], 65534, "{cov:#}");
    assert!(cov["processes_unreadable"].as_i64() > Some(0), "{cov:#}");
    let caps: Vec<&str> = cov["capabilities_missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        caps.contains(&"CAP_SYS_PTRACE") && caps.contains(&"CAP_DAC_READ_SEARCH"),
        "{cov:#}"
    );
    let first = cov["problems"][0].as_str().unwrap_or("");
    assert!(
        first.contains("descriptors could not be read")
            && first.contains("uid 65534")
            && first.contains("CAP_SYS_PTRACE"),
        "{cov:#}"
    );
    assert_eq!(cov["source"], "netlink", "{cov:#}");
}

//! The population maker itself: `finwait-sockpop bulk` makes as many sockets as its
//! manifest says, as `ss` counts them. (Being an integration test of this package also
//! makes `cargo test --workspace` build the binary before the agent's tests use it.)

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use finwait_testkit::{NetNs, Privilege, require_root};

#[test]
fn bulk_population_has_the_sockets_its_manifest_claims() {
    if require_root("bulk_population_has_the_sockets_its_manifest_claims") == Privilege::OptedOut {
        return;
    }
    let ns = NetNs::create("pop").expect("namespace");
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_finwait-sockpop"))
        .args(["--max-seconds", "120", "bulk", "--sockets", "3000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start finwait-sockpop");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&line).expect("manifest is JSON");
    let claimed = manifest["sockets"].as_u64().expect("sockets count");
    let listed = ns.output("ss", &["-tanH"]).expect("ss").lines().count() as u64;
    drop(child.stdin.take());
    child.wait().expect("population exits when stdin closes");
    assert!(claimed >= 2900, "asked for 3000, made {claimed}");
    assert_eq!(listed, claimed, "ss sees what the manifest claims");
}

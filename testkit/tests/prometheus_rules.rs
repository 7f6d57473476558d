//! The example alert rules in `deploy/prometheus/` as Prometheus reads them:
//! `promtool check rules` accepts them, `promtool test rules` passes their unit tests,
//! and every alert is tested both firing and not firing. Needs `promtool` (Debian
//! package `prometheus`); without it the test fails saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finwait_testkit::promtool::promtool;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus")
        .canonicalize()
        .expect("deploy/prometheus")
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let d = dir();
    let check = promtool(&d, &["check", "rules", "finwait.rules.yml"], b"");
    assert!(check.ok, "promtool check rules:\n{}", check.text);
    let test = promtool(&d, &["test", "rules", "finwait.rules.test.yml"], b"");
    assert!(test.ok, "promtool test rules:\n{}", test.text);
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let d = dir();
    let rules = std::fs::read_to_string(d.join("finwait.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(d.join("finwait.rules.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 5, "alerts found: {alerts:?}");
    // alertname → (evaluations expecting nothing, evaluations expecting alerts).
    let mut seen: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut lines = tests.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let expect = lines.next().unwrap_or_default();
        let e = seen.entry(name.trim()).or_default();
        match expect {
            "exp_alerts: []" => e.0 += 1,
            "exp_alerts:" => e.1 += 1,
            other => panic!("{name}: expected exp_alerts after alertname, got {other:?}"),
        }
    }
    for a in alerts {
        let (quiet, firing) = seen.get(a).copied().unwrap_or_default();
        assert!(
            quiet > 0 && firing > 0,
            "{a}: tested quiet {quiet} and firing {firing} times; both are needed"
        );
    }
}

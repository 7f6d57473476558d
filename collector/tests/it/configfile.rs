//! The real `finwait-collector` with a configuration file: precedence (flag > env >
//! file > default) and redaction as `--print-config` reports them, the file's values
//! reaching the checked configuration, and a bad file refused by key. Needs neither
//! root nor PostgreSQL: every case stops before storage is prepared.

use std::process::{Command, Output};

use finwait_testkit::TempDir;

fn collector(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finwait-collector"));
    for var in [
        "FINWAIT_CONFIG",
        "FINWAIT_LISTEN",
        "FINWAIT_RETENTION_DAYS",
        "FINWAIT_LEASE_SECONDS",
        "FINWAIT_INSECURE_LOOPBACK",
        "FINWAIT_REPORT_WEBHOOK",
        "FINWAIT_TOKENS_FILE",
        "FINWAIT_TLS_CERT",
        "FINWAIT_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run finwait-collector")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_collector_reads_its_config_file_under_env_and_flags() {
    let dir = TempDir::new("collector-config").expect("temp dir");
    let file = dir.path().join("collector.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:7070\"\ninsecure-loopback = true\nretention-days = 30\n\
         lease-seconds = 90\nmaintenance-seconds = 45\n\
         tokens-file = \"/etc/finwait/tokens\"\n\
         report-webhook = \"https://hooks.example/services/T0/B0/s3cret\"\n",
    )
    .expect("write collector.toml");
    let path = file.to_str().expect("utf-8 path");

    let out = collector(
        &["--config", path, "--retention-days", "7", "--print-config"],
        &[
            ("FINWAIT_RETENTION_DAYS", "21"),
            ("FINWAIT_LEASE_SECONDS", "120"),
        ],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table: toml::Table = printed.parse().expect("--print-config prints TOML");
    assert_eq!(table["retention-days"].as_integer(), Some(7));
    for want in [
        "retention-days = 7  # flag",
        "lease-seconds = 120  # env",
        "maintenance-seconds = 45  # file",
        "insecure-loopback = true  # file",
        "tokens-file = \"/etc/finwait/tokens\"  # file",
        "report-webhook = \"<redacted>\"  # file",
        "max-streams = 10000  # default",
        "# database-url-file =  # unset",
    ] {
        assert!(printed.contains(want), "missing {want:?} in:\n{printed}");
    }
    assert!(!printed.contains("s3cret"), "{printed}");

    // FINWAIT_CONFIG names the file too, and its values reach validation.
    let out = collector(&[], &[("FINWAIT_CONFIG", path)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--insecure-loopback needs a loopback --listen address, not 0.0.0.0:7070"),
        "{err}"
    );

    // A typo and a wrong type, refused by key before anything starts.
    std::fs::write(&file, "retention_days = 3\nlisten = 7070\n").expect("rewrite");
    let out = collector(&["--config", path], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key `retention_days`"), "{err}");
    assert!(err.contains("did you mean `retention-days`?"), "{err}");
    assert!(
        err.contains("key `listen`: expected a string, found integer"),
        "{err}"
    );
}

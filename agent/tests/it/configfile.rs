//! The real `finwait-agent run` with a configuration file: precedence (flag > env >
//! file > default) as `--print-config` reports it, the file's values reaching the
//! checked configuration, and a bad file refused by key. Needs no root.

use std::process::{Command, Output};

use finwait_testkit::TempDir;

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finwait-agent"));
    for var in [
        "FINWAIT_CONFIG",
        "FINWAIT_COLLECTOR",
        "FINWAIT_INTERVAL",
        "FINWAIT_BUFFER_MIB",
        "FINWAIT_HOSTNAME",
        "FINWAIT_INSECURE_LOOPBACK",
        "FINWAIT_ALL_NETNS",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run finwait-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_reads_its_config_file_under_env_and_flags() {
    let dir = TempDir::new("agent-config").expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "collector = \"http://10.1.2.3:7070\"\ninterval = 5\nbuffer-mib = 8\n\
         hostname = \"from-file\"\nall-netns = true\nlabel = [\"env=prod\", \"team=net\"]\n\
         token-file = \"/etc/finwait/agent.token\"\nlog-format = \"json\"\n",
    )
    .expect("write agent.toml");
    let path = file.to_str().expect("utf-8 path");

    // flag > env > file > default, as printed.
    let out = agent(
        &[
            "run",
            "--config",
            path,
            "--buffer-mib",
            "16",
            "--print-config",
        ],
        &[("FINWAIT_INTERVAL", "7"), ("FINWAIT_BUFFER_MIB", "32")],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table: toml::Table = printed.parse().expect("--print-config prints TOML");
    assert_eq!(table["buffer-mib"].as_integer(), Some(16));
    for want in [
        "buffer-mib = 16  # flag",
        "interval = 7  # env",
        "hostname = \"from-file\"  # file",
        "all-netns = true  # file",
        "label = [\"env=prod\", \"team=net\"]  # file",
        "token-file = \"/etc/finwait/agent.token\"  # file",
        "log-format = \"json\"  # file",
        "time-wait = \"summarise\"  # default",
        "insecure-loopback = false  # default",
    ] {
        assert!(printed.contains(want), "missing {want:?} in:\n{printed}");
    }

    // FINWAIT_CONFIG names the file too, and its values reach the checked
    // configuration: the file's plaintext collector off loopback is refused by name.
    let out = agent(
        &["run", "--hostname", "h", "--machine-id", "m"],
        &[("FINWAIT_CONFIG", path)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "--collector http://10.1.2.3:7070: plaintext http:// needs --insecure-loopback"
        ),
        "{err}"
    );

    // A typo and a wrong type: refused before anything starts, each by key.
    std::fs::write(
        &file,
        "colector = \"https://c:7070\"\ninterval = \"fast\"\n",
    )
    .expect("rewrite agent.toml");
    let out = agent(&["run", "--config", path], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key `colector`"), "{err}");
    assert!(err.contains("did you mean `collector`?"), "{err}");
    assert!(
        err.contains("key `interval`: expected a number, found string"),
        "{err}"
    );
}

//! The layering on a command shaped like the agent's: a global flag, a subcommand
//! with a required value, switches, a repeatable flag, numbers, paths and an enum.
//! (Environment variables are covered by the binaries' tests, which set them on a
//! child process: this crate forbids the `unsafe` that `set_var` needs.)

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "tool")]
struct Cli {
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    log_format: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Run(RunArgs),
    Other {
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    #[arg(long)]
    collector: String,
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    #[arg(long, default_value_t = 64)]
    buffer_mib: u32,
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long)]
    report_webhook: Option<String>,
    #[arg(long)]
    insecure_loopback: bool,
    #[arg(long = "label")]
    labels: Vec<String>,
}

struct File(PathBuf);

impl File {
    fn new(tag: &str, text: &str) -> File {
        let p = std::env::temp_dir().join(format!(
            "finwait-configfile-{tag}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&p, text).expect("write config");
        File(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(argv: &[&str]) -> Result<RunArgs, String> {
    let mut all = vec!["tool"];
    all.extend_from_slice(argv);
    match try_parse_from::<Cli, _, _>(all, &["run"]).map_err(|e| e.to_string())? {
        Parsed::Run(Cli {
            command: Cmd::Run(a),
            ..
        }) => Ok(a),
        other => Err(format!("not run: {other:?}")),
    }
}

fn print(argv: &[&str]) -> String {
    let mut all = vec!["tool"];
    all.extend_from_slice(argv);
    match try_parse_from::<Cli, _, _>(all, &["run"]) {
        Ok(Parsed::Print(text)) => text,
        other => panic!("expected the printed configuration, got {other:?}"),
    }
}

#[test]
fn the_file_fills_what_flags_leave_at_their_defaults_and_flags_win() {
    let f = File::new(
        "precedence",
        "collector = \"https://c:7070\"\ninterval = 5\nbuffer-mib = 8\n\
         token-file = \"/etc/finwait/agent.token\"\n",
    );
    let a = run(&["run", "--config", f.path(), "--interval", "2.5"]).expect("parses");
    assert_eq!(
        a.collector, "https://c:7070",
        "a required flag from the file"
    );
    assert_eq!(a.interval, 2.5, "the flag beats the file");
    assert_eq!(a.buffer_mib, 8, "the file beats the default");
    assert_eq!(
        a.token_file.as_deref(),
        Some(std::path::Path::new("/etc/finwait/agent.token"))
    );
    let a = run(&["run", "--collector", "x", "--config", f.path()]).expect("parses");
    assert_eq!(a.collector, "x");
    let a = run(&["run", "--collector", "x"]).expect("no file, defaults");
    assert_eq!((a.interval, a.buffer_mib), (10.0, 64));
}

#[test]
fn switches_and_repeated_flags_come_from_booleans_and_arrays() {
    let f = File::new(
        "switches",
        "collector = \"c\"\ninsecure-loopback = true\nlabel = [\"env=prod\", \"team=-x\"]\n\
         log-format = \"json\"\n",
    );
    let a = run(&["run", "--config", f.path()]).expect("parses");
    assert!(a.insecure_loopback);
    assert_eq!(a.labels, ["env=prod", "team=-x"]);
    let a = run(&["run", "--config", f.path(), "--label", "only=flag"]).expect("parses");
    assert_eq!(
        a.labels,
        ["only=flag"],
        "a repeated flag replaces the file's list"
    );
    let off = File::new("off", "collector = \"c\"\ninsecure-loopback = false\n");
    assert!(
        !run(&["run", "--config", off.path()])
            .expect("parses")
            .insecure_loopback
    );
    let out = print(&["run", "--config", f.path(), "--print-config"]);
    assert!(out.contains("log-format = \"json\"  # file"), "{out}");
}

#[test]
fn unknown_keys_are_refused_by_name_with_the_closest_flag() {
    let f = File::new(
        "unknown",
        "collector = \"c\"\nintervall = 5\ncolour = \"red\"\n",
    );
    let e = run(&["run", "--config", f.path()]).expect_err("refused");
    assert!(e.contains("unknown key `intervall`"), "{e}");
    assert!(e.contains("did you mean `interval`?"), "{e}");
    assert!(
        e.contains("unknown key `colour`"),
        "both problems at once: {e}"
    );
    let own = File::new("own", "config = \"/x\"\n");
    let e = run(&["run", "--collector", "c", "--config", own.path()]).expect_err("refused");
    assert!(e.contains("key `config`"), "{e}");
}

#[test]
fn values_of_the_wrong_type_name_the_key_and_the_type_expected() {
    let f = File::new(
        "types",
        "collector = 7\ninterval = \"fast\"\nbuffer-mib = 1.5\ninsecure-loopback = \"yes\"\n\
         label = [1]\n",
    );
    let e = run(&["run", "--config", f.path()]).expect_err("refused");
    for want in [
        "key `collector`: expected a string, found integer",
        "key `interval`: expected a number, found string",
        "key `buffer-mib`: expected an integer, found float",
        "key `insecure-loopback`: expected a boolean (true or false), found string",
        "key `label`: expected a string, found integer",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
    let range = File::new("range", "collector = \"c\"\nbuffer-mib = -1\n");
    let e = run(&["run", "--config", range.path()]).expect_err("refused by clap");
    assert!(
        e.contains(&format!(
            "configuration file {}: key `buffer-mib`",
            range.path()
        )),
        "{e}"
    );
    let bad = File::new("syntax", "collector = \n");
    let e = run(&["run", "--config", bad.path()]).expect_err("refused");
    assert!(e.contains(bad.path()), "{e}");
}

#[test]
fn print_config_shows_every_flag_with_its_source_and_hides_secrets() {
    let f = File::new(
        "print",
        "collector = \"https://user:pw@c:7070\"\nbuffer-mib = 8\n\
         report-webhook = \"https://hooks.example/T0/B0/s3cret\"\n",
    );
    let out = print(&[
        "run",
        "--config",
        f.path(),
        "--interval",
        "2.5",
        "--token-file",
        "/etc/t",
        "--print-config",
    ]);
    let table: toml::Table = out.parse().expect("the output is TOML");
    assert_eq!(table["interval"].as_float(), Some(2.5));
    for want in [
        "interval = 2.5  # flag",
        "buffer-mib = 8  # file",
        "log-format = \"text\"  # default",
        "insecure-loopback = false  # default",
        "token-file = \"/etc/t\"  # flag",
        "report-webhook = \"<redacted>\"  # file",
        "collector = \"https://<redacted>@c:7070\"  # file",
        "label = []  # unset",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("s3cret") && !out.contains("pw@"), "{out}");
    assert!(!out.contains("print-config ="), "{out}");
}

#[test]
fn other_subcommands_are_untouched() {
    let cli = match try_parse_from::<Cli, _, _>(["tool", "other", "--quiet"], &["run"]) {
        Ok(Parsed::Run(c)) => c,
        other => panic!("{other:?}"),
    };
    assert!(matches!(cli.command, Cmd::Other { quiet: true }));
    assert!(try_parse_from::<Cli, _, _>(["tool", "other", "--config", "x"], &["run"]).is_err());
}

#[test]
fn the_top_level_command_can_be_the_target() {
    #[derive(Debug, Parser)]
    struct Top {
        #[arg(long, default_value_t = 14)]
        retention_days: u32,
        #[arg(long)]
        no_reports: bool,
    }
    let f = File::new("top", "retention-days = 30\nno-reports = true\n");
    match try_parse_from::<Top, _, _>(["top", "--config", f.path()], &[]) {
        Ok(Parsed::Run(t)) => assert_eq!((t.retention_days, t.no_reports), (30, true)),
        other => panic!("{other:?}"),
    }
}

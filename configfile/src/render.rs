//! `--print-config`: the effective configuration as a TOML file the binary would
//! read back, each key commented with where its value came from, secrets redacted.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::kind::{Kind, repeatable};

/// What stands in for a secret.
pub const REDACTED: &str = "<redacted>";

/// Words in a flag's name that make its value a secret (unless it is a path: a path
/// to a secret is fine to show).
const SECRET_WORDS: [&str; 7] = [
    "token",
    "secret",
    "password",
    "passwd",
    "webhook",
    "database-url",
    "dsn",
];

/// The flags of `cmd` a file may set: every argument with a long name except help,
/// version and the file flags themselves.
pub(crate) fn settable(cmd: &Command) -> impl Iterator<Item = (&clap::Arg, &str)> {
    cmd.get_arguments().filter_map(|a| {
        let long = a.get_long()?;
        let own = [crate::CONFIG, crate::PRINT_CONFIG].contains(&a.get_id().as_str());
        let builtin = matches!(
            a.get_action(),
            clap::ArgAction::Help
                | clap::ArgAction::HelpShort
                | clap::ArgAction::HelpLong
                | clap::ArgAction::Version
        );
        (!own && !builtin).then_some((a, long))
    })
}

/// The effective configuration of `cmd` (built) as TOML.
pub(crate) fn effective(
    cmd: &Command,
    matches: &ArgMatches,
    from_file: &BTreeSet<String>,
    file: Option<&str>,
) -> String {
    let mut out = format!(
        "# Effective configuration of {} (secrets redacted).\n",
        cmd.get_bin_name().unwrap_or(cmd.get_name())
    );
    if let Some(f) = file {
        let _ = writeln!(out, "# Configuration file: {f}");
    }
    out.push_str("# Each value's source: flag, env, file or default.\n");
    for (arg, long) in settable(cmd) {
        let id = arg.get_id().as_str();
        let kind = Kind::of(arg);
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            _ if from_file.contains(long) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        if values.is_empty() && repeatable(arg) {
            let _ = writeln!(out, "{long} = []  # {source}");
            continue;
        }
        if values.is_empty() && kind != Kind::Count {
            let _ = writeln!(out, "# {long} =  # unset");
            continue;
        }
        let shown: Vec<String> = values
            .iter()
            .map(|v| toml_value(kind, &redact(long, kind, v)))
            .collect();
        let value = if kind == Kind::Count {
            matches.get_count(id).to_string()
        } else if repeatable(arg) {
            format!("[{}]", shown.join(", "))
        } else {
            shown.join(", ")
        };
        let _ = writeln!(out, "{long} = {value}  # {source}");
    }
    out
}

/// `value` of flag `long`, with anything secret replaced by [`REDACTED`]: the whole
/// value of a flag named like a secret (not a path), a database URL, and the user
/// information (`user:password@`) of any URL.
pub(crate) fn redact(long: &str, kind: Kind, value: &str) -> String {
    if kind == Kind::Path {
        return value.to_owned();
    }
    let name = long.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| name.contains(w)) {
        return REDACTED.to_owned();
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return REDACTED.to_owned();
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]);
        }
    }
    value.to_owned()
}

/// A value as TOML writes it: numbers and booleans bare, everything else a basic
/// string with its escapes.
fn toml_value(kind: Kind, raw: &str) -> String {
    let number_like = match kind {
        Kind::Integer => raw.parse::<i128>().is_ok(),
        Kind::Float => raw.parse::<f64>().is_ok_and(f64::is_finite),
        _ => raw == "true" || raw == "false",
    };
    if kind.bare() && number_like {
        return raw.to_owned();
    }
    let mut s = String::with_capacity(raw.len() + 2);
    s.push('"');
    for c in raw.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_paths_and_plain_urls_are_not() {
        assert_eq!(redact("token", Kind::Text, "s3cret"), REDACTED);
        assert_eq!(
            redact("report-webhook", Kind::Text, "https://h/x"),
            REDACTED
        );
        assert_eq!(
            redact("token-file", Kind::Path, "/etc/finwait/agent.token"),
            "/etc/finwait/agent.token"
        );
        assert_eq!(redact("db", Kind::Text, "postgres://u:p@h/db"), REDACTED);
        assert_eq!(
            redact("collector", Kind::Text, "https://u:p@collector:7070/x@y"),
            "https://<redacted>@collector:7070/x@y"
        );
        assert_eq!(
            redact("collector", Kind::Text, "https://collector:7070"),
            "https://collector:7070"
        );
    }

    #[test]
    fn values_are_written_as_toml_reads_them() {
        assert_eq!(toml_value(Kind::Integer, "14"), "14");
        assert_eq!(toml_value(Kind::Float, "2.5"), "2.5");
        assert_eq!(toml_value(Kind::Float, "NaN"), "\"NaN\"");
        assert_eq!(toml_value(Kind::Switch, "true"), "true");
        assert_eq!(toml_value(Kind::Text, "a\"b\\c\n"), r#""a\"b\\c\n""#);
        let parsed: toml::Table = format!("k = {}", toml_value(Kind::Text, "x\u{1}y"))
            .parse()
            .expect("valid TOML");
        assert_eq!(parsed["k"].as_str(), Some("x\u{1}y"));
    }
}

//! Configuration files for finwait's binaries, done once for any clap command: a TOML
//! file whose keys are the command's long flag names (`interval = 5`,
//! `insecure-loopback = true`, `label = ["a=1", "b=2"]`), given with `--config FILE`
//! or `FINWAIT_CONFIG`. Precedence: flag > `FINWAIT_*` variable > file > default.
//!
//! How: the command line is parsed once leniently to learn, for every flag, whether a
//! flag or a variable set it (`ArgMatches::value_source`); each file key whose flag
//! was not set becomes `--key=value` words inserted after the command's name, and the
//! result is parsed for real. So every flag a binary defines (today's and tomorrow's)
//! is covered without being listed here, and clap still does all the value checking.
//! Unknown keys are refused by name (with the closest flag), values of the wrong TOML
//! type by key and expected type. `--print-config` prints the effective configuration
//! as TOML, each value commented with its source, secrets redacted.

mod kind;
mod render;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, Parser};

pub use render::REDACTED;

/// Id (and long name) of the file flag.
pub(crate) const CONFIG: &str = "config";
/// Id (and long name) of the print flag.
pub(crate) const PRINT_CONFIG: &str = "print-config";
/// Largest configuration file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The outcome of a command line with its configuration file.
#[derive(Debug)]
pub enum Parsed<P> {
    /// Parsed: run with these flags.
    Run(P),
    /// `--print-config` was given: print this TOML and exit successfully.
    Print(String),
}

/// Parses the process's command line as [`try_parse_from`] does; prints the effective
/// configuration and exits 0 on `--print-config`, and prints the error and exits 2 (as
/// clap does) on any problem.
pub fn parse<P: Parser>(target: &[&str]) -> P {
    match try_parse_from(std::env::args_os(), target) {
        Ok(Parsed::Run(p)) => p,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(e) => e.exit(),
    }
}

/// Parses `argv` as `P`, with `--config FILE` (env `FINWAIT_CONFIG`) and
/// `--print-config` added to the (sub)command at `target` (a path of subcommand
/// names, empty for the top level). Every problem of the file is reported at once.
pub fn try_parse_from<P, I, T>(argv: I, target: &[&str]) -> Result<Parsed<P>, clap::Error>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = augment(P::command(), target);
    let mut built = cmd.clone();
    built.build();
    let target_cmd = find(&built, target);
    // The lenient pass: which flags did the command line or the environment set?
    // (A real error, or --help, shows up again, properly, in the final pass.)
    let probe = cmd.clone().ignore_errors(true).try_get_matches_from(&argv);
    let probe_target = probe.as_ref().ok().and_then(|m| descend(m, target));
    let mut from_file = BTreeSet::new();
    let mut file_name = None;
    if let (Some(tc), Some(pm)) = (target_cmd, probe_target)
        && let Some(path) = pm.get_one::<PathBuf>(CONFIG)
    {
        let table = read(path).map_err(|e| cmd.error(ErrorKind::Io, e))?;
        let (words, keys) = layer(tc, pm, &table).map_err(|problems| {
            cmd.error(
                ErrorKind::ValueValidation,
                format!(
                    "configuration file {}:\n  {}",
                    path.display(),
                    problems.join("\n  ")
                ),
            )
        })?;
        let at = position(&argv, target);
        argv.splice(at..at, words.into_iter().map(OsString::from));
        from_file = keys;
        file_name = Some(path.display().to_string());
    }
    let mut matches = match cmd.try_get_matches_from_mut(&argv) {
        Ok(m) => m,
        Err(e) => return Err(blame_file(&mut cmd, e, &from_file, file_name.as_deref())),
    };
    if let Some(tm) = descend(&matches, target)
        && tm.get_one::<bool>(PRINT_CONFIG).copied().unwrap_or(false)
    {
        let tc = find(&cmd, target).expect("the target was augmented, so it exists");
        return Ok(Parsed::Print(render::effective(
            tc,
            tm,
            &from_file,
            file_name.as_deref(),
        )));
    }
    P::from_arg_matches_mut(&mut matches)
        .map(Parsed::Run)
        .map_err(|e| e.format(&mut cmd))
}

/// `cmd` with the file flags added to the subcommand at `path`.
fn augment(cmd: Command, path: &[&str]) -> Command {
    match path.split_first() {
        Some((first, rest)) => cmd.mut_subcommand(first, |sub| augment(sub, rest)),
        None => cmd
            .arg(
                Arg::new(CONFIG)
                    .long(CONFIG)
                    .env("FINWAIT_CONFIG")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "TOML file of flag values, keys named like the long flags \
                         (interval = 5); flags and FINWAIT_* variables override it",
                    ),
            )
            .arg(
                Arg::new(PRINT_CONFIG)
                    .long(PRINT_CONFIG)
                    .action(ArgAction::SetTrue)
                    .help(
                        "Print the effective configuration as TOML, each value with its \
                         source (flag, env, file, default), secrets redacted, and exit",
                    ),
            ),
    }
}

/// The subcommand at `path`.
fn find<'a>(cmd: &'a Command, path: &[&str]) -> Option<&'a Command> {
    path.iter().try_fold(cmd, |c, name| {
        c.get_subcommands().find(|s| s.get_name() == *name)
    })
}

/// The matches of the subcommand at `path`, if that is the one given.
fn descend<'a>(m: &'a ArgMatches, path: &[&str]) -> Option<&'a ArgMatches> {
    path.iter().try_fold(m, |m, name| match m.subcommand() {
        Some((n, sub)) if n == *name => Some(sub),
        _ => None,
    })
}

/// Where the target's own flags may be inserted: right after its name.
fn position(argv: &[OsString], path: &[&str]) -> usize {
    let mut at = 1;
    for name in path {
        match argv[at.min(argv.len())..].iter().position(|a| a == name) {
            Some(i) => at += i + 1,
            None => return argv.len(),
        }
    }
    at.min(argv.len())
}

/// Reads and parses a configuration file.
fn read(path: &Path) -> Result<toml::Table, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("configuration file {shown}: {e}"))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "configuration file {shown}: {len} bytes, more than the {MAX_FILE_BYTES} allowed"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("configuration file {shown}: {e}"))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("configuration file {shown}: {e}"))
}

/// The words that give the file's values to every flag neither the command line nor
/// the environment set, and the keys they came from; or every problem of the file.
fn layer(
    cmd: &Command,
    probe: &ArgMatches,
    table: &toml::Table,
) -> Result<(Vec<String>, BTreeSet<String>), Vec<String>> {
    let flags: Vec<(&Arg, &str)> = render::settable(cmd).collect();
    let mut problems = Vec::new();
    let mut words = Vec::new();
    let mut keys = BTreeSet::new();
    for (key, value) in table {
        let Some((arg, long)) = flags.iter().find(|(_, l)| l == key) else {
            if key == CONFIG || key == PRINT_CONFIG {
                problems.push(format!(
                    "key `{key}`: only a flag can give --{key}, not a file"
                ));
                continue;
            }
            let hint = kind::closest(key, flags.iter().map(|(_, l)| *l))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            problems.push(format!(
                "unknown key `{key}`: no flag --{key}{hint}; keys are the long flag names"
            ));
            continue;
        };
        match kind::words(arg, long, value) {
            Err(e) => problems.push(format!("key `{key}`: {e}")),
            Ok(w) => {
                let set = matches!(
                    probe.value_source(arg.get_id().as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
                if !set {
                    words.extend(w);
                    keys.insert(key.clone());
                }
            }
        }
    }
    if problems.is_empty() {
        Ok((words, keys))
    } else {
        Err(problems)
    }
}

/// A final-parse error about a value the file gave, reworded to name the file's key.
fn blame_file(
    cmd: &mut Command,
    e: clap::Error,
    from_file: &BTreeSet<String>,
    file: Option<&str>,
) -> clap::Error {
    let Some(file) = file else { return e };
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let Some(key) = from_file
        .iter()
        .find(|k| arg == &format!("--{k}") || arg.starts_with(&format!("--{k} ")))
    else {
        return e;
    };
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    cmd.error(
        e.kind(),
        format!("configuration file {file}: key `{key}`: {first}"),
    )
}

#[cfg(test)]
mod tests;

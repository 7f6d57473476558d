//! Flags and subcommands (clap derive), and the checks on argument values: durations,
//! instants, endpoints, state names and verdict words are refused here, before any
//! request, with a message that names the flag. The words and the duration and instant
//! grammar are finwait-vocab's, so a flag accepts exactly what the collector does.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{
    NonEmptyStringValueParser, PossibleValue, StringValueParser, TypedValueParser,
};
use clap::{Args, Parser, Subcommand};
use finwait_vocab::time::{DURATION_HELP, INSTANT_HELP, InstantSpec};
use finwait_vocab::{Confidence, GroupBy, LeakKind, TcpState};

use crate::url::ServerUrl;

/// The collector's default listen address (`finwait-collector --listen`), where its
/// HTTP/JSON API is served too.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// finwait: asks a finwait collector which TCP connections leak, who holds them, and
/// what a host's socket table looked like.
#[derive(Debug, Parser)]
#[command(name = "finwait", version)]
pub struct Cli {
    /// Where and how to ask.
    #[command(flatten)]
    pub global: Global,
    /// What to ask.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Collector URL (http:// or https://, optional path prefix).
    #[arg(long, global = true, env = "FINWAIT_SERVER", default_value = DEFAULT_SERVER,
          value_name = "URL", value_parser = parse_server)]
    pub server: ServerUrl,
    /// File holding the bearer token, one with the `read` role in the collector's tokens
    /// file (else the FINWAIT_TOKEN environment variable is used).
    #[arg(long, global = true, env = "FINWAIT_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the collector's certificate (required for https://).
    #[arg(long, global = true, env = "FINWAIT_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Print the server's JSON body byte for byte instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Most items per page (1 to 10000; the server's default is 1000).
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
    /// Follow next_page_token through every page (with --json and several pages: one
    /// object, the pages' lists concatenated, next_page_token null).
    #[arg(long, global = true)]
    pub all: bool,
    /// Give up on a request (connect, TLS, answer) after this long: 90, 90s, 15m.
    #[arg(long, global = true, default_value = "10s", value_name = "D", value_parser = parse_timeout)]
    pub timeout: Timeout,
}

/// `--timeout`: the duration and how it was written.
#[derive(Debug, Clone)]
pub struct Timeout {
    /// The bound.
    pub duration: Duration,
    /// As given, for messages.
    pub shown: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which hosts report to the collector, when each was last heard from, how many
    /// sockets each has in every TCP state, and whether one is short of ephemeral ports
    /// because of TIME_WAIT.
    Hosts,
    /// Which processes leak connections (CLOSE_WAIT never closed, half-closed FIN_WAIT2,
    /// stuck LAST_ACK) and who is on the other end; --groups sums them up per process.
    Leaks(LeaksArgs),
    /// Who holds both ends of the connections to or from IP:PORT, side by side.
    Who(WhoArgs),
    /// What a host's socket table holds now, or held at an instant (--at).
    Sockets(SocketsArgs),
    /// How a host's socket counts per TCP state moved over time, one row per step.
    Timeline(TimelineArgs),
    /// What a TCP state or a leak verdict means, which side is at fault, and what fixes it
    /// (and what does not). Works offline.
    Explain(ExplainArgs),
    /// Trend reports: the stored ones (list, show) and one built now for any past
    /// window (run): what leaked, what got fixed, who is getting worse.
    #[command(subcommand)]
    Report(ReportCommand),
}

/// `finwait report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Stored reports, newest window first, with their delivery states.
    List(ReportListArgs),
    /// One stored report, in a format (default markdown).
    Show(ReportShowArgs),
    /// Builds a report now for any past window (not stored): the same contents as a
    /// scheduled one.
    Run(ReportRunArgs),
}

/// `finwait report list`.
#[derive(Debug, Args)]
pub struct ReportListArgs {
    /// Only this schedule's reports (daily, weekly, ...).
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub schedule: Option<String>,
}

/// `finwait report show`.
#[derive(Debug, Args)]
pub struct ReportShowArgs {
    /// The report's id (from `finwait report list`).
    #[arg(value_name = "ID")]
    pub id: u64,
    /// markdown, html, csv, json or text.
    #[arg(long, value_name = "F", default_value = "markdown", value_parser = parse_report_format)]
    pub format: String,
}

/// `finwait report run`.
#[derive(Debug, Args)]
pub struct ReportRunArgs {
    /// Window start: RFC 3339, or a duration meaning that long ago (default: one
    /// window before now).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub since: Option<String>,
    /// Window length (default 7d).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub window: Option<String>,
    /// Only this hostname (repeat for more).
    #[arg(long, value_name = "H", value_parser = NonEmptyStringValueParser::new())]
    pub host: Vec<String>,
    /// Only this service (repeat for more).
    #[arg(long, value_name = "S", value_parser = NonEmptyStringValueParser::new())]
    pub service: Vec<String>,
    /// IANA time zone the report's days are cut in (default UTC).
    #[arg(long, value_name = "TZ", value_parser = NonEmptyStringValueParser::new())]
    pub time_zone: Option<String>,
    /// markdown, html, csv, json or text.
    #[arg(long, value_name = "F", default_value = "markdown", value_parser = parse_report_format)]
    pub format: String,
}

fn parse_report_format(text: &str) -> Result<String, String> {
    text.parse::<finwait_vocab::report::ReportFormat>()
        .map(|f| f.name().to_owned())
}

/// A value parser for one of the vocabulary's word sets: any spelling the vocabulary
/// accepts, with its canonical words listed in `--help`.
#[derive(Clone, Copy)]
pub struct Words<T> {
    parse: fn(&str) -> Result<T, String>,
    names: fn() -> Vec<&'static str>,
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Words<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let parse = self.parse;
        StringValueParser::new()
            .try_map(move |s| parse(&s))
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new((self.names)().into_iter().map(PossibleValue::new)))
    }
}

/// `--state`: any spelling of a TCP state.
pub fn state_words() -> Words<TcpState> {
    Words {
        parse: parse_state,
        names: || TcpState::ALL.map(TcpState::name).to_vec(),
    }
}

/// `--kind`: a leak kind.
pub fn kind_words() -> Words<LeakKind> {
    Words {
        parse: str::parse,
        names: || LeakKind::ALL.iter().map(|k| k.name()).collect(),
    }
}

/// `--confidence`: a confidence of the peer match.
pub fn confidence_words() -> Words<Confidence> {
    Words {
        parse: str::parse,
        names: || Confidence::ALL.iter().map(|c| c.name()).collect(),
    }
}

/// `--by`: how `leaks --groups` sums leaks up (`by` of `/api/v1/leaks/groups`).
pub fn group_by_words() -> Words<GroupBy> {
    Words {
        parse: str::parse,
        names: || GroupBy::ALL.iter().map(|g| g.name()).collect(),
    }
}

/// `finwait leaks`.
#[derive(Debug, Args)]
pub struct LeaksArgs {
    /// Only leaks seen since this instant: RFC 3339, or a duration meaning that long ago
    /// (server default: 24h).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub since: Option<String>,
    /// Only holders that stayed in their state at least this long (default: the
    /// collector's leak threshold).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub min_age: Option<String>,
    /// Only holders on this host.
    #[arg(long, value_name = "H", value_parser = NonEmptyStringValueParser::new())]
    pub host: Option<String>,
    /// Only holders whose process has this command name.
    #[arg(long, value_name = "COMM", value_parser = NonEmptyStringValueParser::new())]
    pub process: Option<String>,
    /// Only holders of this service, as the SERVICE column shows it (nginx.service,
    /// pod/<uid>, docker/<id>).
    #[arg(long, value_name = "S", value_parser = NonEmptyStringValueParser::new())]
    pub service: Option<String>,
    /// Only this kind of leak (any case, - or _ between words).
    #[arg(long, value_name = "K", value_parser = kind_words(), conflicts_with = "groups")]
    pub kind: Option<LeakKind>,
    /// Only this confidence of peer match (any case, - or _ between words).
    #[arg(long, value_name = "C", value_parser = confidence_words(), conflicts_with = "groups")]
    pub confidence: Option<Confidence>,
    /// One row per leaking process and kind (count, growth per hour, peer hosts) instead of
    /// one per connection (/api/v1/leaks/groups).
    #[arg(long)]
    pub groups: bool,
    /// With --groups: one row per process on a host, or per service across hosts.
    #[arg(long, value_name = "BY", value_parser = group_by_words(), requires = "groups")]
    pub by: Option<GroupBy>,
}

/// `finwait who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The endpoint: 10.0.0.1:8080, or [2001:db8::1]:8080 for IPv6.
    #[arg(value_name = "IP:PORT", value_parser = parse_endpoint)]
    pub endpoint: SocketAddr,
    /// Ask about this instant instead of now: RFC 3339, or a duration meaning that long ago.
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub at: Option<String>,
}

/// `finwait sockets`.
#[derive(Debug, Args)]
pub struct SocketsArgs {
    /// The host (as `finwait hosts` lists it).
    #[arg(long, value_name = "H", value_parser = NonEmptyStringValueParser::new())]
    pub host: String,
    /// Only sockets in this TCP state: any spelling `ss` accepts (close-wait, estab,
    /// FIN_WAIT2, closed, …), in any case.
    #[arg(long, value_name = "S", value_parser = state_words())]
    pub state: Option<TcpState>,
    /// Only sockets with this local or remote port.
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// Only sockets owned by this process id.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Only sockets owned by a process with this command name.
    #[arg(long, value_name = "COMM", value_parser = NonEmptyStringValueParser::new())]
    pub process: Option<String>,
    /// Only sockets of this service (their holder's, else their namespace's container's).
    #[arg(long, value_name = "S", value_parser = NonEmptyStringValueParser::new())]
    pub service: Option<String>,
    /// The table as it was at this instant: RFC 3339, or a duration meaning that long ago.
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub at: Option<String>,
}

/// `finwait timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The host.
    #[arg(long, value_name = "H", value_parser = NonEmptyStringValueParser::new())]
    pub host: String,
    /// Start: RFC 3339, or a duration meaning that long ago (server default: 24h).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub since: Option<String>,
    /// End: RFC 3339, or a duration meaning that long ago (server default: now).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub until: Option<String>,
    /// Width of one row (server default: about 120 rows).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub step: Option<String>,
}

/// `finwait explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A TCP state in any spelling `ss` accepts (CLOSE_WAIT, fin-wait-2, estab, …), a
    /// leak kind or confidence (close_wait, nat, …), or time_wait_pressure; an unknown
    /// name lists the known ones.
    #[arg(value_name = "STATE|VERDICT")]
    pub name: String,
}

/// A duration flag: checked with the collector's grammar, passed on as written.
pub fn parse_duration(text: &str) -> Result<String, String> {
    match finwait_vocab::time::parse_duration(text) {
        Some(_) => Ok(text.trim().to_string()),
        None => Err(format!("{text:?} is not {DURATION_HELP}")),
    }
}

/// `--timeout`: a duration above zero.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    let secs = finwait_vocab::time::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not {DURATION_HELP}"))?;
    if secs <= 0.0 {
        return Err("must be more than 0".into());
    }
    let duration = Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?;
    let t = text.trim();
    let shown = if t.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{t}s")
    } else {
        t.to_string()
    };
    Ok(Timeout { duration, shown })
}

/// An instant flag: RFC 3339 or a duration meaning that long ago; passed on as written
/// so that "2h" is measured from the server's clock.
pub fn parse_instant(text: &str) -> Result<String, String> {
    let t = text.trim();
    match InstantSpec::parse(t) {
        Some(_) => Ok(t.to_string()),
        None => Err(format!("{text:?} is not {INSTANT_HELP}")),
    }
}

/// `IP:PORT`, IPv6 in brackets.
pub fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    t.parse::<SocketAddr>().map_err(|_| {
        if t.matches(':').count() > 1 && !t.starts_with('[') {
            format!("{text:?}: write an IPv6 endpoint as [addr]:port")
        } else {
            format!("{text:?} is not IP:PORT (e.g. 10.0.0.1:8080 or [2001:db8::1]:8080)")
        }
    })
}

/// A TCP state in any spelling (`TcpState::parse`: canonical names, `ss` filter and
/// column words, any case, `-`, `_` or nothing between words).
pub fn parse_state(text: &str) -> Result<TcpState, String> {
    text.parse()
}

/// `--server`.
pub fn parse_server(text: &str) -> Result<ServerUrl, String> {
    ServerUrl::parse(text)
}

/// What `main` does with a clap error: help and version go to stdout with status 0;
/// anything else becomes one line for stderr and status 2.
pub enum ParseFailure {
    /// `--help` or `--version`: print it (`clap::Error::print`) and succeed.
    Info(clap::Error),
    /// A usage error, as one line without the `finwait: ` prefix.
    Usage(String),
}

impl From<clap::Error> for ParseFailure {
    fn from(e: clap::Error) -> Self {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ParseFailure::Info(e),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | ErrorKind::MissingSubcommand => ParseFailure::Usage(
                "a command is needed: hosts, leaks, who, sockets, timeline or explain (see finwait --help)"
                    .into(),
            ),
            _ => {
                // clap's first paragraph is the message (a list of missing flags may
                // follow on its own lines); tips and usage come after a blank line.
                let text = e.render().to_string();
                let first: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .take_while(|l| !l.is_empty())
                    .collect();
                let message = first.join(" ");
                let message = message.strip_prefix("error: ").unwrap_or(&message);
                ParseFailure::Usage(format!("{message} (see finwait --help)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, ParseFailure> {
        let mut all = vec!["finwait"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map_err(ParseFailure::from)
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(ParseFailure::Usage(m)) => m,
            Err(ParseFailure::Info(_)) => panic!("{args:?} printed help"),
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
        }
    }

    #[test]
    fn durations_follow_the_collectors_grammar() {
        assert_eq!(parse_duration(" 1.5h "), Ok("1.5h".into()));
        for bad in ["", "s", "-5", "5 m", "1e3", "2w", "1h30m"] {
            assert!(
                parse_duration(bad).is_err_and(|e| e.contains(DURATION_HELP)),
                "{bad:?}"
            );
        }
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("90").map(|t| t.shown), Ok("90s".into()));
        assert_eq!(
            parse_timeout("2m").map(|t| t.duration),
            Ok(Duration::from_secs(120))
        );
    }

    #[test]
    fn instants_are_rfc3339_or_durations_ago() {
        assert_eq!(parse_instant("2h"), Ok("2h".into()));
        assert_eq!(
            parse_instant("2026-11-23T03:12:00+01:00"),
            Ok("2026-11-23T03:12:00+01:00".into())
        );
        assert!(parse_instant("yesterday").is_err_and(|e| e.contains(INSTANT_HELP)));
        assert!(parse_instant("2026-11-23 03:12").is_err());
        assert!(
            parse_instant("4000d").is_err(),
            "further back than the collector reads"
        );
    }

    #[test]
    fn endpoints_need_a_port_and_brackets_for_ipv6() {
        assert_eq!(
            parse_endpoint("10.77.0.10:8080").map(|e| e.to_string()),
            Ok("10.77.0.10:8080".into())
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:443").map(|e| e.to_string()),
            Ok("[2001:db8::1]:443".into())
        );
        assert!(parse_endpoint("2001:db8::1:443").is_err_and(|e| e.contains("[addr]:port")));
        for bad in ["10.0.0.1", "10.0.0.1:99999", "host:80", ""] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_are_normalised() {
        assert_eq!(parse_state("close-wait"), Ok(TcpState::CloseWait));
        assert_eq!(parse_state("fin_wait_2"), Ok(TcpState::FinWait2));
        assert_eq!(parse_state("closed"), Ok(TcpState::Close));
        assert_eq!(parse_state("estab"), Ok(TcpState::Established));
        assert!(parse_state("half-open").is_err_and(|e| e.contains("ESTABLISHED")));
    }

    #[test]
    fn every_spelling_is_one_state_for_flags_and_explain() {
        for (state, spellings) in finwait_vocab::state::SPELLINGS {
            for word in spellings
                .iter()
                .copied()
                .chain([state.name(), state.ss_column()])
            {
                assert_eq!(parse_state(word), Ok(state), "--state {word}");
                let states: Vec<TcpState> = finwait_vocab::explain::Topic::parse(word)
                    .into_iter()
                    .filter_map(|t| match t {
                        finwait_vocab::explain::Topic::State(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                assert_eq!(states, [state], "explain {word}");
            }
        }
    }

    #[test]
    fn verdict_flags_take_any_spelling_and_list_the_words() {
        let c = match parse(&["leaks", "--kind", "Half-Closed-Wait", "--confidence", "NAT"]) {
            Ok(c) => c,
            Err(_) => panic!("valid flags refused"),
        };
        let Command::Leaks(l) = c.command else {
            panic!("leaks expected")
        };
        assert_eq!(l.kind, Some(LeakKind::HalfClosedWait));
        assert_eq!(l.confidence, Some(Confidence::Nat));
        let m = usage_error(&["leaks", "--kind", "leaky"]);
        assert!(m.contains("--kind") && m.contains("last_ack_stuck"), "{m}");
        let Err(ParseFailure::Info(help)) = parse(&["leaks", "--help"]) else {
            panic!("help expected")
        };
        let help = help.render().to_string();
        assert!(help.contains("half_closed_wait"), "{help}");
        assert!(help.contains("one_sided"), "{help}");
    }

    #[test]
    fn global_flags_go_anywhere_and_defaults_hold() {
        let c = match parse(&["leaks", "--json", "--limit", "5", "--kind", "CLOSE-WAIT"]) {
            Ok(c) => c,
            Err(_) => panic!("valid flags refused"),
        };
        assert!(c.global.json);
        assert_eq!(c.global.limit, Some(5));
        assert_eq!(c.global.timeout.duration, Duration::from_secs(10));
        let Command::Leaks(l) = c.command else {
            panic!("leaks expected")
        };
        assert_eq!(l.kind, Some(LeakKind::CloseWait));
    }

    #[test]
    fn bad_flags_are_one_line_that_names_the_flag() {
        let cases: [(&[&str], &str); 10] = [
            (&["leaks", "--since", "yesterday"], "--since"),
            (&["leaks", "--min-age", "5w"], "--min-age"),
            (&["--limit", "0", "hosts"], "--limit"),
            (&["who", "::1:80"], "IP:PORT"),
            (&["sockets"], "--host"),
            (&["sockets", "--host", "a", "--state", "bogus"], "--state"),
            (&["leaks", "--groups", "--kind", "close_wait"], "--kind"),
            (&["leaks", "--by", "service"], "--groups"),
            (&["leaks", "--groups", "--by", "pod"], "--by"),
            (&["--server", "ftp://x", "hosts"], "--server"),
        ];
        for (args, flag) in cases {
            let m = usage_error(args);
            assert!(!m.contains('\n'), "{args:?}: {m}");
            assert!(m.contains(flag), "{args:?}: {m}");
        }
        assert!(usage_error(&[]).contains("a command is needed"));
    }

    #[test]
    fn help_is_information_not_an_error() {
        for args in [&["--help"][..], &["leaks", "--help"], &["--version"]] {
            assert!(
                matches!(parse(args), Err(ParseFailure::Info(_))),
                "{args:?}"
            );
        }
    }
}

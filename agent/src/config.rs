//! The typed configuration of `finwait-agent run`: built once from the flags and
//! `FINWAIT_*` environment variables ([`RunArgs`]), the token and CA files read, the
//! host identity resolved, and every rule checked before anything connects. All
//! problems are reported at once, each naming its flag.
//!
//! The bearer token lives in [`Token`], whose `Debug` never shows it, so printing a
//! [`Config`] (or anything holding one) cannot leak it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use finwait_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::cli::RunArgs;
use crate::delta::TimeWaitMode;
use crate::identity::{self, IdentityOverrides};
use crate::sampler::SamplerConfig;
use crate::spool::SpoolConfig;

/// Shortest sampling interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest sampling interval: beyond it the collector's lease (60 s by default) has
/// long lapsed between reports, and short-lived leaks are never seen.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Where the spool lives unless `--spool-dir` says otherwise (systemd's StateDirectory
/// `finwait-agent`; a hostPath on Kubernetes).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/finwait-agent/spool";
/// Smallest spool bound: a few full tables of an ordinary host.
pub const MIN_SPOOL_BYTES: u64 = 1024 * 1024;
/// Age bounds of the spool: under a minute it would drop batches during a mere
/// reconnect; the collector keeps 14 days by default.
pub const SPOOL_AGE_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(30 * 86_400));

/// How long to wait for a TCP (and TLS) connection to the collector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on the stream, so a half-open connection is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A bearer token, held as the ready `authorization` value (`Bearer ...`), marked
/// sensitive so HTTP/2 never indexes it. `Debug` prints `<redacted>`; there is no
/// `Display`.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Token {
    /// A token from its text (surrounding whitespace removed); refuses an empty token
    /// and one that cannot travel in a header (printable ASCII only).
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err("holds no token".into());
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {secret}")
            .parse()
            .map_err(|_| "the token must be printable ASCII".to_owned())?;
        value.set_sensitive(true);
        Ok(Token(value))
    }

    /// Reads a token file.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "the token must be printable ASCII")?;
        Token::new(text)
    }

    /// The `authorization` metadata value.
    pub fn header(&self) -> &MetadataValue<Ascii> {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The CA certificate(s) (PEM) that signed the collector's certificate. Not secret;
/// `Debug` prints the size rather than the bytes.
#[derive(Clone)]
pub struct CaCertificate(Vec<u8>);

impl CaCertificate {
    /// PEM text holding at least one certificate.
    pub fn from_pem(pem: Vec<u8>) -> Result<CaCertificate, String> {
        let marker = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(marker.len()).any(|w| w == marker) {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(CaCertificate(pem))
    }

    /// Reads a PEM file.
    pub fn from_file(path: &Path) -> Result<CaCertificate, String> {
        CaCertificate::from_pem(std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?)
    }

    /// The PEM bytes.
    pub fn pem(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCertificate({} bytes)", self.0.len())
    }
}

/// Every problem found in a run configuration, each naming its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One line per problem, starting with the flag it is about.
    pub problems: Vec<String>,
}

/// Everything `finwait-agent run` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Collector URL: `https://`, or `http://` to a loopback address with
    /// `insecure_loopback`; or several, separated by commas (see [`Config::collectors`]).
    pub collector: String,
    /// Sampling interval before jitter, within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
    pub interval: Duration,
    /// Bearer token the collector accepts (required for https unless
    /// `insecure_loopback`).
    pub token: Option<Token>,
    /// CA that signed the collector's certificate (required for https).
    pub ca: Option<CaCertificate>,
    /// Plaintext without a token is allowed (loopback collectors only).
    pub insecure_loopback: bool,
    /// Bound of the unacknowledged-batch buffer, in bytes.
    pub buffer_bytes: usize,
    /// TIME_WAIT summarised or sent one by one.
    pub time_wait: TimeWaitMode,
    /// How the table is read.
    pub sampler: SamplerConfig,
    /// Who this host is, as sent in every hello.
    pub identity: pb::HostIdentity,
    /// This process's instance id (tells a restarted agent from a duplicate one).
    pub instance_id: String,
    /// The disk spool; `None` with `--no-spool`.
    pub spool: Option<SpoolConfig>,
    /// Where to serve `/metrics` (`--metrics-listen`); `None`: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Records the problem of a step that failed and yields its value if it did not.
fn keep<T>(problems: &mut Vec<String>, flag: String, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| problems.push(format!("{flag}: {e}"))).ok()
}

impl Config {
    /// Builds the configuration from the flags: reads the token and CA files, resolves
    /// the host identity, and checks every rule; returns every problem found.
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let interval = keep(
            &mut problems,
            format!("--interval {}", args.interval),
            interval_from_secs(args.interval),
        );
        let token = args.token_file.as_deref().and_then(|p| {
            let flag = format!("--token-file {}", p.display());
            keep(&mut problems, flag, Token::from_file(p))
        });
        let ca = args.ca_file.as_deref().and_then(|p| {
            let flag = format!("--ca-file {}", p.display());
            keep(&mut problems, flag, CaCertificate::from_file(p))
        });
        let buffer_bytes = keep(
            &mut problems,
            format!("--buffer-mib {}", args.buffer_mib),
            // 0 has always meant the smallest buffer, 1 MiB.
            args.buffer_mib
                .max(1)
                .checked_mul(1024 * 1024)
                .ok_or_else(|| "too large".to_owned()),
        );
        let spool_max_bytes = keep(
            &mut problems,
            format!("--spool-max-bytes {}", args.spool.spool_max_bytes),
            parse_bytes(&args.spool.spool_max_bytes).and_then(|b| {
                if b < MIN_SPOOL_BYTES {
                    Err("must be at least 1MiB".into())
                } else {
                    Ok(b)
                }
            }),
        );
        let spool_max_age = keep(
            &mut problems,
            format!("--spool-max-age {}", args.spool.spool_max_age),
            parse_age(&args.spool.spool_max_age).and_then(|d| {
                let (lo, hi) = SPOOL_AGE_RANGE;
                if (lo..=hi).contains(&d) {
                    Ok(d)
                } else {
                    Err("must be between 1m and 30d".into())
                }
            }),
        );
        if !args.spool.no_spool && args.spool.spool_dir.as_os_str().is_empty() {
            problems.push("--spool-dir: empty (give a directory, or --no-spool)".into());
        }
        let spool = (!args.spool.no_spool).then(|| SpoolConfig {
            dir: args.spool.spool_dir.clone(),
            max_bytes: spool_max_bytes.unwrap_or(MIN_SPOOL_BYTES),
            max_age: spool_max_age.unwrap_or(SPOOL_AGE_RANGE.1),
        });
        let overrides = IdentityOverrides {
            hostname: args.hostname.clone(),
            machine_id: args.machine_id.clone(),
            labels: args.labels.clone(),
        };
        let interval_ms = interval.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(0));
        // Its messages already name the flag to give.
        let identity = identity::host_identity(&overrides, interval_ms)
            .map_err(|e| problems.push(e))
            .ok();
        let config = Config {
            collector: args.collector.clone(),
            interval: interval.unwrap_or(MIN_INTERVAL),
            token,
            ca,
            insecure_loopback: args.insecure_loopback,
            buffer_bytes: buffer_bytes.unwrap_or(1),
            time_wait: args.time_wait,
            sampler: args.read.sampler_config(),
            identity: identity.unwrap_or_default(),
            instance_id: identity::instance_id(),
            spool,
            metrics_listen: args.metrics_listen,
        };
        // A file that was given but could not be read is reported once, above, not
        // again as missing.
        problems.extend(config.problems(args.token_file.is_some(), args.ca_file.is_some()));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Checks the rules that need no files: interval, buffer, transport (plaintext only
    /// to loopback when asked; https with a CA and a token); returns every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems(self.token.is_some(), self.ca.is_some());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    fn problems(&self, token_given: bool, ca_given: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            problems.push(format!(
                "--interval {}: {}",
                self.interval.as_secs_f64(),
                interval_range()
            ));
        }
        if self.buffer_bytes == 0 {
            problems.push("--buffer-mib: must be at least 1".into());
        }
        let urls = self.collectors();
        if urls.is_empty() {
            problems.push(format!(
                "--collector {:?}: give at least one URL",
                self.collector
            ));
        }
        for url in urls {
            self.url_problems(url, token_given, ca_given, &mut problems);
        }
        problems
    }

    /// The rules for one collector URL of the list.
    fn url_problems(
        &self,
        url: &str,
        token_given: bool,
        ca_given: bool,
        problems: &mut Vec<String>,
    ) {
        let collector = format!("--collector {url}");
        let uri: tonic::codegen::http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => {
                problems.push(format!("{collector}: {e}"));
                return;
            }
        };
        let host = uri.host().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("http") if self.insecure_loopback && !loopback => problems.push(format!(
                "--insecure-loopback: allows plaintext only to a loopback collector, not {host}"
            )),
            Some("http") if !self.insecure_loopback => problems.push(format!(
                "{collector}: plaintext http:// needs --insecure-loopback (and a loopback collector); use https://"
            )),
            Some("http") => {}
            Some("https") => {
                if !ca_given {
                    problems.push(format!(
                        "--ca-file: {collector} needs the CA that signed the collector's certificate"
                    ));
                }
                if !token_given && !self.insecure_loopback {
                    problems.push(format!(
                        "--token-file: {collector} needs the token the collector accepts"
                    ));
                }
                if self.ca.is_some()
                    && let Err(e) = self.endpoint_for(url)
                {
                    problems.push(format!("{collector} with --ca-file: {e}"));
                }
            }
            _ => problems.push(format!("{collector}: use http:// or https://")),
        }
    }

    /// The collector URLs, in the order given: `--collector` takes one URL or several
    /// separated by commas (collectors sharing one database), tried in turn.
    pub fn collectors(&self) -> Vec<&str> {
        self.collector
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The first collector's endpoint (see [`Config::endpoints`]).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let first = self.collectors().first().copied().unwrap_or_default();
        self.endpoint_for(first)
    }

    /// Every collector's endpoint with its URL, in the order given: each new stream
    /// goes to the one after the last one tried.
    pub fn endpoints(&self) -> Result<Vec<(String, Endpoint)>, String> {
        self.collectors()
            .into_iter()
            .map(|u| Ok((u.to_owned(), self.endpoint_for(u)?)))
            .collect()
    }

    /// The endpoint of `url`: timeouts, keepalive and, for https, TLS trusting the CA.
    /// No I/O: connecting happens on each stream.
    fn endpoint_for(&self, url: &str) -> Result<Endpoint, String> {
        let mut ep = Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_while_idle(true);
        if let (Some(ca), true) = (&self.ca, url.starts_with("https:")) {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
            ep = ep.tls_config(tls).map_err(|e| format!("TLS set-up: {e}"))?;
        }
        Ok(ep)
    }
}

/// A size: bytes, or a number with a `KiB`, `MiB` or `GiB` suffix (`K`, `M`, `G` too).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "a number of bytes, optionally with KiB, MiB or GiB".to_owned())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| "too large".to_owned())
}

/// A duration: seconds, or a number with an `s`, `m`, `h` or `d` suffix.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "a whole number of seconds, optionally with s, m, h or d".to_owned())?;
    let scale: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| "too large".to_owned())
}

fn interval_range() -> String {
    format!(
        "must be between {} and {} seconds",
        MIN_INTERVAL.as_secs_f64(),
        MAX_INTERVAL.as_secs_f64()
    )
}

/// Seconds as given on the command line; NaN, negative and out-of-range values are
/// refused here rather than panicking in `Duration`.
fn interval_from_secs(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| (MIN_INTERVAL..=MAX_INTERVAL).contains(d))
        .ok_or_else(interval_range)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn args(flags: &[&str]) -> RunArgs {
        let mut all = vec![
            "finwait-agent",
            "run",
            "--hostname",
            "h",
            "--machine-id",
            "m",
        ];
        all.extend_from_slice(flags);
        match Cli::try_parse_from(all).expect("flags parse").command {
            Command::Run(a) => a,
            Command::Snapshot(_) => unreachable!("parsed run"),
        }
    }

    fn problems(flags: &[&str]) -> Vec<String> {
        match Config::from_args(&args(flags)) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("finwait-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    #[test]
    fn plaintext_only_to_loopback_when_asked() {
        for ok in [
            "http://127.0.0.1:7070",
            "http://[::1]:7070",
            "http://localhost:7070",
        ] {
            assert_eq!(
                problems(&["--insecure-loopback", "--collector", ok]),
                Vec::<String>::new(),
                "{ok}"
            );
        }
        let p = problems(&["--insecure-loopback", "--collector", "http://10.1.2.3:7070"]);
        assert!(
            p.len() == 1 && p[0].starts_with("--insecure-loopback"),
            "{p:?}"
        );
        let p = problems(&["--collector", "http://127.0.0.1:7070"]);
        assert!(p.len() == 1 && p[0].starts_with("--collector"), "{p:?}");
        let p = problems(&["--collector", "ftp://collector"]);
        assert!(p.len() == 1 && p[0].contains("https://"), "{p:?}");
    }

    #[test]
    fn several_collectors_are_checked_one_by_one_and_kept_in_order() {
        let list = "http://127.0.0.1:7070, http://[::1]:7071";
        let cfg = Config::from_args(&args(&["--insecure-loopback", "--collector", list]))
            .expect("two loopback collectors");
        assert_eq!(
            cfg.collectors(),
            ["http://127.0.0.1:7070", "http://[::1]:7071"]
        );
        let eps = cfg.endpoints().expect("endpoints");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].0, "http://[::1]:7071");
        // The bad one of the list is named; the good one is not.
        let p = problems(&[
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:7070,http://10.1.2.3:7070",
        ]);
        assert!(p.len() == 1 && p[0].contains("10.1.2.3"), "{p:?}");
        let p = problems(&["--insecure-loopback", "--collector", " , "]);
        assert!(
            p.len() == 1 && p[0].starts_with("--collector") && p[0].contains("at least one"),
            "{p:?}"
        );
    }

    #[test]
    fn https_needs_a_ca_and_a_token_and_works_with_both() {
        let dir = scratch("https");
        let (ca, token) = (dir.join("ca.pem"), dir.join("token"));
        std::fs::write(&ca, PEM).expect("ca");
        std::fs::write(&token, "secret-token\n").expect("token");
        let (ca, token) = (ca.to_str().expect("utf-8"), token.to_str().expect("utf-8"));
        let url = "https://collector.example:7070";
        let p = problems(&["--collector", url, "--token-file", token]);
        assert!(p.len() == 1 && p[0].starts_with("--ca-file"), "{p:?}");
        let p = problems(&["--collector", url, "--ca-file", ca]);
        assert!(p.len() == 1 && p[0].starts_with("--token-file"), "{p:?}");
        let cfg = Config::from_args(&args(&[
            "--collector",
            url,
            "--ca-file",
            ca,
            "--token-file",
            token,
        ]))
        .expect("valid");
        assert_eq!(
            cfg.token.as_ref().map(|t| t.header().to_str().ok()),
            Some(Some("Bearer secret-token"))
        );
        assert!(cfg.endpoint().is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_problem_is_reported_at_once_each_naming_its_flag() {
        let dir = scratch("all");
        let missing = dir.join("no-such-token");
        let p = problems(&[
            "--collector",
            "https://collector.example:7070",
            "--interval",
            "0.01",
            "--token-file",
            missing.to_str().expect("utf-8"),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("--interval 0.01: must be between"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("--token-file ") && p[1].contains("cannot read"),
            "{p:?}"
        );
        assert!(p[2].starts_with("--ca-file: "), "{p:?}");
        let err = Config::from_args(&args(&[
            "--collector",
            "http://10.0.0.1:1",
            "--interval",
            "NaN",
            "--buffer-mib",
            &usize::MAX.to_string(),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        for flag in ["--interval NaN", "--buffer-mib", "--collector"] {
            assert!(text.contains(flag), "{flag} missing from {text}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unusable_token_and_ca_files_are_named() {
        let dir = scratch("files");
        let (ca, token) = (dir.join("ca.pem"), dir.join("token"));
        std::fs::write(&ca, "not a certificate").expect("ca");
        std::fs::write(&token, " \n").expect("token");
        let p = problems(&[
            "--collector",
            "https://collector.example:7070",
            "--ca-file",
            ca.to_str().expect("utf-8"),
            "--token-file",
            token.to_str().expect("utf-8"),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("--token-file") && p[0].ends_with("holds no token"));
        assert!(p[1].starts_with("--ca-file") && p[1].contains("no PEM certificate"));
        assert!(Token::new("tab\tinside\u{7f}").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_hand_built_config_is_checked_too() {
        let mut cfg = Config::from_args(&args(&[
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:7070",
        ]))
        .expect("valid");
        assert!(cfg.validate().is_ok());
        cfg.interval = Duration::from_secs(7200);
        cfg.collector = "https://collector.example:7070".into();
        let e = cfg.validate().expect_err("invalid");
        assert_eq!(e.problems.len(), 2, "{e}");
    }

    #[test]
    fn spool_flags_are_parsed_and_checked_naming_the_flag() {
        let cfg = Config::from_args(&args(&[
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:7070",
            "--spool-dir",
            "/tmp/x",
            "--spool-max-bytes",
            "2GiB",
            "--spool-max-age",
            "90m",
        ]))
        .expect("valid");
        assert_eq!(
            cfg.spool,
            Some(SpoolConfig {
                dir: "/tmp/x".into(),
                max_bytes: 2 << 30,
                max_age: Duration::from_secs(5400),
            })
        );
        let off = Config::from_args(&args(&[
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:7070",
            "--no-spool",
        ]))
        .expect("valid");
        assert_eq!(off.spool, None);
        let p = problems(&[
            "--insecure-loopback",
            "--collector",
            "http://127.0.0.1:7070",
            "--spool-max-bytes",
            "12 parsecs",
            "--spool-max-age",
            "10s",
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("--spool-max-bytes 12 parsecs: unknown unit"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("--spool-max-age 10s: must be between"),
            "{p:?}"
        );
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999G").is_err());
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_age("300"), Ok(Duration::from_secs(300)));
        assert!(parse_age("1.5h").is_err());
    }

    #[test]
    fn debug_never_prints_the_token() {
        let cfg = Config {
            token: Some(Token::new("s3cr3t-t0ken").expect("token")),
            ..Config::from_args(&args(&[
                "--insecure-loopback",
                "--collector",
                "http://127.0.0.1:7070",
            ]))
            .expect("valid")
        };
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let header = cfg.token.as_ref().map(|t| format!("{:?}", t.header()));
        assert!(header.is_some_and(|h| !h.contains("s3cr3t")));
    }
}

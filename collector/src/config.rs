//! The collector's configuration: flags and `FINWAIT_*` environment variables, parsed
//! and checked once before anything binds. Secrets (database URL, tokens) come from the
//! environment or files, never from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// finwait collector: ingests agents' socket tables into PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "finwait-collector", version, about)]
pub struct Config {
    /// Address for gRPC (ingest) and, later, HTTP; port 0 picks one.
    #[arg(long, env = "FINWAIT_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// File holding the PostgreSQL URL. Without it (and without DATABASE_URL) the
    /// collector runs its own embedded PostgreSQL under --data-dir.
    #[arg(long, env = "FINWAIT_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Directory for the embedded PostgreSQL and other state.
    #[arg(long, env = "FINWAIT_DATA_DIR", default_value = "finwait-data")]
    pub data_dir: PathBuf,
    /// Directory of the PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin).
    #[arg(long, env = "FINWAIT_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// File of accepted tokens with their roles, one per line: `ingest:TOKEN` (agents),
    /// `read:TOKEN` (API, dashboard, reflection), `ingest,read:TOKEN`; a bare line is
    /// ingest only (`#` comments allowed).
    #[arg(long, env = "FINWAIT_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "FINWAIT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "FINWAIT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plaintext gRPC without tokens. Only allowed on a loopback --listen address.
    #[arg(long, env = "FINWAIT_INSECURE_LOOPBACK")]
    pub insecure_loopback: bool,
    /// Days of history kept (ended lifetimes, counts).
    #[arg(long, env = "FINWAIT_RETENTION_DAYS", default_value_t = 14)]
    pub retention_days: u32,
    /// Largest accepted gRPC message, in bytes. Agents send large full tables in
    /// chunks of at most 10,000 sockets (about 1.2 MB), so this bounds one chunk, not a
    /// table. At most --ingest-memory-bytes / 40.
    #[arg(long, env = "FINWAIT_MAX_MESSAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Memory all ingest streams together may hold for batches being decoded, checked
    /// and written, in bytes: each message reserves 40 times its encoded size before it
    /// is decoded, and waits while the budget is spent.
    #[arg(long, env = "FINWAIT_INGEST_MEMORY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub ingest_memory_bytes: usize,
    /// Raw message bytes all ingest streams together may have buffered before their
    /// messages are decoded: each message reserves its length when its header
    /// arrives, and its stream is not read while it waits (shed after
    /// --ingest-batch-wait-ms). At least --max-message-bytes.
    #[arg(long, env = "FINWAIT_INGEST_WIRE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub ingest_wire_bytes: usize,
    /// How far ahead of the collector's clock an agent's clock may run, in seconds: a
    /// batch taken (or an agent started) further in the future is refused.
    #[arg(long, env = "FINWAIT_MAX_CLOCK_AHEAD_SECONDS", default_value_t = 300)]
    pub max_clock_ahead_seconds: u32,
    /// Most socket records in one batch.
    #[arg(long, env = "FINWAIT_MAX_BATCH_SOCKETS", default_value_t = 2_000_000)]
    pub max_batch_sockets: usize,
    /// Most concurrent agent streams.
    #[arg(long, env = "FINWAIT_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
    /// How long a host's lease outlives its last batch, in seconds; after it (and as
    /// long again) a silent agent's open lifetimes are ended at its last report.
    #[arg(long, env = "FINWAIT_LEASE_SECONDS", default_value_t = 60)]
    pub lease_seconds: u64,
    /// The database is a Citus coordinator: make (or keep) the distributed layout at
    /// start-up (`hosts` and `namespaces` reference tables, socket tables distributed by
    /// pair key, per-host tables by host; docs/scale.md). Refused when the database has
    /// no citus extension.
    #[arg(long, env = "FINWAIT_CITUS")]
    pub citus: bool,
    /// Seconds between maintenance passes (ending silent agents' lifetimes, creating
    /// and dropping partitions).
    #[arg(long, env = "FINWAIT_MAINTENANCE_SECONDS", default_value_t = 30)]
    pub maintenance_seconds: u64,
    /// A CLOSE_WAIT (or half-closed FIN_WAIT2, or LAST_ACK) older than this many seconds
    /// is a leak; the API's `min_age` overrides it per query.
    #[arg(long, env = "FINWAIT_LEAK_THRESHOLD_SECONDS", default_value_t = 60.0)]
    pub leak_threshold_seconds: f64,
    /// Seconds a holder's and a peer's lifetimes may miss each other by and still pair
    /// (sampling interval plus clock skew).
    #[arg(
        long,
        env = "FINWAIT_CORRELATION_SLACK_SECONDS",
        default_value_t = 30.0
    )]
    pub correlation_slack_seconds: f64,
    /// Database connections for ingest and maintenance: queries never take these, so
    /// a flood of slow questions cannot delay an agent's acknowledgements.
    #[arg(long, env = "FINWAIT_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Database connections for queries (API, gRPC Query, pages); a question that
    /// finds them all busy for 5 s is answered 503 (gRPC UNAVAILABLE) with Retry-After.
    #[arg(long, env = "FINWAIT_QUERY_CONNECTIONS", default_value_t = 8)]
    pub query_connections: u32,
    /// PostgreSQL statement timeout of every query statement, in seconds: a question
    /// that runs longer is cancelled and answered 503 (gRPC UNAVAILABLE) saying so.
    #[arg(long, env = "FINWAIT_QUERY_TIMEOUT_SECONDS", default_value_t = 15)]
    pub query_timeout_seconds: u64,
    /// Most open client connections (agents, API, pages together); more are closed at
    /// once. Lowered at start-up to fit under the open-file limit.
    #[arg(long, env = "FINWAIT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a new connection may take to send its first byte (plaintext) or to
    /// finish the TLS handshake before it is closed.
    #[arg(long, env = "FINWAIT_HANDSHAKE_SECONDS", default_value_t = 10)]
    pub handshake_seconds: u64,
    /// Seconds a connection may stay open with no request in flight (an agent's stream
    /// is one long request, so it never idles) before it is closed.
    #[arg(long, env = "FINWAIT_IDLE_SECONDS", default_value_t = 300)]
    pub idle_seconds: u64,
    /// Seconds between HTTP/2 keepalive pings; a ping not answered within as many
    /// seconds again (at most 20) closes the connection.
    #[arg(long, env = "FINWAIT_KEEPALIVE_SECONDS", default_value_t = 30)]
    pub keepalive_seconds: u64,
    /// Database writes of ingest (hellos, batch transactions) in progress at once;
    /// 0 means --db-connections minus 2 (maintenance and lease releases keep theirs),
    /// at least 1. A write that finds them all busy for --ingest-write-wait-ms is shed:
    /// UNAVAILABLE with a retry delay (README, "Load shedding").
    #[arg(long, env = "FINWAIT_INGEST_WRITES", default_value_t = 0)]
    pub ingest_writes: usize,
    /// Milliseconds a hello (a new agent stream) may wait for a write slot before it
    /// is shed.
    #[arg(long, env = "FINWAIT_INGEST_WRITE_WAIT_MS", default_value_t = 500)]
    pub ingest_write_wait_ms: u64,
    /// Milliseconds a batch on an established stream may wait for a write slot before
    /// it is shed (longer: shedding it ends the stream, and reconnecting costs a hello
    /// and a full table).
    #[arg(long, env = "FINWAIT_INGEST_BATCH_WAIT_MS", default_value_t = 10_000)]
    pub ingest_batch_wait_ms: u64,
    /// Shortest retry delay handed to a shed agent, in milliseconds (before jitter);
    /// it grows with the pressure up to --ingest-retry-max-ms.
    #[arg(long, env = "FINWAIT_INGEST_RETRY_MIN_MS", default_value_t = 1_000)]
    pub ingest_retry_min_ms: u64,
    /// Longest retry delay handed to a shed agent, in milliseconds.
    #[arg(long, env = "FINWAIT_INGEST_RETRY_MAX_MS", default_value_t = 30_000)]
    pub ingest_retry_max_ms: u64,
    /// Seconds after which a connection is asked to go away (HTTP/2 GOAWAY), so agents
    /// reconnect and long-lived streams rebalance across collectors behind a load
    /// balancer; 0 keeps connections for ever. The age is not jittered (tonic has no
    /// such option): agents connected at once leave at once, and their jittered
    /// reconnections plus load shedding spread them out.
    #[arg(
        long,
        env = "FINWAIT_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = 3_600
    )]
    pub max_connection_age_seconds: u64,
    /// Seconds a connection past its age gets to finish its requests (an agent's
    /// stream is cut after it and the agent resends what was not acknowledged).
    #[arg(
        long,
        env = "FINWAIT_MAX_CONNECTION_AGE_GRACE_SECONDS",
        default_value_t = 30
    )]
    pub max_connection_age_grace_seconds: u64,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, env = "FINWAIT_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    /// Report schedules and destinations (TOML; see the README's Reports section).
    /// Without it: a daily report (06:00) and a weekly one (Monday 06:00).
    #[arg(long, env = "FINWAIT_REPORTS_FILE", value_name = "FILE")]
    pub reports_file: Option<PathBuf>,
    /// Write the default reports (HTML, Markdown, CSV, JSON) into this directory.
    #[arg(long, env = "FINWAIT_REPORT_DIR", value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// POST the default reports to this webhook (JSON with a chat summary in `text`).
    #[arg(long, env = "FINWAIT_REPORT_WEBHOOK", value_name = "URL")]
    pub report_webhook: Option<String>,
    /// IANA time zone of the default schedules and of their days (default UTC).
    #[arg(long, env = "FINWAIT_REPORT_TIME_ZONE", value_name = "TZ")]
    pub report_time_zone: Option<String>,
    /// Do not build scheduled reports (on-demand reports still work).
    #[arg(long, env = "FINWAIT_NO_REPORTS")]
    pub no_reports: bool,
    /// The collector's URL as people reach it (`https://finwait.example.net:7070`):
    /// links in reports point there (default: paths on the collector).
    #[arg(long, env = "FINWAIT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// A one-off command instead of serving (`init`); none serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands of `finwait-collector` besides serving (which takes no command).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write a CA, a server certificate for the given names and addresses, an agent
    /// token and a reader token into DIR, and print the commands that use them.
    Init(crate::init::InitArgs),
}

impl Config {
    /// Load shedding as configured (README, "Load shedding").
    pub fn shed(&self) -> crate::shed::ShedConfig {
        let writes = if self.ingest_writes == 0 {
            (self.db_connections as usize).saturating_sub(2).max(1)
        } else {
            self.ingest_writes
        };
        crate::shed::ShedConfig {
            writes,
            wait: Duration::from_millis(self.ingest_write_wait_ms),
            batch_wait: Duration::from_millis(self.ingest_batch_wait_ms),
            retry_min: Duration::from_millis(self.ingest_retry_min_ms),
            retry_max: Duration::from_millis(self.ingest_retry_max_ms),
        }
    }

    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    /// The report schedules: the reports file, else the defaults, delivered where
    /// the flags say.
    pub fn schedules(&self) -> Result<crate::report::schedule::Schedules, Vec<String>> {
        use crate::report::schedule::{Schedules, Simple};
        let simple = Simple {
            dir: self.report_dir.clone(),
            webhook: self.report_webhook.clone(),
            time_zone: self.report_time_zone.clone(),
            public_url: self.public_url.clone(),
        };
        match &self.reports_file {
            Some(p) => Schedules::load(p, &simple),
            None => Schedules::defaults(&simple),
        }
    }

    /// Checks what flags alone cannot: returns every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let tls = self.tls_cert.is_some();
        if self.insecure_loopback && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "--insecure-loopback needs a loopback --listen address, not {}",
                self.listen
            ));
        }
        if !self.insecure_loopback && !tls {
            problems.push("refusing plaintext: give --tls-cert and --tls-key, or --insecure-loopback on a loopback address".into());
        }
        if !self.insecure_loopback && self.tokens_file.is_none() {
            problems.push("agents must authenticate: give --tokens-file, or --insecure-loopback on a loopback address".into());
        }
        if self.lease_seconds == 0 {
            problems.push("--lease-seconds must be at least 1".into());
        }
        if !(self.leak_threshold_seconds >= 0.0 && self.correlation_slack_seconds >= 0.0) {
            problems.push(
                "--leak-threshold-seconds and --correlation-slack-seconds must be 0 or more".into(),
            );
        }
        if self.maintenance_seconds == 0 {
            problems.push("--maintenance-seconds must be at least 1".into());
        }
        for (flag, value) in [
            ("--query-connections", u64::from(self.query_connections)),
            ("--db-connections", u64::from(self.db_connections)),
            ("--query-timeout-seconds", self.query_timeout_seconds),
            ("--max-connections", self.max_connections as u64),
            ("--handshake-seconds", self.handshake_seconds),
            ("--idle-seconds", self.idle_seconds),
            ("--keepalive-seconds", self.keepalive_seconds),
        ] {
            if value == 0 {
                problems.push(format!("{flag} must be at least 1"));
            }
        }
        if self.ingest_retry_min_ms == 0 || self.ingest_retry_max_ms < self.ingest_retry_min_ms {
            problems.push(format!(
                "--ingest-retry-min-ms must be at least 1 and at most --ingest-retry-max-ms ({} > {})",
                self.ingest_retry_min_ms, self.ingest_retry_max_ms
            ));
        }
        if self.max_connection_age_seconds != 0
            && self.max_connection_age_seconds < self.keepalive_seconds
        {
            problems.push(format!(
                "--max-connection-age-seconds {} is shorter than --keepalive-seconds {}: give 0 (no age) or more",
                self.max_connection_age_seconds, self.keepalive_seconds
            ));
        }
        let need = crate::budget::Budget::need(self.max_message_bytes);
        if self.ingest_memory_bytes < need {
            problems.push(format!(
                "--ingest-memory-bytes {} cannot hold one message of --max-message-bytes {} \
                 (it needs {} times that, {need})",
                self.ingest_memory_bytes,
                self.max_message_bytes,
                crate::budget::DECODED_PER_WIRE_BYTE
            ));
        }
        if self.ingest_wire_bytes < self.max_message_bytes {
            problems.push(format!(
                "--ingest-wire-bytes {} cannot hold one message of --max-message-bytes {}",
                self.ingest_wire_bytes, self.max_message_bytes
            ));
        }
        if self.retention_days == 0 {
            problems.push("--retention-days must be at least 1".into());
        }
        if let Err(mut p) = self.schedules() {
            problems.append(&mut p);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["finwait-collector"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn a_memory_budget_too_small_for_one_message_is_refused() {
        let e = parse(&[
            "--insecure-loopback",
            "--max-message-bytes",
            "1048576",
            "--ingest-memory-bytes",
            "1048576",
        ])
        .validate()
        .expect_err("one message needs 40 MiB");
        assert!(e[0].contains("--ingest-memory-bytes"), "{e:?}");
        assert!(
            parse(&["--insecure-loopback"]).validate().is_ok(),
            "the defaults fit"
        );
    }

    #[test]
    fn plaintext_without_tokens_only_on_loopback_and_only_when_asked() {
        assert!(parse(&["--insecure-loopback"]).validate().is_ok());
        let e = parse(&["--insecure-loopback", "--listen", "0.0.0.0:7070"])
            .validate()
            .expect_err("not loopback");
        assert!(e[0].contains("loopback"), "{e:?}");
        let e = parse(&[]).validate().expect_err("no TLS, no tokens");
        assert_eq!(e.len(), 2, "every problem reported at once: {e:?}");
        let ok = parse(&[
            "--listen",
            "0.0.0.0:7070",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tokens-file",
            "t",
        ]);
        assert!(ok.validate().is_ok());
        assert!(
            Config::try_parse_from(["finwait-collector", "--tls-cert", "c"]).is_err(),
            "cert needs key"
        );
    }

    #[test]
    fn shedding_and_connection_age_flags_are_checked_and_default_to_the_pool() {
        let e = parse(&[
            "--insecure-loopback",
            "--ingest-retry-min-ms",
            "5000",
            "--ingest-retry-max-ms",
            "1000",
            "--max-connection-age-seconds",
            "10",
        ])
        .validate()
        .expect_err("min above max, age below keepalive");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("--ingest-retry-min-ms"), "{e:?}");
        assert!(e[1].starts_with("--max-connection-age-seconds"), "{e:?}");
        let c = parse(&["--insecure-loopback", "--db-connections", "10"]);
        assert_eq!(c.shed().writes, 8, "--db-connections minus 2");
        assert_eq!(
            parse(&["--insecure-loopback", "--db-connections", "1"])
                .shed()
                .writes,
            1
        );
        assert!(
            parse(&["--insecure-loopback", "--max-connection-age-seconds", "0"])
                .validate()
                .is_ok(),
            "0: no age"
        );
    }

    #[test]
    fn a_zero_limit_or_timeout_is_refused_naming_its_flag() {
        let e = parse(&[
            "--insecure-loopback",
            "--idle-seconds",
            "0",
            "--max-connections",
            "0",
        ])
        .validate()
        .expect_err("zero limits");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("--max-connections"), "{e:?}");
        assert!(e[1].starts_with("--idle-seconds"), "{e:?}");
    }
}

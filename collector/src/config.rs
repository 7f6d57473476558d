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
    /// Largest accepted gRPC message, in bytes.
    #[arg(long, env = "FINWAIT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
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
    /// Database connections.
    #[arg(long, env = "FINWAIT_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, env = "FINWAIT_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
}

impl Config {
    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
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
        if self.retention_days == 0 {
            problems.push("--retention-days must be at least 1".into());
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
}

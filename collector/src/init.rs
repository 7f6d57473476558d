//! `finwait-collector init DIR`: a real setup in one command. Writes a private CA, a
//! server certificate it signs for the names and addresses agents will dial, an agent
//! (ingest) token and a reader (read) token in the tokens-file format of
//! [`crate::auth`], then prints the collector, agent and CLI commands that use them.
//!
//! The layout matches the systemd unit's paths when DIR is `/etc/finwait`:
//!
//! ```text
//! DIR/ca.pem            the CA certificate: give it to agents and CLI users  (0644)
//! DIR/ca.key            the CA's private key: keep it off the collector      (0600)
//! DIR/tls/server.pem    the collector's certificate chain                    (0644)
//! DIR/tls/server.key    the collector's private key                          (0600)
//! DIR/tokens            the collector's tokens file (`ingest:` and `read:`)  (0600)
//! DIR/agent.token       the agents' token, alone                             (0600)
//! DIR/read.token        the readers' token, alone                            (0600)
//! ```
//!
//! An existing setup is never overwritten without `--force`: every file is checked
//! before anything is written. Each file is written to a temporary name with its final
//! mode and renamed into place, so no secret is ever readable by others, even briefly.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::Datelike;

/// `finwait-collector init` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Directory to write the setup into (created if missing, mode 0700 when new);
    /// `/etc/finwait` matches the systemd unit.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name agents and readers use to reach the collector; repeat for several.
    /// The server certificate is valid for every --name and --ip.
    #[arg(long = "name", value_name = "HOST")]
    pub names: Vec<String>,
    /// An IP address agents and readers use to reach the collector; repeat for several.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// The port the printed commands use (the collector's --listen and the URLs).
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    /// Replace an existing setup in DIR (a new CA: every agent needs the new ca.pem).
    #[arg(long)]
    pub force: bool,
    /// Years the server certificate is valid (the CA gets ten more).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub years: u16,
}

/// Why `init` wrote nothing (or stopped part-way, naming the file).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Neither --name nor --ip.
    #[error("give at least one --name HOST or --ip ADDR: the names agents dial")]
    NoName,
    /// A --name that is not a DNS name.
    #[error(
        "--name {0:?} is not a DNS name (letters, digits, `-`, `.`; `*.` first for a wildcard)"
    )]
    BadName(String),
    /// Files of a setup already there.
    #[error("{} already holds a setup ({}); give --force to replace it (agents then need the new ca.pem and tokens)", .dir.display(), .found.join(", "))]
    Exists {
        /// The directory.
        dir: PathBuf,
        /// The files found, relative to it.
        found: Vec<String>,
    },
    /// Generating a key or certificate failed.
    #[error("generating the {what}: {source}")]
    Pki {
        /// Which one.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// Writing a file failed.
    #[error("writing {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
}

/// What `init` wrote, with absolute paths, for printing and for tests.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The directory.
    pub dir: PathBuf,
    /// `ca.pem`.
    pub ca_cert: PathBuf,
    /// `tls/server.pem`.
    pub server_cert: PathBuf,
    /// `tls/server.key`.
    pub server_key: PathBuf,
    /// `tokens`.
    pub tokens: PathBuf,
    /// `agent.token`.
    pub agent_token: PathBuf,
    /// `read.token`.
    pub read_token: PathBuf,
    /// The URL agents and readers dial: `https://NAME:PORT`.
    pub url: String,
    /// The collector's --listen address.
    pub listen: String,
}

/// The files of a setup, relative to DIR, with their modes.
const FILES: [(&str, u32); 7] = [
    ("ca.pem", 0o644),
    ("ca.key", 0o600),
    ("tls/server.pem", 0o644),
    ("tls/server.key", 0o600),
    ("tokens", 0o600),
    ("agent.token", 0o600),
    ("read.token", 0o600),
];

/// Writes a setup into `args.dir` (see the module docs).
pub fn run(args: &InitArgs) -> Result<Setup, InitError> {
    if args.names.is_empty() && args.ips.is_empty() {
        return Err(InitError::NoName);
    }
    if let Some(bad) = args.names.iter().find(|n| !is_dns_name(n)) {
        return Err(InitError::BadName(bad.clone()));
    }
    let dir = &args.dir;
    if !args.force {
        let found: Vec<String> = FILES
            .iter()
            .filter(|(f, _)| dir.join(f).symlink_metadata().is_ok())
            .map(|(f, _)| (*f).to_owned())
            .collect();
        if !found.is_empty() {
            return Err(InitError::Exists {
                dir: dir.clone(),
                found,
            });
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    create_private_dir(dir).map_err(io(dir))?;
    create_private_dir(&dir.join("tls")).map_err(io(&dir.join("tls")))?;
    let dir = dir.canonicalize().map_err(io(dir))?;

    let pki = pki(args)?;
    let agent = token()?;
    let reader = token()?;
    let tokens = format!(
        "# finwait collector tokens (written by `finwait-collector init`).\n\
         # ROLE:TOKEN, one per line; reload with SIGHUP (systemctl reload finwait-collector).\n\
         # agents (agent.token): may stream, may not read\n\
         ingest:{agent}\n\
         # readers (read.token): the finwait CLI, the dashboard, gRPC clients\n\
         read:{reader}\n"
    );
    let contents: [(&str, String); 7] = [
        ("ca.pem", pki.ca_cert),
        ("ca.key", pki.ca_key),
        ("tls/server.pem", pki.server_cert),
        ("tls/server.key", pki.server_key),
        ("tokens", tokens),
        ("agent.token", format!("{agent}\n")),
        ("read.token", format!("{reader}\n")),
    ];
    for ((name, text), (_, mode)) in contents.iter().zip(FILES) {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), mode).map_err(io(&path))?;
    }
    let host = match (args.names.first(), args.ips.first()) {
        (Some(n), _) => n.trim_start_matches("*.").to_owned(),
        (None, Some(IpAddr::V6(ip))) => format!("[{ip}]"),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => unreachable!("checked above: a name or an address"),
    };
    let listen = match args.ips.first() {
        Some(IpAddr::V6(_)) => format!("[::]:{}", args.port),
        _ => format!("0.0.0.0:{}", args.port),
    };
    Ok(Setup {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("tls/server.pem"),
        server_key: dir.join("tls/server.key"),
        tokens: dir.join("tokens"),
        agent_token: dir.join("agent.token"),
        read_token: dir.join("read.token"),
        url: format!("https://{host}:{}", args.port),
        listen,
        dir,
    })
}

impl Setup {
    /// What to run with the files, one command per line, for a person to copy: the
    /// collector, an agent, the CLI.
    pub fn instructions(&self) -> String {
        let d = |p: &Path| p.display().to_string();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "wrote a CA, a server certificate and tokens to {}",
            d(&self.dir)
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "collector (this host; give its files to the user it runs as, e.g."
        );
        let _ = writeln!(
            s,
            "chown finwait: {} {} {} {};",
            d(&self.dir),
            d(&self.tokens),
            d(self.server_key.parent().unwrap_or(&self.dir)),
            d(&self.server_key)
        );
        let _ = writeln!(
            s,
            "reload tokens and certificate with SIGHUP: systemctl reload finwait-collector):"
        );
        let _ = writeln!(
            s,
            "  finwait-collector --listen {} --tls-cert {} --tls-key {} --tokens-file {}",
            self.listen,
            d(&self.server_cert),
            d(&self.server_key),
            d(&self.tokens)
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "agent (every host; copy ca.pem and agent.token there, mode 0600 for the token):"
        );
        let _ = writeln!(
            s,
            "  finwait-agent run --collector {} --ca-file {} --token-file {}",
            self.url,
            d(&self.ca_cert),
            d(&self.agent_token)
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "CLI (anywhere; copy ca.pem and read.token):");
        let _ = writeln!(
            s,
            "  finwait --server {} --ca {} --token-file {} leaks",
            self.url,
            d(&self.ca_cert),
            d(&self.read_token)
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "ca.key signs new server certificates; keep it somewhere safer than the collector."
        );
        s
    }
}

/// PEM texts of a fresh CA and a server certificate it signed.
struct Pki {
    ca_cert: String,
    ca_key: String,
    server_cert: String,
    server_key: String,
}

fn pki(args: &InitArgs) -> Result<Pki, InitError> {
    let err = |what| move |source| InitError::Pki { what, source };
    let today = chrono::Utc::now().date_naive();
    let (y, m, d) = (today.year(), today.month() as u8, today.day().min(28) as u8);
    // A day back: a host whose clock is a little behind still accepts it.
    let yesterday = today.pred_opt().unwrap_or(today);
    let start = rcgen::date_time_ymd(
        yesterday.year(),
        yesterday.month() as u8,
        yesterday.day() as u8,
    );
    let years = i32::from(args.years);

    let ca_key = rcgen::KeyPair::generate().map_err(err("CA key"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    // The CA's name differs from the server's: a leaf whose issuer equals its own
    // subject looks self-signed to OpenSSL.
    let label = args
        .names
        .first()
        .cloned()
        .or_else(|| args.ips.first().map(ToString::to_string))
        .unwrap_or_default();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("finwait CA ({label})"));
    ca.not_before = start;
    ca.not_after = rcgen::date_time_ymd(y + years + 10, m, d);
    let issuer = rcgen::CertifiedIssuer::self_signed(ca, ca_key).map_err(err("CA certificate"))?;

    let server_key = rcgen::KeyPair::generate().map_err(err("server key"))?;
    let mut sans: Vec<String> = args.names.clone();
    sans.extend(args.ips.iter().map(ToString::to_string));
    let mut server = rcgen::CertificateParams::new(sans).map_err(err("server certificate"))?;
    server.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("finwait collector {label}"),
    );
    server.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = start;
    server.not_after = rcgen::date_time_ymd(y + years, m, d);
    let cert = server
        .signed_by(&server_key, &issuer)
        .map_err(err("server certificate"))?;
    Ok(Pki {
        ca_cert: issuer.pem(),
        ca_key: ca_key_pem,
        server_cert: cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

/// 32 random bytes as 64 hex digits (printable, no `:`, so any role prefix parses).
fn token() -> Result<String, InitError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| InitError::Random)?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// A DNS name a certificate may carry (RFC 1123 labels, an optional `*.` first).
fn is_dns_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.parse::<IpAddr>().is_err()
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Creates `dir` with mode 0700 if it does not exist; an existing one is left as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` with `mode`: a temporary file created with that mode (never
/// wider, whatever the umask leaves), synced, then renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have narrowed a certificate's 0644; secrets stay 0600 either way.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, names: &[&str], ips: &[&str]) -> InitArgs {
        InitArgs {
            dir: dir.to_path_buf(),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            ips: ips.iter().map(|s| s.parse().expect("ip")).collect(),
            port: 7443,
            force: false,
            years: 2,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("finwait-init-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_setup_has_every_file_with_its_mode_and_tokens_the_collector_accepts() {
        let d = scratch("files");
        let setup = run(&args(&d, &["collector.example"], &["10.0.0.5"])).expect("init");
        for (name, mode) in FILES {
            let meta = std::fs::metadata(d.join(name)).expect(name);
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let dir_mode = std::fs::metadata(&d).expect("dir").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let tokens = std::fs::read_to_string(&setup.tokens).expect("tokens");
        let set = crate::auth::Tokens::parse(&tokens).expect("the collector reads it");
        let agent = std::fs::read_to_string(&setup.agent_token).expect("agent token");
        let reader = std::fs::read_to_string(&setup.read_token).expect("read token");
        let check = |t: &str, role| {
            crate::auth::check(Some(&set), Some(&format!("Bearer {}", t.trim())), role)
        };
        assert_eq!(check(&agent, crate::auth::Role::Ingest), Ok(()));
        assert!(
            check(&agent, crate::auth::Role::Read).is_err(),
            "agents cannot read"
        );
        assert_eq!(check(&reader, crate::auth::Role::Read), Ok(()));
        assert!(check(&reader, crate::auth::Role::Ingest).is_err());
        assert_ne!(agent, reader);
        assert_eq!(agent.trim().len(), 64);
        assert_eq!(setup.url, "https://collector.example:7443");
        let text = setup.instructions();
        assert!(
            text.contains("finwait-collector --listen 0.0.0.0:7443"),
            "{text}"
        );
        assert!(text.contains(&format!("--token-file {}", setup.agent_token.display())));
        // The server certificate is one the TLS layer loads, for its key.
        let cert = std::fs::read(&setup.server_cert).expect("cert");
        let key = std::fs::read(&setup.server_key).expect("key");
        crate::tls::certified_key(&cert, &key).expect("a matching pair");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_existing_setup_is_kept_unless_forced() {
        let d = scratch("force");
        let first = run(&args(&d, &["a.example"], &[])).expect("init");
        let before = std::fs::read(&first.tokens).expect("tokens");
        let e = run(&args(&d, &["a.example"], &[])).expect_err("exists");
        let msg = e.to_string();
        assert!(msg.contains("--force") && msg.contains("tokens"), "{msg}");
        assert_eq!(
            std::fs::read(&first.tokens).expect("tokens"),
            before,
            "untouched"
        );
        let mut forced = args(&d, &["a.example"], &[]);
        forced.force = true;
        run(&forced).expect("forced");
        assert_ne!(
            std::fs::read(&first.tokens).expect("tokens"),
            before,
            "new tokens"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn init_is_a_subcommand_and_serving_flags_still_parse_without_one() {
        use clap::Parser;
        let c = crate::config::Config::try_parse_from([
            "finwait-collector",
            "init",
            "/etc/finwait",
            "--name",
            "a.example",
            "--ip",
            "10.0.0.1",
            "--ip",
            "fd00::1",
        ])
        .expect("init parses");
        let Some(crate::config::Command::Init(a)) = c.command else {
            panic!("no init command: {c:?}");
        };
        assert_eq!((a.names.len(), a.ips.len(), a.port), (1, 2, 7070));
        let serve = crate::config::Config::try_parse_from([
            "finwait-collector",
            "--listen",
            "127.0.0.1:0",
            "--insecure-loopback",
        ])
        .expect("serving flags parse");
        assert!(serve.command.is_none());
        assert!(
            crate::config::Config::try_parse_from(["finwait-collector", "init", "d", "--ip", "x"])
                .is_err(),
            "a bad --ip is refused by the parser"
        );
    }

    #[test]
    fn names_are_required_and_checked() {
        let d = scratch("names");
        assert!(matches!(run(&args(&d, &[], &[])), Err(InitError::NoName)));
        let e = run(&args(&d, &["bad name"], &[])).expect_err("space");
        assert!(e.to_string().contains("--name \"bad name\""), "{e}");
        assert!(is_dns_name("*.finwait.example") && is_dns_name("localhost"));
        assert!(!is_dns_name("10.0.0.1") && !is_dns_name("-a.example") && !is_dns_name(""));
        let v6 = run(&args(&d, &[], &["fd00::5"])).expect("an address alone");
        assert_eq!(v6.url, "https://[fd00::5]:7443");
        assert_eq!(v6.listen, "[::]:7443");
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! Helpers shared by the agent's integration tests: a population of real sockets in a
//! private namespace, the agent's JSON output, and `ss -tanpe` output, both parsed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use finwait_testkit::NetNs;
use serde::Deserialize;

/// An owner in the agent's JSON.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct JsonOwner {
    pub pid: u32,
    pub fd: u32,
    pub comm: String,
    pub cmdline: String,
    #[serde(default)]
    pub cgroup: String,
    #[serde(default)]
    pub hostname: String,
}

/// A timer in the agent's JSON.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct JsonTimer {
    pub kind: String,
    pub expires_ms: u32,
    pub retransmits: u8,
}

/// One line of `finwait-agent snapshot --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonSocket {
    pub netns: u64,
    pub container: Option<String>,
    pub cookie: Option<u64>,
    pub family: String,
    pub state: String,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
    pub inode: u64,
    pub uid: u32,
    pub rx_queue: u32,
    pub tx_queue: u32,
    pub timer: Option<JsonTimer>,
    pub owners: Vec<JsonOwner>,
}

impl JsonSocket {
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(
            self.local_addr
                .parse()
                .expect("agent prints valid addresses"),
            self.local_port,
        )
    }
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(
            self.remote_addr
                .parse()
                .expect("agent prints valid addresses"),
            self.remote_port,
        )
    }
}

/// Runs `finwait-agent snapshot --json ARGS` inside `ns` (or here when `None`).
pub fn agent_json(ns: Option<&NetNs>, args: &[&str]) -> Result<Vec<JsonSocket>> {
    let bin = env!("CARGO_BIN_EXE_finwait-agent");
    let out = match ns {
        Some(ns) => ns
            .command(bin)
            .args(["snapshot", "--json"])
            .args(args)
            .output()?,
        None => std::process::Command::new(bin)
            .args(["snapshot", "--json"])
            .args(args)
            .output()?,
    };
    if !out.status.success() {
        bail!(
            "finwait-agent failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("agent line {l:?}")))
        .collect()
}

/// One socket line of `ss -tanpe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsSocket {
    pub state: String,
    pub rx_queue: u32,
    pub tx_queue: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
    pub cookie: u64,
    pub timer: Option<String>,
    /// (comm, pid, fd)
    pub users: BTreeSet<(String, u32, u32)>,
}

fn ss_addr(s: &str) -> Result<SocketAddr> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("address {s:?}"))?;
    let port: u16 = if port == "*" { 0 } else { port.parse()? };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "*" { "0.0.0.0" } else { host };
    Ok(SocketAddr::new(
        host.parse().with_context(|| format!("host {host:?}"))?,
        port,
    ))
}

fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|t| t.strip_prefix(key))
}

/// Parses `ss -tanpe -H -O` output.
pub fn parse_ss(text: &str) -> Result<Vec<SsSocket>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 5 {
            bail!("short ss line {line:?}");
        }
        let mut users = BTreeSet::new();
        if let Some(start) = line.find("users:(") {
            let rest = &line[start + 7..];
            for part in rest.split("(\"").skip(1) {
                let (comm, tail) = part.split_once("\",").context("users entry")?;
                let pid = tail
                    .split("pid=")
                    .nth(1)
                    .and_then(|x| x.split([',', ')']).next())
                    .context("pid")?;
                let fd = tail
                    .split("fd=")
                    .nth(1)
                    .and_then(|x| x.split([',', ')']).next())
                    .context("fd")?;
                users.insert((comm.to_owned(), pid.parse()?, fd.parse()?));
            }
        }
        out.push(SsSocket {
            state: t[0].to_owned(),
            rx_queue: t[1].parse()?,
            tx_queue: t[2].parse()?,
            local: ss_addr(t[3])?,
            remote: ss_addr(t[4])?,
            inode: after(line, "ino:").context("ino")?.parse()?,
            cookie: u64::from_str_radix(after(line, "sk:").context("sk")?, 16)?,
            timer: after(line, "timer:(").map(|x| x.split(',').next().unwrap_or("").to_owned()),
            users,
        });
    }
    Ok(out)
}

/// Runs `ss -tanpe` inside `ns` and parses it.
pub fn ss(ns: &NetNs) -> Result<Vec<SsSocket>> {
    parse_ss(&ns.output("ss", &["-tanpe", "-H", "-O"])?)
}

/// ss's state word for the agent's canonical state name.
pub fn ss_state(name: &str) -> &'static str {
    match name {
        "ESTABLISHED" => "ESTAB",
        "SYN_SENT" => "SYN-SENT",
        "SYN_RECV" => "SYN-RECV",
        "FIN_WAIT1" => "FIN-WAIT-1",
        "FIN_WAIT2" => "FIN-WAIT-2",
        "TIME_WAIT" => "TIME-WAIT",
        "CLOSE" => "UNCONN",
        "CLOSE_WAIT" => "CLOSE-WAIT",
        "LAST_ACK" => "LAST-ACK",
        "LISTEN" => "LISTEN",
        "CLOSING" => "CLOSING",
        _ => "?",
    }
}

/// ss's timer word for the agent's timer kind.
pub fn ss_timer(kind: &str) -> &'static str {
    match kind {
        "retransmit" => "on",
        "keepalive" => "keepalive",
        "time_wait" => "timewait",
        "probe" => "persist",
        _ => "?",
    }
}

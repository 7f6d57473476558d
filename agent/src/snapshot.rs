//! `finwait-agent snapshot`: filter one sample and print it as an aligned table (like
//! `ss -tanp`, plus timer and namespace) or as JSON Lines, one object per socket.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::sampler::Sample;
use crate::socket::{Socket, TcpState, Timer};

/// Which sockets to print.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Keep only these states (empty: all).
    pub states: Vec<TcpState>,
    /// Keep sockets whose local or remote port is this.
    pub port: Option<u16>,
    /// Keep sockets held by this process.
    pub pid: Option<u32>,
}

impl Filter {
    /// True when `s` passes every given condition.
    pub fn matches(&self, s: &Socket) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state))
            && self
                .port
                .is_none_or(|p| s.local.port() == p || s.remote.port() == p)
            && self
                .pid
                .is_none_or(|p| s.owners.iter().any(|o| o.pid() == p))
    }
}

/// Parses a comma-separated list of `ss` state words (`close-wait,fin-wait-2`).
pub fn parse_states(list: &str) -> Result<Vec<TcpState>, String> {
    list.split(',')
        .filter(|w| !w.trim().is_empty())
        .map(|w| {
            TcpState::parse_word(w).ok_or_else(|| {
                format!(
                    "unknown TCP state {w:?}; use ss's words: established, syn-sent, syn-recv, \
                     fin-wait-1, fin-wait-2, time-wait, closed, close-wait, last-ack, listen, closing"
                )
            })
        })
        .collect()
}

/// One socket as JSON. Field names are part of the agent's interface (README).
#[derive(Serialize)]
struct JsonSocket<'a> {
    netns: u64,
    container: Option<&'a str>,
    cookie: Option<u64>,
    family: &'static str,
    state: &'static str,
    local_addr: String,
    local_port: u16,
    remote_addr: String,
    remote_port: u16,
    inode: u64,
    uid: u32,
    rx_queue: u32,
    tx_queue: u32,
    timer: Option<&'a Timer>,
    owners: Vec<JsonOwner<'a>>,
}

#[derive(Serialize)]
struct JsonOwner<'a> {
    pid: u32,
    fd: u32,
    comm: &'a str,
    cmdline: &'a str,
}

fn containers(sample: &Sample) -> HashMap<u64, &str> {
    sample
        .namespaces
        .iter()
        .filter(|n| !n.is_host && !n.container_hint.is_empty())
        .map(|n| (n.inode, n.container_hint.as_str()))
        .collect()
}

/// Writes the matching sockets as JSON Lines.
pub fn write_json(out: &mut impl Write, sample: &Sample, filter: &Filter) -> io::Result<()> {
    let containers = containers(sample);
    for s in sample.sockets.iter().filter(|s| filter.matches(s)) {
        let j = JsonSocket {
            netns: s.netns,
            container: containers.get(&s.netns).copied(),
            cookie: s.cookie,
            family: if s.is_ipv6() { "ipv6" } else { "ipv4" },
            state: s.state.name(),
            local_addr: s.local.ip().to_string(),
            local_port: s.local.port(),
            remote_addr: s.remote.ip().to_string(),
            remote_port: s.remote.port(),
            inode: s.inode,
            uid: s.uid,
            rx_queue: s.rx_queue,
            tx_queue: s.tx_queue,
            timer: s.timer.as_ref(),
            owners: s
                .owners
                .iter()
                .map(|o| JsonOwner {
                    pid: o.pid(),
                    fd: o.fd,
                    comm: &o.process.comm,
                    cmdline: &o.process.cmdline,
                })
                .collect(),
        };
        serde_json::to_writer(&mut *out, &j)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

const HEADERS: [&str; 8] = [
    "Recv-Q",
    "Send-Q",
    "Local Address:Port",
    "Peer Address:Port",
    "State",
    "Timer",
    "Owners",
    "Netns",
];

/// Formats the variable-width cells of one row into `cells` (reused buffers).
fn cells(s: &Socket, cells: &mut [String; 8]) {
    for c in cells.iter_mut() {
        c.clear();
    }
    let _ = write!(cells[0], "{}", s.rx_queue);
    let _ = write!(cells[1], "{}", s.tx_queue);
    let _ = write!(cells[2], "{}", s.local);
    if s.remote.port() == 0 && s.remote.ip().is_unspecified() {
        let _ = match s.remote {
            std::net::SocketAddr::V4(_) => write!(cells[3], "0.0.0.0:*"),
            std::net::SocketAddr::V6(_) => write!(cells[3], "[::]:*"),
        };
    } else {
        let _ = write!(cells[3], "{}", s.remote);
    }
    cells[4].push_str(s.state.name());
    match s.timer {
        Some(t) => {
            let _ = write!(
                cells[5],
                "{},{:.1}s,{}",
                t.kind.ss_word(),
                f64::from(t.expires_ms) / 1000.0,
                t.retransmits
            );
        }
        None => cells[5].push('-'),
    }
    if s.owners.is_empty() {
        cells[6].push('-');
    }
    for (i, o) in s.owners.iter().enumerate() {
        if i > 0 {
            cells[6].push(',');
        }
        let _ = write!(cells[6], "{}(pid={},fd={})", o.process.comm, o.pid(), o.fd);
    }
    let _ = write!(cells[7], "{}", s.netns);
}

/// Writes the matching sockets as an aligned table with a header line.
pub fn write_table(out: &mut impl Write, sample: &Sample, filter: &Filter) -> io::Result<()> {
    let mut buf: [String; 8] = Default::default();
    let mut width: [usize; 8] = HEADERS.map(str::len);
    let rows: Vec<&Socket> = sample
        .sockets
        .iter()
        .filter(|s| filter.matches(s))
        .collect();
    for s in &rows {
        cells(s, &mut buf);
        for (w, c) in width.iter_mut().zip(&buf) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = String::with_capacity(256);
    let emit = |line: &mut String, cols: &[&str; 8], out: &mut dyn Write| -> io::Result<()> {
        line.clear();
        for (i, (c, w)) in cols.iter().zip(width).enumerate() {
            if i == cols.len() - 1 {
                line.push_str(c);
            } else if i < 2 {
                let _ = write!(line, "{c:>w$} ");
            } else {
                let _ = write!(line, "{c:<w$} ");
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes())
    };
    emit(&mut line, &HEADERS, out)?;
    for s in rows {
        cells(s, &mut buf);
        let cols: [&str; 8] = std::array::from_fn(|i| buf[i].as_str());
        emit(&mut line, &cols, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_state_words_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_states("close-wait,fin-wait-2").expect("valid"),
            vec![TcpState::CloseWait, TcpState::FinWait2]
        );
        assert_eq!(
            parse_states("ESTAB").expect("valid"),
            vec![TcpState::Established]
        );
        let e = parse_states("close-wiat").expect_err("invalid");
        assert!(e.contains("close-wiat"), "{e}");
    }
}

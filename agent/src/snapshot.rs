//! `finwait-agent snapshot`: filter one sample and print it as an aligned table (like
//! `ss -tanp`, plus timer and namespace) or as JSON Lines, one object per socket.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;

use serde::Serialize;

use crate::decimal;
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
            TcpState::parse(w).ok_or_else(|| {
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
    cgroup: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    hostname: &'a str,
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
                    cgroup: &o.process.cgroup,
                    hostname: &o.process.hostname,
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

/// Appends `addr:port` as `ss -n` prints it (`[v6]:port`, `*` for port 0 on request).
fn push_addr(out: &mut String, addr: SocketAddr, star_port: bool) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, o) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                decimal::push(out, u64::from(*o));
            }
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "[{}]", a.ip());
        }
    }
    out.push(':');
    if star_port && addr.port() == 0 {
        out.push('*');
    } else {
        decimal::push(out, u64::from(addr.port()));
    }
}

/// Formats the cells of one row into `cells` (reused buffers).
fn cells(s: &Socket, cells: &mut [String; 8]) {
    for c in cells.iter_mut() {
        c.clear();
    }
    decimal::push(&mut cells[0], u64::from(s.rx_queue));
    decimal::push(&mut cells[1], u64::from(s.tx_queue));
    push_addr(&mut cells[2], s.local, false);
    push_addr(&mut cells[3], s.remote, s.remote.ip().is_unspecified());
    cells[4].push_str(s.state.name());
    match s.timer {
        Some(t) => {
            let c = &mut cells[5];
            c.push_str(t.kind.ss_word());
            c.push(',');
            decimal::push(c, u64::from(t.expires_ms / 1000));
            c.push('.');
            decimal::push(c, u64::from(t.expires_ms % 1000 / 100));
            c.push_str("s,");
            decimal::push(c, u64::from(t.retransmits));
        }
        None => cells[5].push('-'),
    }
    if s.owners.is_empty() {
        cells[6].push('-');
    }
    for (i, o) in s.owners.iter().enumerate() {
        let c = &mut cells[6];
        if i > 0 {
            c.push(',');
        }
        c.push_str(&o.process.comm);
        c.push_str("(pid=");
        decimal::push(c, u64::from(o.pid()));
        c.push_str(",fd=");
        decimal::push(c, u64::from(o.fd));
        c.push(')');
    }
    decimal::push(&mut cells[7], s.netns);
}

/// Display width of a cell (bytes for ASCII, characters otherwise).
fn width_of(c: &str) -> usize {
    if c.is_ascii() {
        c.len()
    } else {
        c.chars().count()
    }
}

/// Tables with at least this many sockets are formatted on several threads.
const PARALLEL_MIN_ROWS: usize = 16_384;

/// The cells of a run of rows, each formatted once into one arena, with the widths of
/// the columns taken on the way.
struct Formatted {
    /// Every cell's text, one after the other.
    arena: String,
    /// End offset of each cell in `arena`, eight per row.
    ends: Vec<u32>,
    /// The widest cell of each column.
    width: [usize; 8],
}

/// Formats the matching sockets of `rows`.
fn format_rows(rows: &[Socket], filter: &Filter) -> io::Result<Formatted> {
    let mut buf: [String; 8] = Default::default();
    let mut f = Formatted {
        arena: String::with_capacity(rows.len() * 80),
        ends: Vec::with_capacity(rows.len() * 8),
        width: [0; 8],
    };
    for s in rows.iter().filter(|s| filter.matches(s)) {
        cells(s, &mut buf);
        for (w, c) in f.width.iter_mut().zip(&buf) {
            *w = (*w).max(width_of(c));
            f.arena.push_str(c);
            let end = u32::try_from(f.arena.len())
                .map_err(|_| io::Error::other("table larger than 4 GiB"))?;
            f.ends.push(end);
        }
    }
    Ok(f)
}

/// Writes the matching sockets as an aligned table with a header line.
///
/// Every cell is formatted once, into arenas, with the column widths taken on the way;
/// the second pass only pads and copies (formatting 100,000 rows twice was a sizeable
/// part of a cold snapshot). A large table is formatted in parts on several threads.
pub fn write_table(out: &mut impl Write, sample: &Sample, filter: &Filter) -> io::Result<()> {
    let sockets = sample.sockets.as_slice();
    let threads = if sockets.len() >= PARALLEL_MIN_ROWS {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    } else {
        1
    };
    let parts: Vec<Formatted> = if threads > 1 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = sockets
                .chunks(sockets.len().div_ceil(threads))
                .map(|part| scope.spawn(move || format_rows(part, filter)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<io::Result<_>>()
        })?
    } else {
        vec![format_rows(sockets, filter)?]
    };
    let mut width: [usize; 8] = HEADERS.map(str::len);
    for part in &parts {
        for (w, pw) in width.iter_mut().zip(part.width) {
            *w = (*w).max(pw);
        }
    }
    // Each line is put together in one buffer and written at once.
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut emit = |cols: &mut dyn Iterator<Item = &str>, out: &mut dyn Write| -> io::Result<()> {
        line.clear();
        for (i, (c, w)) in cols.zip(width).enumerate() {
            let fill = w.saturating_sub(width_of(c));
            if i < 2 {
                line.resize(line.len() + fill, b' ');
                line.extend_from_slice(c.as_bytes());
                line.push(b' ');
            } else if i == HEADERS.len() - 1 {
                line.extend_from_slice(c.as_bytes());
            } else {
                line.extend_from_slice(c.as_bytes());
                line.resize(line.len() + fill + 1, b' ');
            }
        }
        line.push(b'\n');
        out.write_all(&line)
    };
    emit(&mut HEADERS.iter().copied(), out)?;
    for part in &parts {
        let mut start = 0usize;
        for row in part.ends.chunks_exact(HEADERS.len()) {
            let mut cols = row.iter().map(|&end| {
                let end = end as usize;
                let c = &part.arena[start..end];
                start = end;
                c
            });
            emit(&mut cols, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::socket::{Owner, Process, TimerKind};

    /// The table writer as it was before it formatted each cell once: two formatting
    /// passes, a line buffer. The reference the one-pass writer must match byte for byte.
    fn write_table_two_pass(out: &mut Vec<u8>, sample: &Sample, filter: &Filter) {
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
                *w = (*w).max(width_of(c));
            }
        }
        let emit = |cols: &[&str; 8], out: &mut Vec<u8>| {
            let mut line = String::new();
            for (i, (c, w)) in cols.iter().zip(width).enumerate() {
                let pad = w.saturating_sub(width_of(c));
                if i < 2 {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                    line.push(' ');
                } else if i == cols.len() - 1 {
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad + 1));
                }
            }
            line.push('\n');
            out.extend_from_slice(line.as_bytes());
        };
        emit(&HEADERS, out);
        for s in rows {
            cells(s, &mut buf);
            let cols: [&str; 8] = std::array::from_fn(|i| buf[i].as_str());
            emit(&cols, out);
        }
    }

    fn sample_of_every_shape() -> Sample {
        let proc_of = |pid: u32, comm: &str| {
            Arc::new(Process {
                pid,
                start_ticks: 1,
                comm: comm.to_owned(),
                cmdline: String::new(),
                cgroup: String::new(),
                hostname: String::new(),
            })
        };
        let (nginx, odd) = (proc_of(42, "nginx"), proc_of(7, "dämon"));
        let mut sockets = Vec::new();
        for i in 0..40u32 {
            let v6 = i % 3 == 0;
            let (local, remote): (SocketAddr, SocketAddr) = if v6 {
                (
                    format!("[2001:db8::{i:x}]:{}", 80 + i).parse().expect("v6"),
                    format!("[::ffff:10.0.0.{i}]:{}", 40_000 + i)
                        .parse()
                        .expect("v6"),
                )
            } else {
                (
                    format!("10.{i}.0.1:{}", i * 997 % 65_536)
                        .parse()
                        .expect("v4"),
                    if i % 5 == 0 {
                        "0.0.0.0:0".parse().expect("v4")
                    } else {
                        format!("192.168.{i}.200:{}", 50_000 + i)
                            .parse()
                            .expect("v4")
                    },
                )
            };
            let owners: Vec<Owner> = match i % 4 {
                0 => vec![],
                1 => vec![Owner {
                    process: Arc::clone(&nginx),
                    fd: i,
                }],
                _ => vec![
                    Owner {
                        process: Arc::clone(&odd),
                        fd: 3,
                    },
                    Owner {
                        process: Arc::clone(&nginx),
                        fd: 1000 + i,
                    },
                ],
            };
            sockets.push(Socket {
                netns: 4_026_531_840 + u64::from(i % 2),
                cookie: Some(u64::from(i)),
                state: TcpState::ALL[i as usize % TcpState::ALL.len()],
                local,
                remote,
                inode: u64::from(i) * 1_000,
                uid: 0,
                rx_queue: i * 12_345,
                tx_queue: i,
                timer: (i % 3 == 1).then_some(Timer {
                    kind: TimerKind::Retransmit,
                    expires_ms: i * 1_234,
                    retransmits: (i % 7) as u8,
                }),
                owners: owners.into(),
            });
        }
        Sample {
            taken_at: SystemTime::UNIX_EPOCH,
            sockets,
            namespaces: Vec::new(),
            stats: crate::sampler::CycleStats::default(),
        }
    }

    #[test]
    fn one_pass_table_is_byte_for_byte_the_two_pass_one() {
        let sample = sample_of_every_shape();
        for filter in [
            Filter::default(),
            Filter {
                pid: Some(7),
                ..Filter::default()
            },
            Filter {
                port: Some(1),
                ..Filter::default()
            },
        ] {
            let mut want = Vec::new();
            write_table_two_pass(&mut want, &sample, &filter);
            let mut got = Vec::new();
            write_table(&mut got, &sample, &filter).expect("write to memory");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn a_table_formatted_in_parts_is_byte_for_byte_the_two_pass_one() {
        let mut sample = sample_of_every_shape();
        let shapes = sample.sockets.clone();
        let rows = 2 * PARALLEL_MIN_ROWS + 7;
        sample.sockets = shapes.iter().cycle().take(rows).cloned().collect();
        // The widest cells of some columns only in the last part: the widths must
        // be taken over every part.
        let last = sample.sockets.last_mut().expect("rows");
        last.rx_queue = u32::MAX;
        last.netns = u64::MAX;
        last.owners = vec![Owner {
            process: Arc::new(Process {
                pid: u32::MAX,
                start_ticks: 1,
                comm: "a-much-longer-command-name".to_owned(),
                cmdline: String::new(),
                cgroup: String::new(),
                hostname: String::new(),
            }),
            fd: u32::MAX,
        }]
        .into();
        for filter in [
            Filter::default(),
            Filter {
                pid: Some(42),
                ..Filter::default()
            },
        ] {
            let mut want = Vec::new();
            write_table_two_pass(&mut want, &sample, &filter);
            let mut got = Vec::new();
            write_table(&mut got, &sample, &filter).expect("write to memory");
            assert!(got == want, "{filter:?}: the tables differ");
        }
    }

    #[test]
    fn addresses_and_numbers_print_like_ss() {
        let mut s = String::new();
        push_addr(&mut s, "10.1.200.3:8080".parse().expect("addr"), false);
        s.push(' ');
        push_addr(&mut s, "[::1]:0".parse().expect("addr"), true);
        s.push(' ');
        decimal::push(&mut s, 0);
        s.push(' ');
        decimal::push(&mut s, u64::MAX);
        assert_eq!(s, format!("10.1.200.3:8080 [::1]:* 0 {}", u64::MAX));
    }

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

    #[test]
    fn every_spelling_of_the_vocabulary_is_a_state_filter() {
        for (st, words) in finwait_vocab::state::SPELLINGS {
            for w in words.iter().chain([&st.name(), &st.ss_column()]) {
                assert_eq!(parse_states(w), Ok(vec![st]), "--state {w}");
            }
        }
    }
}

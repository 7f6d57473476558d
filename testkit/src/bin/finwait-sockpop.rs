//! `finwait-sockpop`: makes a population of real TCP sockets in real states, in the
//! network namespace it runs in, prints a JSON manifest line, and holds everything
//! until its standard input closes (or `--max-seconds` pass).
//!
//! `states [--no-last-ack] ADDR...`: on each loopback address, one socket in every
//! state the agent must get right: LISTEN, ESTABLISHED, CLOSE_WAIT, FIN_WAIT2 orphaned
//! (after close) and half-closed (after shutdown), TIME_WAIT, SYN_SENT, LAST_ACK
//! (brings the namespace's `lo` down at the end so the last FIN is never acknowledged;
//! `--no-last-ack` skips it and keeps loopback usable), and an established socket
//! shared with a child process.
//!
//! `serve ADDR:PORT [--leak]`: a server that accepts every connection; with `--leak`
//! it never closes them (CLOSE_WAIT once the client closes), otherwise it closes each
//! as soon as the client does.
//!
//! `connect ADDR:PORT --count N [--close]`: N client connections, closed at once with
//! `--close` (orphaned FIN_WAIT2 against a leaky server), else held open.
//!
//! `bulk --sockets N`: about N sockets spread over worker processes (the per-process
//! descriptor limit is 20,000 here): mostly ESTABLISHED pairs, 5 % CLOSE_WAIT with
//! their orphaned FIN_WAIT2 peers, 2 % TIME_WAIT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use serde::Serialize;

/// One socket the population made on purpose.
#[derive(Debug, Serialize)]
struct Made {
    what: &'static str,
    local: SocketAddr,
    remote: Option<SocketAddr>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut max_seconds = 600u64;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--max-seconds" {
            max_seconds = it.next().context("--max-seconds needs a value")?.parse()?;
        } else {
            rest.push(a);
        }
    }
    match rest.first().map(String::as_str) {
        Some("states") => {
            // --no-last-ack keeps lo up (LAST_ACK needs it down), for tests that also
            // talk over loopback in the same namespace.
            let last_ack = !rest.iter().any(|a| a == "--no-last-ack");
            let addrs: Vec<String> = rest[1..]
                .iter()
                .filter(|a| *a != "--no-last-ack")
                .cloned()
                .collect();
            states(&addrs, max_seconds, last_ack)
        }
        Some("bulk") => bulk(&rest[1..], max_seconds),
        Some("hold") => hold(max_seconds),
        Some("serve") => serve(&rest[1..], max_seconds),
        Some("connect") => connect(&rest[1..], max_seconds),
        Some("worker") => worker(&rest[1..], max_seconds),
        _ => bail!(
            "usage: finwait-sockpop [--max-seconds S] states [--no-last-ack] ADDR... | bulk --sockets N \
             | serve ADDR:PORT [--leak] | connect ADDR:PORT --count N [--close]"
        ),
    }
}

/// Blocks until stdin reaches EOF or the deadline passes.
fn wait_for_stdin(max_seconds: u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(max_seconds));
}

fn pair(l: &TcpListener) -> Result<(TcpStream, TcpStream)> {
    let c = TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    Ok((c, s))
}

fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

fn states(addrs: &[String], max_seconds: u64, last_ack_wanted: bool) -> Result<()> {
    if addrs.is_empty() {
        bail!("states needs at least one address (127.0.0.1, ::1)");
    }
    let mut made = Vec::new();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut last_ack = Vec::new();
    let mut child = None;
    for a in addrs {
        let ip: IpAddr = a.parse().with_context(|| format!("bad address {a}"))?;
        let l = TcpListener::bind(SocketAddr::new(ip, 0))?;
        let la = l.local_addr()?;
        made.push(Made {
            what: "listen",
            local: la,
            remote: None,
        });

        let (c, s) = pair(&l)?;
        made.push(Made {
            what: "established",
            local: c.local_addr()?,
            remote: Some(la),
        });
        // Share the server side with a child process, as after fork().
        if child.is_none() {
            rustix::io::fcntl_setfd(s.as_fd(), FdFlags::empty())?;
            let exe = std::env::current_exe()?;
            child = Some(
                Command::new(exe)
                    .args(["--max-seconds", &max_seconds.to_string(), "hold"])
                    .stdin(Stdio::piped())
                    .spawn()?,
            );
            rustix::io::fcntl_setfd(s.as_fd(), FdFlags::CLOEXEC)?;
            made.push(Made {
                what: "shared",
                local: s.local_addr()?,
                remote: Some(s.peer_addr()?),
            });
        }
        keep.push(Box::new((c, s)));

        let (c, s) = pair(&l)?;
        made.push(Made {
            what: "fin_wait2_orphan",
            local: c.local_addr()?,
            remote: Some(la),
        });
        made.push(Made {
            what: "close_wait",
            local: la,
            remote: Some(c.local_addr()?),
        });
        drop(c);
        keep.push(Box::new(s));

        let (c, s) = pair(&l)?;
        c.shutdown(std::net::Shutdown::Write)?;
        made.push(Made {
            what: "fin_wait2_half_closed",
            local: c.local_addr()?,
            remote: Some(la),
        });
        keep.push(Box::new((c, s)));

        let (c, s) = pair(&l)?;
        made.push(Made {
            what: "time_wait",
            local: c.local_addr()?,
            remote: Some(la),
        });
        drop(c);
        settle();
        drop(s);

        if last_ack_wanted {
            let (c, s) = pair(&l)?;
            made.push(Made {
                what: "last_ack",
                local: la,
                remote: Some(c.local_addr()?),
            });
            drop(c);
            last_ack.push(s);
        }

        // A listener whose accept queue is full drops new SYNs: the client stays in
        // SYN_SENT, retransmitting.
        let full = TcpListener::bind(SocketAddr::new(ip, 0))?;
        let fa = full.local_addr()?;
        rustix::net::listen(&full, 0)?;
        for _ in 0..3 {
            let fam = if ip.is_ipv4() {
                AddressFamily::INET
            } else {
                AddressFamily::INET6
            };
            let fd = rustix::net::socket_with(
                fam,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            match rustix::net::connect(&fd, &fa) {
                Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
                Err(e) => return Err(e.into()),
            }
            keep.push(Box::new(fd));
        }
        made.push(Made {
            what: "syn_sent",
            local: fa,
            remote: None,
        });
        keep.push(Box::new(full));
        keep.push(Box::new(l));
    }
    settle();
    if last_ack_wanted {
        // LAST_ACK: with lo down our FIN is never acknowledged.
        let st = Command::new("ip")
            .args(["link", "set", "lo", "down"])
            .status()?;
        if !st.success() {
            bail!("ip link set lo down failed");
        }
        drop(last_ack);
        settle();
    }
    let manifest = serde_json::json!({ "pid": std::process::id(), "child_pid": child.as_ref().map(|c| c.id()), "made": made });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{manifest}")?;
    out.flush()?;
    drop(out);
    wait_for_stdin(max_seconds);
    if let Some(mut c) = child {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    drop(keep);
    Ok(())
}

fn hold(max_seconds: u64) -> Result<()> {
    wait_for_stdin(max_seconds);
    Ok(())
}

/// Widens the ephemeral port range in this namespace so that bulk populations fit.
fn widen_port_range() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
        .context("widening ip_local_port_range (needs root in a private namespace)")
}

fn bulk(args: &[String], max_seconds: u64) -> Result<()> {
    let mut sockets = 100_000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sockets" => sockets = it.next().context("--sockets needs a value")?.parse()?,
            other => bail!("unknown bulk flag {other}"),
        }
    }
    widen_port_range()?;
    // 2 sockets per pair; 8,000 pairs per worker keeps each under the fd limit.
    let pairs = sockets.div_ceil(2);
    let per = 8000usize;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut workers = Vec::new();
    let mut left = pairs;
    let mut i = 0u32;
    while left > 0 {
        let n = left.min(per);
        left -= n;
        i += 1;
        // Spread over loopback addresses so ports never run short.
        let addr = format!("127.0.{}.1", i);
        let mut w = Command::new(&exe)
            .args([
                "--max-seconds",
                &max_seconds.to_string(),
                "worker",
                &addr,
                &n.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = w.stdout.take().context("worker stdout")?;
        workers.push((w, BufReader::new(out)));
    }
    let mut total = 0usize;
    let mut pids = Vec::new();
    for (w, out) in &mut workers {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let n: usize = line
            .trim()
            .parse()
            .with_context(|| format!("worker said {line:?}"))?;
        total += n;
        pids.push(w.id());
    }
    let manifest = serde_json::json!({
        "pid": std::process::id(),
        "workers": pids,
        "sockets": total,
        "build_ms": t0.elapsed().as_millis() as u64,
    });
    println!("{manifest}");
    std::io::stdout().flush()?;
    wait_for_stdin(max_seconds);
    for (mut w, _) in workers {
        drop(w.stdin.take());
        let _ = w.wait();
    }
    Ok(())
}

fn worker(args: &[String], max_seconds: u64) -> Result<()> {
    let ip: IpAddr = args.first().context("worker ADDR N")?.parse()?;
    let n: usize = args.get(1).context("worker ADDR N")?.parse()?;
    let l = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let mut held = Vec::with_capacity(2 * n);
    let mut count = 1usize;
    for k in 0..n {
        let (c, s) = pair(&l)?;
        match k % 100 {
            // 5 %: the client closes, the server never does (CLOSE_WAIT + orphaned FIN_WAIT2).
            0..=4 => {
                drop(c);
                held.push(s);
                count += 2;
            }
            // 2 %: both close, client first (TIME_WAIT).
            5 | 6 => {
                drop(c);
                drop(s);
                count += 1;
            }
            _ => {
                held.push(c);
                held.push(s);
                count += 2;
            }
        }
    }
    let _ = held.iter().map(AsRawFd::as_raw_fd).count();
    println!("{count}");
    std::io::stdout().flush()?;
    wait_for_stdin(max_seconds);
    drop(held);
    Ok(())
}

fn serve(args: &[String], max_seconds: u64) -> Result<()> {
    let addr: SocketAddr = args.first().context("serve ADDR:PORT")?.parse()?;
    let leak = args.iter().any(|a| a == "--leak");
    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    println!(
        "{}",
        serde_json::json!({ "pid": std::process::id(), "addr": l.local_addr()?, "leak": leak })
    );
    std::io::stdout().flush()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming().flatten() {
            if leak {
                held.push(conn);
            } else {
                // Well behaved: close our end as soon as the client closes its own.
                std::thread::spawn(move || {
                    let mut c = conn;
                    let mut buf = [0u8; 1024];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        }
    });
    wait_for_stdin(max_seconds);
    Ok(())
}

fn connect(args: &[String], max_seconds: u64) -> Result<()> {
    let addr: SocketAddr = args.first().context("connect ADDR:PORT")?.parse()?;
    let mut count = 1usize;
    let mut it = args.iter().skip(1);
    let mut close = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = it.next().context("--count N")?.parse()?,
            "--close" => close = true,
            other => bail!("unknown connect flag {other}"),
        }
    }
    let mut conns = Vec::with_capacity(count);
    let mut locals = Vec::with_capacity(count);
    for _ in 0..count {
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect {addr}"))?;
        locals.push(c.local_addr()?);
        conns.push(c);
    }
    if close {
        conns.clear();
        settle();
    }
    println!(
        "{}",
        serde_json::json!({ "pid": std::process::id(), "locals": locals, "closed": close })
    );
    std::io::stdout().flush()?;
    wait_for_stdin(max_seconds);
    Ok(())
}

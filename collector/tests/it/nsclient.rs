//! Clients inside a test's network namespace, where the real collector binary listens:
//! `setns` moves only the calling thread, so each client runs on a thread that enters
//! the namespace first (sockets made there stay in it), with a runtime of its own when
//! it speaks gRPC. [`Watch`] samples what a load balancer and an on-call engineer would
//! see during a fault: gRPC health, `/api/v1/ready` and a query.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use finwait_testkit::NetNs;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Runs `f` on a new thread inside `ns`.
pub fn on_thread_in<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
            .expect("enter the namespace");
        f()
    })
}

/// `GET path` over HTTP/1.1 with `Connection: close`: status, head, body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// One sample of what clients see.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Since the watch started.
    pub at: Duration,
    /// gRPC health of the whole server; None when the check itself failed.
    pub health: Option<ServingStatus>,
    /// `/api/v1/ready`'s status; None when the request failed.
    pub ready: Option<u16>,
    /// `/api/v1/hosts`: status and body; None when the request failed or timed out.
    pub hosts: Option<(u16, String)>,
}

/// Samples health, readiness and a query every 250 ms until finished.
pub struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: JoinHandle<()>,
}

impl Watch {
    /// Starts watching the collector at `addr` inside `ns`.
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let thread = on_thread_in(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(2))
                    .connect_lazy();
                let mut health = HealthClient::new(channel);
                let start = Instant::now();
                // Bounded: a test finishes its watch well before this.
                while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300) {
                    let h = health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .ok()
                        .and_then(|r| ServingStatus::try_from(r.into_inner().status).ok());
                    let (ready, hosts) = tokio::task::spawn_blocking(move || {
                        // Short bounds: a query caught waiting for the database when it
                        // went away must not hold the watch through a short outage.
                        let ready = http_get(addr, "/api/v1/ready", Duration::from_secs(1))
                            .ok()
                            .map(|r| r.0);
                        let hosts = http_get(addr, "/api/v1/hosts", Duration::from_millis(700))
                            .ok()
                            .map(|r| (r.0, r.2));
                        (ready, hosts)
                    })
                    .await
                    .expect("probe task");
                    out.lock().expect("samples").push(Seen {
                        at: start.elapsed(),
                        health: h,
                        ready,
                        hosts,
                    });
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        Watch { stop, seen, thread }
    }

    /// True once health has been NOT_SERVING and, after that, SERVING with readiness
    /// and a query answered 200.
    pub fn saw_recovery(&self) -> bool {
        let seen = self.seen.lock().expect("samples");
        let Some(down) = seen
            .iter()
            .position(|s| s.health == Some(ServingStatus::NotServing))
        else {
            return false;
        };
        seen[down..].iter().any(|s| {
            s.health == Some(ServingStatus::Serving)
                && s.ready == Some(200)
                && matches!(s.hosts, Some((200, _)))
        })
    }

    /// Waits (at most `limit`) until [`Watch::saw_recovery`].
    pub async fn wait_recovery(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.saw_recovery() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops watching; every sample, oldest first.
    pub fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watch thread");
        std::mem::take(&mut *self.seen.lock().expect("samples"))
    }
}

/// Open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A line of `/proc/PID/status`, e.g. `VmHWM`, in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

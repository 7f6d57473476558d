//! Writes the ingest fuzz target's seed corpus: one file per `AgentMessage`, valid
//! ones of every kind (hello, full table, delta, counts, TIME_WAIT groups, namespaces,
//! the cycle's account) and broken ones (unknown enums, impossible ports and address
//! lengths, NUL and control characters, invalid UTF-8, truncations), so the fuzzer
//! starts from the shapes agents send. Run by hand after changing the wire format:
//!
//!     cargo run -p finwait-collector --example fuzz_seeds -- fuzz/corpus/ingest
//!
//! Files are named `seed-*`; crashers the fuzzer finds are committed beside them
//! under their own names and never overwritten.

use std::path::PathBuf;

use finwait_proto::v1 as pb;
use pb::agent_message::Body;
use prost::Message;

/// 2026-11-01T00:00:00Z: a plausible, fixed reading time.
const T: i64 = 1_793_491_200_000;

fn hello(host: pb::HostIdentity) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(Body::Hello(pb::Hello {
            host: Some(host),
            epoch: 1,
            instance_id: "seed".into(),
        })),
    }
}

fn host() -> pb::HostIdentity {
    pb::HostIdentity {
        hostname: "web-1".into(),
        machine_id: "0123456789abcdef".into(),
        boot_id: "boot".into(),
        labels: [("role".to_owned(), "web".to_owned())].into(),
        agent_version: "0.1.0".into(),
        ephemeral_port_low: 32768,
        ephemeral_port_high: 60999,
        tcp_fin_timeout_s: 60,
        sample_interval_ms: 10_000,
    }
}

fn ep(addr: &[u8], port: u32) -> Option<pb::Endpoint> {
    Some(pb::Endpoint {
        addr: addr.to_vec(),
        port,
    })
}

fn sock(cookie: Option<u64>, state: pb::TcpState, v6: bool) -> pb::Socket {
    let (l, r): (Vec<u8>, Vec<u8>) = if v6 {
        (vec![0xfd; 16], {
            let mut a = vec![0xfd; 16];
            a[15] = 2;
            a
        })
    } else {
        (vec![10, 0, 0, 1], vec![10, 0, 0, 2])
    };
    pb::Socket {
        netns: 4026531840,
        cookie,
        state: state as i32,
        local: ep(&l, 8080),
        remote: ep(&r, 41000),
        inode: 12345,
        uid: 1000,
        rx_queue: 1,
        tx_queue: 0,
        timer: Some(pb::Timer {
            kind: pb::TimerKind::Keepalive as i32,
            expires_ms: 7000,
            retransmits: 0,
        }),
        owners: vec![pb::Owner { pid: 42, fd: 7 }],
    }
}

fn process(comm: &str, cmdline: &str, cgroup: &str, hostname: &str) -> pb::Process {
    pb::Process {
        pid: 42,
        start_ticks: 99,
        comm: comm.into(),
        cmdline: cmdline.into(),
        cgroup: cgroup.into(),
        hostname: hostname.into(),
    }
}

fn batch(payload: pb::batch::Payload) -> pb::Batch {
    pb::Batch {
        epoch: 1,
        seq: 1,
        taken_at_ms: T,
        payload: Some(payload),
        processes: vec![process(
            "nginx",
            "nginx -g daemon off;",
            "/system.slice/nginx.service",
            "",
        )],
        counts: vec![pb::StateCount {
            netns: 4026531840,
            state: pb::TcpState::CloseWait as i32,
            count: 3,
        }],
        ..Default::default()
    }
}

fn full(sockets: Vec<pb::Socket>) -> pb::Batch {
    batch(pb::batch::Payload::Full(pb::FullTable { sockets }))
}

fn msg(b: pb::Batch) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(Body::Batch(b)),
    }
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/ingest".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, m: pb::AgentMessage| seeds.push((name, m.encode_to_vec()));

    add("hello", hello(host()));
    let mut h = host();
    h.hostname = "web\0one".into();
    add("hello-nul-hostname", hello(h));
    let mut h = host();
    h.ephemeral_port_low = 70_000;
    add("hello-port-out-of-range", hello(h));
    let mut h = host();
    (h.ephemeral_port_low, h.ephemeral_port_high) = (61000, 32768);
    add("hello-reversed-range", hello(h));
    let mut h = host();
    h.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    add("hello-too-many-labels", hello(h));
    let mut h = host();
    h.machine_id = " ".into();
    add("hello-blank-machine-id", hello(h));
    add(
        "hello-no-host",
        pb::AgentMessage {
            body: Some(Body::Hello(pb::Hello::default())),
        },
    );

    add(
        "full-v4",
        msg(full(vec![
            sock(Some(1), pb::TcpState::Established, false),
            sock(Some(2), pb::TcpState::CloseWait, false),
        ])),
    );
    add(
        "full-v6-no-cookie",
        msg(full(vec![sock(None, pb::TcpState::FinWait2, true)])),
    );
    let mut b = full(vec![sock(Some(3), pb::TcpState::TimeWait, false)]);
    b.time_wait = vec![pb::TimeWaitGroup {
        netns: 4026531840,
        local_addr: vec![10, 0, 0, 1],
        remote_addr: vec![10, 0, 0, 2],
        remote_port: 443,
        count: 900,
    }];
    b.namespaces = vec![
        pb::Namespace {
            inode: 4026531840,
            container_hint: String::new(),
            is_host: true,
        },
        pb::Namespace {
            inode: 4026532000,
            container_hint: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into(),
            is_host: false,
        },
    ];
    b.stats = Some(pb::CycleStats {
        source: pb::TableSource::Netlink as i32,
        dump_us: 1200,
        owner_scan_us: 3400,
        sockets: 3,
        processes_scanned: 100,
        processes_unreadable: 2,
        namespaces_read: 2,
        namespaces_skipped: vec![pb::NamespaceSkip {
            netns: 7,
            reason: "gone\u{7}".into(),
        }],
        capabilities_missing: vec!["CAP_SYS_PTRACE".into()],
        agent_uid: Some(0),
        ..Default::default()
    });
    add("full-time-wait-namespaces-stats", msg(b));
    add(
        "delta",
        msg(batch(pb::batch::Payload::Delta(pb::Delta {
            added: vec![sock(Some(4), pb::TcpState::SynSent, false)],
            changed: vec![sock(Some(1), pb::TcpState::CloseWait, false)],
            removed: vec![
                pb::SocketKey {
                    netns: 4026531840,
                    cookie: Some(2),
                    ..Default::default()
                },
                pb::SocketKey {
                    netns: 4026531840,
                    cookie: None,
                    local: ep(&[10, 0, 0, 1], 80),
                    remote: ep(&[10, 0, 0, 2], 5000),
                    inode: 9,
                },
            ],
        }))),
    );
    let mut b = full(vec![sock(Some(5), pb::TcpState::Established, false)]);
    b.processes = vec![process(
        "ev\0il\u{1b}[31m",
        &"x".repeat(5000),
        "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
        "pod-\u{1}name",
    )];
    add("full-hostile-process-names", msg(b));
    let mut b = full(vec![sock(Some(7), pb::TcpState::CloseWait, true)]);
    b.processes = vec![process(
        "java",
        "java -jar app.jar",
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-4f5d0a9e3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e.scope",
        "web-7d9c",
    )];
    add("full-kubernetes-pod", msg(b));
    add(
        "counts-only",
        msg(pb::Batch {
            payload: Some(pb::batch::Payload::Delta(pb::Delta::default())),
            ..batch(pb::batch::Payload::Delta(pb::Delta::default()))
        }),
    );

    // Broken on purpose: each must be refused naming its field.
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.state = 42;
    add("bad-state", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.local = ep(&[10, 0, 0, 1], 70_000);
    add("bad-port", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.remote = ep(&[1, 2, 3], 80);
    add("bad-addr-len", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.remote = ep(&[0xfd; 16], 80);
    add("bad-mixed-families", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.timer = Some(pb::Timer {
        kind: 99,
        ..Default::default()
    });
    add("bad-timer-kind", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.owners[0].pid = 7;
    add("bad-unknown-owner", msg(full(vec![s])));
    let mut s = sock(Some(6), pb::TcpState::Established, false);
    s.netns = u64::MAX;
    add("bad-netns", msg(full(vec![s])));
    let mut b = full(vec![]);
    b.counts[0].state = 0;
    add("bad-count-state", msg(b));
    let mut b = full(vec![]);
    b.time_wait = vec![pb::TimeWaitGroup {
        local_addr: vec![1; 5],
        ..Default::default()
    }];
    add("bad-time-wait-addr", msg(b));
    let mut b = full(vec![]);
    b.stats = Some(pb::CycleStats {
        source: 77,
        ..Default::default()
    });
    add("bad-stats-source", msg(b));
    let mut b = full(vec![]);
    b.taken_at_ms = 42;
    add("bad-taken-at", msg(b));
    let mut b = full(vec![]);
    b.epoch = 0;
    add("bad-epoch", msg(b));
    let mut b = full(vec![]);
    b.payload = None;
    add("bad-no-payload", msg(b));
    add("empty-message", pb::AgentMessage { body: None });

    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    // Bytes no encoder writes: invalid UTF-8 in a string, a truncated message, a
    // length prefix past the end, garbage.
    let mut bad_utf8 = hello(host()).encode_to_vec();
    if let Some(at) = bad_utf8.windows(5).position(|w| w == b"web-1") {
        bad_utf8[at] = 0xff;
    }
    let whole = msg(full(vec![sock(Some(1), pb::TcpState::Established, false)])).encode_to_vec();
    let raw: [(&str, Vec<u8>); 4] = [
        ("raw-invalid-utf8", bad_utf8),
        ("raw-truncated", whole[..whole.len() / 2].to_vec()),
        (
            "raw-length-past-end",
            vec![0x12, 0xff, 0xff, 0xff, 0x0f, 0x08],
        ),
        ("raw-garbage", vec![0xff; 16]),
    ];
    for (name, bytes) in &raw {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("{} seeds in {}", seeds.len() + raw.len(), dir.display());
    Ok(())
}

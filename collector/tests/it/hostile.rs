//! Hostile and broken ingest messages on the real gRPC transport, sent as raw bytes so
//! that they can be what no well-behaved encoder writes: each gets INVALID_ARGUMENT
//! saying why, never an OK end of stream or INTERNAL (which would blame the collector),
//! and a refusal loses nothing committed before it: the agent reconnects and its next
//! batch is acknowledged. Compressed messages are refused before they are inflated.

use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, require_root};
use prost::Message;
use prost::bytes::BufMut;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::support::{AgentStream, Collector, full, identity, now_ms, sock};

/// Sends pre-encoded bytes as messages; reads the collector's answers as protobuf.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct ProstDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ProstDecoder {
    type Item = pb::CollectorMessage;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        pb::CollectorMessage::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = pb::CollectorMessage;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder {
        ProstDecoder
    }
}

/// `msg` encoded, with the first occurrence of `mark` made invalid UTF-8.
fn corrupted(msg: &pb::AgentMessage, mark: &[u8]) -> Vec<u8> {
    let mut bytes = msg.encode_to_vec();
    let at = bytes
        .windows(mark.len())
        .position(|w| w == mark)
        .expect("mark in the encoding");
    bytes[at] = 0xff;
    bytes
}

fn hello(name: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            host: Some(identity(name)),
            epoch: 1,
            instance_id: "hostile".into(),
        })),
    }
}

/// A plaintext HTTP/2 connection to `c`.
async fn channel(c: &Collector) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// Opens a stream, sends `messages`, and returns every answer until the stream ends:
/// the messages, then the final status (Ok when it ended cleanly).
async fn exchange(
    c: &Collector,
    messages: Vec<Vec<u8>>,
) -> (Vec<pb::CollectorMessage>, Result<(), tonic::Status>) {
    let channel = channel(c).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel(16);
    for m in messages {
        tx.send(m).await.expect("queue");
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/finwait.v1.Ingest/Stream");
    let answer = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await;
    let mut stream = match answer {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut got = Vec::new();
    let end = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(m))) => got.push(m),
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(status)) => break Err(status),
            Err(_) => {
                drop(tx);
                break Ok(());
            }
        }
    };
    (got, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_the_agents_mistake_and_named() {
    if require_root("undecodable_messages_are_the_agents_mistake_and_named") == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;

    // A hello whose hostname is not UTF-8: the stream must not end "OK".
    let (_, end) = exchange(&c, vec![corrupted(&hello("AAAAhost"), b"AAAA")]).await;
    let status = end.expect_err("an undecodable hello is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("message does not decode"),
        "{status:?}"
    );

    // A good hello, then a batch whose process name is not UTF-8: INVALID_ARGUMENT,
    // not INTERNAL; the welcome came first.
    let batch = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Batch(pb::Batch {
            epoch: 1,
            seq: 1,
            taken_at_ms: now_ms(),
            payload: Some(pb::batch::Payload::Full(pb::FullTable { sockets: vec![] })),
            processes: vec![pb::Process {
                pid: 7,
                start_ticks: 1,
                comm: "BBBBcomm".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let (got, end) = exchange(
        &c,
        vec![
            hello("utf8-victim").encode_to_vec(),
            corrupted(&batch, b"BBBB"),
        ],
    )
    .await;
    assert!(
        matches!(
            got.first().and_then(|m| m.body.as_ref()),
            Some(pb::collector_message::Body::Welcome(_))
        ),
        "{got:?}"
    );
    let status = end.expect_err("an undecodable batch is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");

    // The collector is fine afterwards: a well-formed agent is welcomed.
    let (got, _) = exchange(&c, vec![hello("after").encode_to_vec()]).await;
    assert!(
        matches!(
            got.first().and_then(|m| m.body.as_ref()),
            Some(pb::collector_message::Body::Welcome(_))
        ),
        "{got:?}"
    );
    c.stop().await;
}

fn host(h: &mut pb::Hello) -> &mut pb::HostIdentity {
    h.host.as_mut().expect("host")
}

/// The status a stream ended with, expecting an error.
fn refusal(end: Result<(), tonic::Status>, what: &str) -> tonic::Status {
    end.expect_err(what)
}

fn batch_msg(b: pb::Batch) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Batch(b)),
    }
}

fn welcomed(got: &[pb::CollectorMessage]) -> bool {
    matches!(
        got.first().and_then(|m| m.body.as_ref()),
        Some(pb::collector_message::Body::Welcome(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hellos_and_out_of_order_messages_are_refused_and_write_nothing() {
    if require_root("hostile_hellos_and_out_of_order_messages_are_refused_and_write_nothing")
        == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;
    let spoilt = |f: &dyn Fn(&mut pb::Hello)| {
        let mut m = hello("h");
        if let Some(pb::agent_message::Body::Hello(h)) = &mut m.body {
            f(h);
        }
        m.encode_to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "hello.host.hostname",
            spoilt(&|h| host(h).hostname = "web\0one".into()),
        ),
        (
            "hello.host.hostname",
            spoilt(&|h| host(h).hostname = "x".repeat(300)),
        ),
        (
            "hello.host.machine_id",
            spoilt(&|h| host(h).machine_id = " ".into()),
        ),
        (
            "hello.host.labels[role]",
            spoilt(&|h| {
                host(h)
                    .labels
                    .insert("role".into(), "web\nX-Injected: 1".into());
            }),
        ),
        (
            "hello.host.labels",
            spoilt(&|h| {
                host(h).labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
            }),
        ),
        (
            "hello.host.ephemeral_port_low",
            spoilt(&|h| host(h).ephemeral_port_low = 70_000),
        ),
        (
            "hello.host.ephemeral_port_low",
            spoilt(&|h| {
                (host(h).ephemeral_port_low, host(h).ephemeral_port_high) = (61_000, 1024);
            }),
        ),
        ("hello.epoch", spoilt(&|h| h.epoch = 0)),
        ("hello.host", spoilt(&|h| h.host = None)),
        (
            "hello.instance_id",
            spoilt(&|h| h.instance_id = String::new()),
        ),
        // Not a hello at all: a batch first, an empty message first.
        (
            "must be hello",
            batch_msg(full(1, 1, now_ms(), vec![])).encode_to_vec(),
        ),
        (
            "must be hello",
            pb::AgentMessage { body: None }.encode_to_vec(),
        ),
    ];
    for (want, bytes) in cases {
        let (got, end) = exchange(&c, vec![bytes]).await;
        assert!(got.is_empty(), "{want}: answered {got:?}");
        let status = refusal(end, want);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{want}: {status:?}"
        );
        assert!(
            status.message().contains(want),
            "{want} named in {status:?}"
        );
    }
    // Truncated, length past the end, garbage: "does not decode", not INTERNAL.
    let whole = hello("h").encode_to_vec();
    for bytes in [
        whole[..whole.len() / 2].to_vec(),
        vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x08],
        vec![0xff; 32],
    ] {
        let (_, end) = exchange(&c, vec![bytes.clone()]).await;
        let status = refusal(end, "undecodable");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{bytes:?}: {status:?}"
        );
        assert!(
            status.message().starts_with("message does not decode"),
            "{status:?}"
        );
    }
    // A second hello, or an empty message, after the welcome ends the stream too.
    for second in [hello("twice"), pb::AgentMessage { body: None }] {
        let (got, end) = exchange(
            &c,
            vec![hello("twice").encode_to_vec(), second.encode_to_vec()],
        )
        .await;
        assert!(welcomed(&got), "{got:?}");
        let status = refusal(end, "only batches follow hello");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("only batches"), "{status:?}");
    }
    let db = c.db().await;
    let hosts: Vec<String> = sqlx::query_scalar("SELECT hostname FROM hosts")
        .fetch_all(&db)
        .await
        .expect("hosts");
    assert_eq!(
        hosts,
        vec!["twice".to_owned()],
        "no refused hello made a host"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_a_batch_is_checked_and_a_refusal_loses_nothing_committed() {
    if require_root("every_part_of_a_batch_is_checked_and_a_refusal_loses_nothing_committed")
        == Privilege::OptedOut
    {
        return;
    }
    use pb::TcpState::{CloseWait, Established};
    let c = Collector::start(&[]).await;
    let t0 = now_ms();
    let good = |seq: u64| {
        full(
            1,
            seq,
            t0 + seq as i64,
            vec![sock(1, CloseWait, 80, 1000, Some(4))],
        )
    };
    let delta_with = |f: &dyn Fn(&mut pb::Delta)| {
        let mut d = pb::Delta::default();
        f(&mut d);
        let mut b = good(2);
        b.payload = Some(pb::batch::Payload::Delta(d));
        b
    };
    let with = |f: &dyn Fn(&mut pb::Batch)| {
        let mut b = good(2);
        f(&mut b);
        b
    };
    // Kinds of message the ingest cases in ingest.rs do not reach: deltas (changed,
    // removed keys without a cookie), counts, TIME_WAIT groups, namespaces, the
    // cycle's account, the envelope.
    let cases: Vec<(&str, pb::Batch)> = vec![
        (
            "batch.delta.changed[0].timer.kind",
            delta_with(&|d| {
                let mut s = sock(1, Established, 80, 1000, Some(4));
                s.timer = Some(pb::Timer {
                    kind: 99,
                    ..Default::default()
                });
                d.changed.push(s);
            }),
        ),
        (
            "batch.delta.added[0].remote.addr",
            delta_with(&|d| {
                let mut s = sock(9, Established, 80, 1009, None);
                s.remote.as_mut().expect("remote").addr = vec![0xfd; 16];
                d.added.push(s);
            }),
        ),
        (
            "batch.delta.removed[0].local.addr",
            delta_with(&|d| {
                d.removed.push(pb::SocketKey {
                    netns: 1,
                    cookie: None,
                    local: Some(pb::Endpoint {
                        addr: vec![1; 5],
                        port: 80,
                    }),
                    remote: Some(pb::Endpoint {
                        addr: vec![10, 0, 0, 2],
                        port: 1000,
                    }),
                    inode: 0,
                });
            }),
        ),
        (
            "batch.delta.removed[0].remote",
            delta_with(&|d| {
                d.removed.push(pb::SocketKey {
                    netns: 1,
                    cookie: None,
                    local: Some(pb::Endpoint {
                        addr: vec![10, 0, 0, 1],
                        port: 80,
                    }),
                    remote: None,
                    inode: 0,
                });
            }),
        ),
        (
            "batch.delta.removed[0].netns",
            delta_with(&|d| {
                d.removed.push(pb::SocketKey {
                    netns: u64::MAX,
                    cookie: Some(1),
                    ..Default::default()
                });
            }),
        ),
        ("batch.counts[0].state", with(&|b| b.counts[0].state = 0)),
        ("batch.counts[0].state", with(&|b| b.counts[0].state = 99)),
        (
            "batch.counts[0].count",
            with(&|b| b.counts[0].count = u32::MAX),
        ),
        (
            "batch.time_wait[0].remote_port",
            with(&|b| {
                b.time_wait.push(pb::TimeWaitGroup {
                    netns: 1,
                    local_addr: vec![10, 0, 0, 1],
                    remote_addr: vec![10, 0, 0, 2],
                    remote_port: 70_000,
                    count: 1,
                });
            }),
        ),
        (
            "batch.time_wait[0].local_addr",
            with(&|b| {
                b.time_wait.push(pb::TimeWaitGroup {
                    netns: 1,
                    local_addr: vec![10, 0, 1],
                    remote_addr: vec![10, 0, 0, 2],
                    remote_port: 80,
                    count: 1,
                });
            }),
        ),
        (
            "batch.namespaces[0].inode",
            with(&|b| {
                b.namespaces.push(pb::Namespace {
                    inode: u64::MAX,
                    ..Default::default()
                });
            }),
        ),
        (
            "batch.stats.source",
            with(&|b| {
                b.stats = Some(pb::CycleStats {
                    source: 77,
                    ..Default::default()
                });
            }),
        ),
        (
            "batch.full.sockets[0].netns",
            with(&|b| {
                if let Some(pb::batch::Payload::Full(t)) = &mut b.payload {
                    t.sockets[0].netns = u64::MAX;
                }
            }),
        ),
        ("batch.payload", with(&|b| b.payload = None)),
        ("batch.seq", with(&|b| b.seq = 0)),
    ];
    for (i, (field, bad)) in cases.into_iter().enumerate() {
        let name = format!("hb{i}");
        let mut a = AgentStream::open(c.addr, identity(&name), 1, &name, None)
            .await
            .expect("hello");
        assert!(matches!(
            a.send(good(1)).await.expect("answer"),
            pb::collector_message::Body::Ack(_)
        ));
        let status = a.send(bad).await.expect_err(field);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} named in {status:?}"
        );
        // The agent reconnects; its next good batch is acknowledged after the first.
        let mut again = AgentStream::open(c.addr, identity(&name), 1, &name, None)
            .await
            .unwrap_or_else(|e| panic!("{field}: reconnect: {e:?}"));
        assert_eq!(
            again.welcome.last_seq, 1,
            "{field}: the bad batch left no trace"
        );
        let mut next = good(2);
        if let Some(pb::batch::Payload::Full(t)) = &mut next.payload {
            t.sockets.push(sock(2, Established, 80, 1001, Some(4)));
        }
        assert!(
            matches!(
                again.send(next).await.expect("answer"),
                pb::collector_message::Body::Ack(pb::Ack {
                    seq: 2,
                    duplicate: false,
                    ..
                })
            ),
            "{field}: the next good batch is acknowledged"
        );
    }
    let db = c.db().await;
    let per_host: Vec<i64> = sqlx::query_scalar(
        "SELECT count(c.*) FROM hosts h LEFT JOIN current_sockets c USING (host_id) GROUP BY h.host_id ORDER BY h.host_id",
    )
    .fetch_all(&db)
    .await
    .expect("counts");
    assert_eq!(per_host.len(), 15);
    assert!(
        per_host.iter().all(|&n| n == 2),
        "every host's rows intact: {per_host:?}"
    );
    c.stop().await;
}

/// A gzip stream of `n` zero bytes (a decompression bomb: ~1000:1), from gzip(1).
fn gzip_bomb(n: usize) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {n} /dev/zero | gzip -9c"))
        .output()
        .expect("gzip (apt-get install gzip)");
    assert!(out.status.success() && out.stdout.len() < n / 100, "a bomb");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_are_refused_at_the_door_not_inflated() {
    if require_root("compressed_messages_are_refused_at_the_door_not_inflated")
        == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&["--max-message-bytes", "65536"]).await;
    let bomb = gzip_bomb(256 * 1024 * 1024);
    for encoding in ["gzip", "zstd", "deflate"] {
        let channel = channel(&c).await;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let (tx, rx) = mpsc::channel(4);
        tx.send(hello("bomb").encode_to_vec()).await.expect("queue");
        tx.send(bomb.clone()).await.expect("queue");
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut()
            .insert("grpc-encoding", encoding.parse().expect("header"));
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/finwait.v1.Ingest/Stream");
        let status = grpc
            .streaming(req, path, RawCodec)
            .await
            .err()
            .unwrap_or_else(|| panic!("{encoding}: a compressed stream is accepted"));
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{encoding}: {status:?}"
        );
        assert!(
            status.message().contains(encoding),
            "{encoding}: {status:?}"
        );
    }
    let db = c.db().await;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(hosts, 0, "nothing from a compressed stream was read");
    // The collector is unharmed: a plain agent is welcomed.
    let (got, _) = exchange(&c, vec![hello("after-bomb").encode_to_vec()]).await;
    assert!(welcomed(&got), "{got:?}");
    c.stop().await;
}

/// One message on the wire: compressed-flag byte, declared length (the real one when
/// `None`), bytes.
type Frame = (u8, Option<u32>, Vec<u8>);

/// gRPC length-prefixed messages, each with the compressed-flag byte given, declaring
/// `declared` bytes (the real length when `None`).
fn frames(parts: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for (flag, declared, bytes) in parts {
        out.push(*flag);
        let len = declared.unwrap_or(u32::try_from(bytes.len()).expect("small"));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Sends `body` as the whole request body of one ingest stream, below tonic's encoder
/// (which never writes a bad flag or a short message), and returns the gRPC status
/// code and message the collector ended it with.
async fn raw_body(c: &Collector, body: Vec<u8>) -> (i32, String) {
    let (tx, answer) = open_raw(c).await;
    tx.send(body).await.expect("send the body");
    drop(tx);
    let trailers = tokio::time::timeout(std::time::Duration::from_secs(15), answer)
        .await
        .expect("the stream ends within 15 s")
        .expect("task");
    let code = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a grpc-status");
    let message = trailers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    (code, message)
}

/// The grpc-message header's percent-encoding undone (ASCII is enough here).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_is_the_agents_mistake_and_costs_nothing() {
    if require_root("broken_framing_is_the_agents_mistake_and_costs_nothing") == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;
    let good = batch_msg(full(1, 1, now_ms(), vec![])).encode_to_vec();
    let cases: [(&str, Vec<Frame>, &str); 3] = [
        // The compressed-flag set although the stream named no grpc-encoding.
        (
            "compressed flag without an encoding",
            vec![
                (0, None, hello("flagged").encode_to_vec()),
                (1, None, good.clone()),
            ],
            "compressed-flag",
        ),
        // A flag that is neither 0 nor 1.
        (
            "invalid flag",
            vec![
                (0, None, hello("flag-two").encode_to_vec()),
                (2, None, good.clone()),
            ],
            "compression flag",
        ),
        // A message whose declared length runs past the end of the stream.
        (
            "truncated message",
            vec![
                (0, None, hello("truncated").encode_to_vec()),
                (
                    0,
                    Some(u32::try_from(good.len()).expect("small") + 100),
                    good.clone(),
                ),
            ],
            "decode",
        ),
    ];
    for (what, parts, says) in cases {
        let (code, message) = raw_body(&c, frames(&parts)).await;
        assert_eq!(
            code,
            tonic::Code::InvalidArgument as i32,
            "{what}: INVALID_ARGUMENT (the agent's mistake), not INTERNAL; got {code}: {message}"
        );
        assert!(message.contains(says), "{what}: {message}");
    }
    // Each hello was accepted before its broken message; no batch was stored.
    let db = c.db().await;
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_batches")
        .fetch_one(&db)
        .await
        .expect("count batches");
    assert_eq!(batches, 0, "nothing from a broken message was stored");
    // A well-formed agent is welcomed afterwards and its batch acknowledged.
    a_good_agent_is_acknowledged(&c, "after-framing").await;
    c.stop().await;
}

/// A well-formed agent named `name` is welcomed and its (empty) table acknowledged.
async fn a_good_agent_is_acknowledged(c: &Collector, name: &str) {
    let good = batch_msg(full(1, 1, now_ms(), vec![])).encode_to_vec();
    let (got, _) = exchange(c, vec![hello(name).encode_to_vec(), good]).await;
    assert!(welcomed(&got), "{got:?}");
    assert!(
        got.iter()
            .any(|m| matches!(m.body, Some(pb::collector_message::Body::Ack(_)))),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_refused_by_the_transport_and_costs_nothing() {
    if require_root("oversized_metadata_is_refused_by_the_transport_and_costs_nothing")
        == Privilege::OptedOut
    {
        return;
    }
    let c = Collector::start(&[]).await;
    // 64 KiB of metadata: four times HTTP/2's header-list limit (16 KiB).
    let channel = channel(&c).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("fat-headers").encode_to_vec())
        .await
        .expect("queue");
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    for i in 0..16 {
        let pad = "x".repeat(4096);
        req.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(format!("x-pad-{i}").as_bytes()).expect("key"),
            pad.parse().expect("value"),
        );
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/finwait.v1.Ingest/Stream");
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        grpc.streaming(req, path, RawCodec),
    )
    .await
    .expect("refused within 15 s, not left hanging");
    let status = match answer {
        Err(status) => status,
        Ok(resp) => {
            let mut s = resp.into_inner();
            match tokio::time::timeout(std::time::Duration::from_secs(15), s.message()).await {
                Ok(Err(status)) => status,
                other => panic!("oversized metadata was served: {other:?}"),
            }
        }
    };
    assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");
    let db = c.db().await;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts")
        .fetch_one(&db)
        .await
        .expect("count hosts");
    assert_eq!(hosts, 0, "nothing from the refused stream was read");
    // The collector is unharmed.
    let (got, _) = exchange(&c, vec![hello("after-headers").encode_to_vec()]).await;
    assert!(welcomed(&got), "{got:?}");
    c.stop().await;
}

/// Opens an ingest stream below tonic's encoder whose body is what the returned sender
/// sends, ending when it is dropped; the task resolves to the stream's final
/// trailers (the headers of a trailers-only answer).
async fn open_raw(
    c: &Collector,
) -> (
    mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<tonic::codegen::http::HeaderMap>,
) {
    use http_body_util::BodyExt;
    use tonic::codegen::Service;
    let mut channel = channel(c).await;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("ready");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let frames = tokio_stream::StreamExt::map(ReceiverStream::new(rx), |b| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(prost::bytes::Bytes::from(b)))
    });
    let req = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/finwait.v1.Ingest/Stream", c.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            frames,
        )))
        .expect("request");
    let answer = tokio::spawn(async move {
        let resp = channel.call(req).await.expect("an HTTP answer");
        let headers = resp.headers().clone();
        let collected = resp.into_body().collect().await.expect("body");
        collected.trailers().cloned().unwrap_or(headers)
    });
    (tx, answer)
}

/// A gRPC length prefix declaring `len` bytes, followed by `sent` of them.
fn declared(len: u32, sent: usize) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&len.to_be_bytes());
    m.extend(std::iter::repeat_n(0u8, sent));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_wire_bytes_is_not_read_and_its_stream_is_shed_with_a_delay() {
    if require_root("a_message_waiting_for_wire_bytes_is_not_read") == Privilege::OptedOut {
        return;
    }
    // Wire bytes for one message of the limit: tonic may buffer no more than that.
    let c = Collector::start(&[
        "--max-message-bytes",
        "1048576",
        "--ingest-wire-bytes",
        "1048576",
        "--ingest-batch-wait-ms",
        "1500",
    ])
    .await;
    let wait = std::time::Duration::from_secs(20);
    // A: a hello, then a batch declared 1,000,000 bytes of which 100,000 arrive; its
    // stream holds those wire bytes while the rest does not come.
    let (a, a_end) = open_raw(&c).await;
    a.send(frames(&[(0, None, hello("wire-a").encode_to_vec())]))
        .await
        .expect("send");
    a.send(declared(1_000_000, 100_000)).await.expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // B: its hello fits in what is left, its 500,000-byte batch does not. It is not
    // read (the bytes would be buffered); after the batch wait the stream ends
    // UNAVAILABLE with a retry delay, while A still holds the bytes.
    let (b, b_end) = open_raw(&c).await;
    b.send(frames(&[(0, None, hello("wire-b").encode_to_vec())]))
        .await
        .expect("send");
    b.send(declared(500_000, 1_000)).await.expect("send");
    let trailers = tokio::time::timeout(wait, b_end)
        .await
        .expect("B is shed within the wait")
        .expect("task");
    let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok());
    assert_eq!(status, Some("14"), "UNAVAILABLE: {trailers:?}");
    let pushback: Option<u64> = trailers
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    assert!(
        pushback.is_some_and(|ms| ms > 0),
        "a retry delay for the agent: {trailers:?}"
    );
    assert!(
        !a_end.is_finished(),
        "A's stream is still open and holds the bytes"
    );
    // A's message never completes: when its body ends, the stream ends INVALID_ARGUMENT
    // (the agent's mistake) and its bytes are released.
    drop(a);
    let trailers = tokio::time::timeout(wait, a_end)
        .await
        .expect("A ends")
        .expect("task");
    assert_eq!(
        trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
        Some("3"),
        "{trailers:?}"
    );
    drop(b);
    // A well-formed agent is then welcomed and acknowledged: nothing stayed reserved.
    a_good_agent_is_acknowledged(&c, "wire-c").await;
    c.stop().await;
}

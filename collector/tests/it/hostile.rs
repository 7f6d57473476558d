//! Hostile and broken ingest messages on the real gRPC transport, sent as raw bytes so
//! that they can be what no well-behaved encoder writes: each gets INVALID_ARGUMENT
//! saying why, never an OK end of stream or INTERNAL (which would blame the collector).

use finwait_proto::v1 as pb;
use finwait_testkit::{Privilege, require_root};
use prost::Message;
use prost::bytes::BufMut;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::support::{Collector, identity, now_ms};

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

/// Opens a stream, sends `messages`, and returns every answer until the stream ends:
/// the messages, then the final status (Ok when it ended cleanly).
async fn exchange(
    c: &Collector,
    messages: Vec<Vec<u8>>,
) -> (Vec<pb::CollectorMessage>, Result<(), tonic::Status>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
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

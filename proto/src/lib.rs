//! The finwait wire contract: prost messages and tonic services generated at build
//! time from `proto/finwait/v1/*.proto` by protox (no system protoc needed).
//!
//! Only this crate sees .proto files. Wire types stop at the edges of the agent and
//! the collector, where they are converted to domain types (with validation).

/// Package `finwait.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("finwait.v1");

    /// Encoded `FileDescriptorSet` of every finwait .proto file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/finwait_descriptor.bin"));
}

/// `finwait.v1.AgentMessage` as the collector reads it off the wire: the same bytes
/// (a message field and a bytes field are encoded alike), with the hello or batch left
/// encoded, so its size is checked and its memory reserved before it is decoded. The
/// generated `v1::AgentMessage` decodes everything at once, which let a hello of a
/// million labels cost seconds and hundreds of megabytes before being refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentEnvelope {
    /// `AgentMessage.hello`, still encoded (a `v1::Hello`).
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub hello: Option<prost::bytes::Bytes>,
    /// `AgentMessage.batch`, still encoded (a `v1::Batch`).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub batch: Option<prost::bytes::Bytes>,
}

/// The few `finwait.v1.Batch` fields that say which batch (and which chunk) a message
/// is, read without decoding its sockets: prost skips the other fields in place.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BatchHead {
    /// `Batch.epoch`.
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    /// `Batch.seq`.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// `Batch.chunk`.
    #[prost(uint32, tag = "11")]
    pub chunk: u32,
    /// `Batch.more_chunks`.
    #[prost(bool, tag = "12")]
    pub more_chunks: bool,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn an_envelope_reads_agent_messages_without_decoding_their_body() {
        let hello = v1::Hello {
            epoch: 7,
            instance_id: "i".into(),
            ..Default::default()
        };
        let wire = v1::AgentMessage {
            body: Some(v1::agent_message::Body::Hello(hello.clone())),
        }
        .encode_to_vec();
        let env = AgentEnvelope::decode(wire.as_slice()).expect("envelope");
        assert!(env.batch.is_none());
        let inner = env.hello.expect("hello bytes");
        assert_eq!(v1::Hello::decode(inner).expect("hello"), hello);
    }

    #[test]
    fn a_batch_head_reads_the_numbers_and_skips_the_sockets() {
        let b = v1::Batch {
            epoch: 3,
            seq: 9,
            chunk: 0,
            more_chunks: true,
            payload: Some(v1::batch::Payload::Full(v1::FullTable {
                sockets: vec![v1::Socket::default(); 10],
            })),
            ..Default::default()
        };
        let head = BatchHead::decode(b.encode_to_vec().as_slice()).expect("head");
        assert_eq!(
            (head.epoch, head.seq, head.chunk, head.more_chunks),
            (3, 9, 0, true)
        );
    }
}

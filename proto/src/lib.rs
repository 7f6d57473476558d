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

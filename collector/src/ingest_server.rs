//! `finwait.v1.Ingest` served by hand instead of by the generated `IngestServer`: the
//! same path and wire format, but the request messages are read as
//! [`AgentEnvelope`]s (hello and batch left encoded), so [`crate::ingest`] can refuse
//! an oversized hello and reserve memory for a batch before decoding either; and each
//! request body is metered ([`crate::wire_budget`]) so tonic buffers no message whose
//! bytes were not reserved.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use finwait_proto::AgentEnvelope;
use finwait_proto::v1 as pb;
use tonic::codegen::{BoxFuture, http};
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{IngestService, StreamOut};
use crate::wire_budget::{MeteredBody, WireGate, WireLedger};

/// The gRPC path of the one method.
const STREAM_PATH: &str = "/finwait.v1.Ingest/Stream";

/// The ingest service as a tower service for tonic's router.
#[derive(Debug, Clone)]
pub struct IngestServer {
    inner: Arc<IngestService>,
    /// Largest message decoded (bigger ones end the stream with OUT_OF_RANGE before
    /// they are buffered).
    max_decoding: usize,
    /// Largest message encoded.
    max_encoding: usize,
    /// Bounds raw messages before tonic buffers them (see [`crate::wire_budget`]).
    wire: Option<WireGate>,
}

impl IngestServer {
    /// Serves `inner` with the given message size limits.
    pub fn new(inner: IngestService, max_decoding: usize, max_encoding: usize) -> IngestServer {
        IngestServer {
            inner: Arc::new(inner),
            max_decoding,
            max_encoding,
            wire: None,
        }
    }

    /// Reserves every request message's bytes from a budget of `wire_bytes` before
    /// tonic buffers it (`--ingest-wire-bytes`).
    pub fn with_wire_budget(mut self, wire_bytes: usize) -> IngestServer {
        self.wire = Some(
            self.inner
                .wire_gate(crate::budget::Budget::new(wire_bytes), self.max_decoding),
        );
        self
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = "finwait.v1.Ingest";
}

struct StreamMethod(Arc<IngestService>);

impl StreamingService<AgentEnvelope> for StreamMethod {
    type Response = pb::CollectorMessage;
    type ResponseStream = StreamOut;
    type Future = BoxFuture<Response<StreamOut>, Status>;

    fn call(&mut self, request: Request<Streaming<AgentEnvelope>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.open(request).await })
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for IngestServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let req = match &self.wire {
            Some(gate) => {
                let ledger = Arc::new(WireLedger::default());
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(Arc::clone(&ledger));
                let body = tonic::body::Body::new(MeteredBody::new(body, gate.clone(), ledger));
                http::Request::from_parts(parts, body)
            }
            None => req,
        };
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("no such method in finwait.v1.Ingest").into_http())
            });
        }
        let method = StreamMethod(Arc::clone(&self.inner));
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<pb::CollectorMessage, AgentEnvelope>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            Ok(grpc.streaming(method, req).await)
        })
    }
}

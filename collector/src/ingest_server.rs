//! `finwait.v1.Ingest` served by hand instead of by the generated `IngestServer`: the
//! same path and wire format, but the request messages are read as
//! [`AgentEnvelope`]s (hello and batch left encoded), so [`crate::ingest`] can refuse
//! an oversized hello and reserve memory for a batch before decoding either.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use finwait_proto::AgentEnvelope;
use finwait_proto::v1 as pb;
use tonic::codegen::{BoxFuture, http};
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{IngestService, StreamOut};

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
}

impl IngestServer {
    /// Serves `inner` with the given message size limits.
    pub fn new(inner: IngestService, max_decoding: usize, max_encoding: usize) -> IngestServer {
        IngestServer {
            inner: Arc::new(inner),
            max_decoding,
            max_encoding,
        }
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

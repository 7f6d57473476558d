//! One error-code enum for everything a client can be told, mapped to both gRPC codes
//! and HTTP statuses. Clients never see SQL or driver text: storage failures become
//! `Unavailable` with a generic message, and the detail goes to the log.
//!
//! Logging follows the code too ([`ErrorCode::log`]): a client's mistake (a 4xx: bad
//! parameter, unknown host, no token) is answered, not a failure of the collector, so
//! it is logged at INFO with its code; only the collector's own failures reach WARN
//! (storage unavailable, retried) or ERROR (a bug).

use crate::store::StoreError;

/// What went wrong, as a client may learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed; the message names the field.
    InvalidArgument,
    /// No or a wrong token.
    Unauthenticated,
    /// An accepted token without the role the request needs (an agent's token
    /// reading, a reader's token ingesting).
    PermissionDenied,
    /// Something named in the request does not exist.
    NotFound,
    /// The identity is held by another live agent.
    AlreadyExists,
    /// Too many streams or too large.
    ResourceExhausted,
    /// The request contradicts what the collector holds (a resent batch with other
    /// content, an agent clock far ahead, a batch of another epoch); the message says
    /// what to fix.
    FailedPrecondition,
    /// A newer stream of the same agent instance took over; this one ends.
    Aborted,
    /// Storage is down or the collector is stopping; retry later.
    Unavailable,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Aborted => tonic::Code::Aborted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status.
    pub fn http(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::FailedPrecondition => 400,
            ErrorCode::Aborted => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The code as one snake_case word (a metric label).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// A gRPC status with this code.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc(), message)
    }

    /// True when the client is at fault (an HTTP 4xx), false for the collector's own
    /// failures (5xx).
    pub fn is_client_error(self) -> bool {
        self.http() < 500
    }

    /// Logs a request of `kind` (e.g. `"http"`, `"ingest"`) refused or failed with this
    /// code: client errors at INFO, `Unavailable` at WARN, `Internal` at ERROR.
    /// `message` is what the client was told (never driver text).
    pub fn log(self, kind: &'static str, message: &str) {
        match self {
            _ if self.is_client_error() => {
                tracing::info!(code = ?self, request = kind, error = message, "request refused");
            }
            ErrorCode::Internal => {
                tracing::error!(code = ?self, request = kind, error = message, "request failed");
            }
            _ => tracing::warn!(code = ?self, request = kind, error = message, "request failed"),
        }
    }
}

impl From<&StoreError> for ErrorCode {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::IdentityConflict { .. } => ErrorCode::AlreadyExists,
            StoreError::UnknownHost(_) => ErrorCode::InvalidArgument,
            StoreError::Superseded => ErrorCode::Aborted,
            StoreError::Database(_) => ErrorCode::Unavailable,
            StoreError::Migrate(_) => ErrorCode::Internal,
        }
    }
}

/// The status a client sees for a store error (no driver text).
pub fn store_status(e: &StoreError) -> tonic::Status {
    let code = ErrorCode::from(e);
    match e {
        StoreError::IdentityConflict { .. } | StoreError::Superseded => code.status(e.to_string()),
        _ => code.status("storage unavailable; retry later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_hundreds_are_the_clients_fault_and_five_hundreds_ours() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::ResourceExhausted,
            ErrorCode::FailedPrecondition,
            ErrorCode::Aborted,
        ] {
            assert!(code.is_client_error(), "{code:?}");
        }
        assert!(!ErrorCode::Unavailable.is_client_error());
        assert!(!ErrorCode::Internal.is_client_error());
    }
}

//! Domain error → gRPC status, exhaustively (no `_` arm: a new error
//! variant does not compile until gRPC decides its code), with
//! `retry-after` metadata where REST sends `Retry-After`.

use crate::error::Error;
use tonic::{Code, Status};

/// Domain error → gRPC status, exhaustively (mirrors `http::error`).
pub(crate) fn status(error: Error) -> Status {
    let code = match &error {
        Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
        Error::TooLarge(_) => tonic::Code::ResourceExhausted,
        Error::NotFound(_) => tonic::Code::NotFound,
        Error::Unavailable(_) => tonic::Code::Unavailable,
        Error::Overloaded { .. } => tonic::Code::Unavailable,
        Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
        Error::ClientTimeout(_) => tonic::Code::DeadlineExceeded,
        Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
        Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
        Error::Internal(_) => tonic::Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    if let Error::Overloaded { retry_after, .. } = &error {
        let secs = retry_after.as_secs().max(1).to_string();
        if let Ok(value) = secs.parse() {
            status.metadata_mut().insert("retry-after", value);
        }
    }
    status
}

/// Rewrites tonic's decode-limit status into ours; other statuses pass.
pub(crate) fn oversize(s: Status, max_message_bytes: usize) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("message length too large") {
        return status(Error::TooLarge(format!(
            "request message is larger than the server's limit of {max_message_bytes} bytes (--grpc-max-message-bytes)"
        )));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_becomes_resource_exhausted() {
        let s = oversize(
            Status::out_of_range(
                "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
            ),
            4,
        );
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("--grpc-max-message-bytes"));
        assert_eq!(
            oversize(Status::out_of_range("x"), 4).code(),
            Code::OutOfRange
        );
    }
}

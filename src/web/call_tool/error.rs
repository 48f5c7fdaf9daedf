//! Errors of `POST /call_tool`: an HTTP status and `{"error": message}`.
//! gRPC statuses keep their message word for word; only the code is mapped.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tonic::Code;

/// A failed tool call, ready to be sent.
#[derive(Debug)]
pub struct ToolError {
    pub status: StatusCode,
    pub message: String,
}

impl ToolError {
    /// 400: the request itself is wrong (unknown tool, bad argument, bad JSON).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 413: a body larger than a tool call buffers.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
        }
    }
}

/// The HTTP status of a gRPC code. FAILED_PRECONDITION (a not-null,
/// foreign-key or check violation) is 409 Conflict: the request conflicts with
/// the data; 412 is about conditional request headers, which this API has not.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tonic::Status> for ToolError {
    fn from(status: tonic::Status) -> Self {
        Self {
            status: http_status(status.code()),
            message: status.message().to_owned(),
        }
    }
}

impl IntoResponse for ToolError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_status_keeps_its_message() {
        let error = ToolError::from(tonic::Status::not_found("no such key"));
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(error.message, "no such key");
    }
}

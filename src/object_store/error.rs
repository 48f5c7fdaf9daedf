//! Object store errors: a small taxonomy that maps one-to-one onto gRPC codes.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Why an object store call failed. Messages are safe to show to callers.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no object {key:?} in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("access denied by S3: {0}")]
    PermissionDenied(String),
    /// S3 refused the request because of the object's or bucket's state
    /// (a conflicting operation, a failed precondition).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("S3 is unavailable: {0}")]
    Unavailable(String),
    #[error("the upload was cancelled: {0}")]
    Cancelled(String),
    #[error("S3 error: {0}")]
    Internal(String),
}

impl ObjectStoreError {
    /// Classifies an S3 SDK error; `bucket` and `key` name the object in messages.
    pub(crate) fn from_sdk<E, R>(err: SdkError<E, R>, bucket: &str, key: &str) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HttpStatus,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().http_status();
                let code = service.err().code().unwrap_or_default();
                let message = service.err().message().unwrap_or(code);
                match (code, status) {
                    ("NoSuchKey", _) => Self::NoSuchKey {
                        bucket: bucket.into(),
                        key: key.into(),
                    },
                    ("NoSuchBucket", _) => Self::NoSuchBucket(bucket.into()),
                    // HEAD responses have no body, so no code: only the status says it.
                    ("NotFound", _) | ("", 404) if key.is_empty() => {
                        Self::NoSuchBucket(bucket.into())
                    }
                    ("NotFound", _) | ("", 404) => Self::NoSuchKey {
                        bucket: bucket.into(),
                        key: key.into(),
                    },
                    ("InvalidRange", _) | (_, 416) => {
                        Self::OutOfRange(format!("the range starts past the end of {key:?}"))
                    }
                    ("AccessDenied", _) | (_, 403) => Self::PermissionDenied(message.into()),
                    ("SlowDown" | "ServiceUnavailable" | "InternalError", _) => {
                        Self::Unavailable(message.into())
                    }
                    (_, status) if status >= 500 => Self::Unavailable(format!("{code} {message}")),
                    // The request itself is at fault (a bad continuation
                    // token, KeyTooLong, EntityTooLarge, ...).
                    (_, 400) => {
                        Self::InvalidArgument(format!("S3 rejected the request: {code}: {message}"))
                    }
                    (_, 409 | 412) => Self::FailedPrecondition(format!(
                        "S3 refused the request: {code}: {message}"
                    )),
                    (_, status) => Self::Internal(format!("{code} (HTTP {status}): {message}")),
                }
            }
            SdkError::TimeoutError(_) => Self::Unavailable("request timed out".into()),
            SdkError::DispatchFailure(failure) => {
                tracing::debug!(error = ?failure, "S3 dispatch failure");
                Self::Unavailable(if failure.is_timeout() {
                    "request timed out".into()
                } else {
                    "cannot reach the S3 endpoint".into()
                })
            }
            SdkError::ResponseError(_) => Self::Unavailable("malformed response from S3".into()),
            SdkError::ConstructionFailure(_) => Self::Internal("request could not be built".into()),
            _ => Self::Internal("unexpected SDK error".into()),
        }
    }
}

/// The HTTP status of a raw SDK response.
pub(crate) trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

impl crate::resilience::BackendError for ObjectStoreError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn unavailable(message: String) -> Self {
        Self::Unavailable(message)
    }

    fn deadline_exceeded(message: String) -> Self {
        Self::DeadlineExceeded(message)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::{error::ErrorMetadata, operation::list_objects_v2::ListObjectsV2Error};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn classify(status: u16, code: &str) -> ObjectStoreError {
        let error = ListObjectsV2Error::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("the message")
                .build(),
        );
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        ObjectStoreError::from_sdk(SdkError::service_error(error, raw), "b", "k")
    }

    #[test]
    fn client_errors_are_the_request_s_fault_not_internal() {
        for code in ["InvalidArgument", "KeyTooLongError", "EntityTooLarge"] {
            assert!(
                matches!(classify(400, code), ObjectStoreError::InvalidArgument(m) if m.contains(code)),
                "{code}"
            );
        }
        for status in [409, 412] {
            assert!(matches!(
                classify(status, "PreconditionFailed"),
                ObjectStoreError::FailedPrecondition(_)
            ));
        }
        assert!(matches!(
            classify(404, "NoSuchKey"),
            ObjectStoreError::NoSuchKey { .. }
        ));
        assert!(matches!(
            classify(503, "SlowDown"),
            ObjectStoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(405, "MethodNotAllowed"),
            ObjectStoreError::Internal(_)
        ));
    }
}

//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};

use crate::{database::DatabaseError, object_store::ObjectStoreError};

impl From<ObjectStoreError> for Status {
    fn from(err: ObjectStoreError) -> Self {
        use ObjectStoreError as E;
        let code = match &err {
            E::InvalidArgument(_) => Code::InvalidArgument,
            E::NoSuchKey { .. } | E::NoSuchBucket(_) => Code::NotFound,
            E::OutOfRange(_) => Code::OutOfRange,
            E::PermissionDenied(_) => Code::PermissionDenied,
            E::FailedPrecondition(_) => Code::FailedPrecondition,
            E::DeadlineExceeded(_) => Code::DeadlineExceeded,
            E::Unavailable(_) => Code::Unavailable,
            E::Cancelled(_) => Code::Cancelled,
            E::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %err, "object store error");
        }
        Status::new(code, err.to_string())
    }
}

impl From<DatabaseError> for Status {
    fn from(err: DatabaseError) -> Self {
        use DatabaseError as E;
        let code = match &err {
            E::InvalidArgument(_) => Code::InvalidArgument,
            E::PermissionDenied(_) => Code::PermissionDenied,
            E::AlreadyExists(_) => Code::AlreadyExists,
            E::FailedPrecondition(_) => Code::FailedPrecondition,
            E::Aborted(_) => Code::Aborted,
            E::ResourceExhausted(_) => Code::ResourceExhausted,
            E::DeadlineExceeded(_) => Code::DeadlineExceeded,
            E::Unavailable(_) | E::PoolTimeout => Code::Unavailable,
            E::Internal(detail) => {
                tracing::error!(error = %detail, "internal database error");
                Code::Internal
            }
        };
        Status::new(code, err.to_string())
    }
}

//! The one error type of the client: the broker's gRPC status (the same in
//! remote and direct mode), or a problem on the client's side before or
//! after the call.

use tonic::Code;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker (or, in direct mode, the in-process services) refused or
    /// failed the call; `code()` is its gRPC status code.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The client's settings are wrong (URL, certificates, variables).
    #[error("invalid broker client settings: {0}")]
    Config(String),
    /// A local file or body stream failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A result did not have the shape the caller asked for (a missing
    /// column, a value of another type).
    #[error("{0}")]
    Decode(String),
}

impl ClientError {
    /// The gRPC status code this error corresponds to, so callers can branch
    /// the same way in both modes (`NotFound`, `PermissionDenied`, ...).
    pub fn code(&self) -> Code {
        match self {
            Self::Status(status) => status.code(),
            Self::Config(_) => Code::InvalidArgument,
            Self::Io { .. } => Code::Unavailable,
            Self::Decode(_) => Code::Internal,
        }
    }

    /// The message without the code.
    pub fn message(&self) -> String {
        match self {
            Self::Status(status) => status.message().to_owned(),
            other => other.to_string(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// Results of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

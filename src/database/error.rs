//! Database errors: a small taxonomy that maps one-to-one onto gRPC codes.
//! Messages come from PostgreSQL's own error text (safe: it never contains
//! the connection string or password) or are written here.

use super::wire::{ServerError, WireError};

/// Why a database call failed. Messages are safe to show to callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatabaseError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every pooled connection stayed busy for the whole acquire timeout.
    #[error("database unavailable: timed out waiting for a free database connection")]
    PoolTimeout,
    #[error("internal database error")]
    Internal(String),
}

impl From<tokio_postgres::Error> for DatabaseError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            if err.is_closed() {
                return Self::Unavailable("the database connection was lost".into());
            }
            // Client-side errors (I/O, protocol) never name the server's secrets,
            // but keep them out of responses anyway.
            tracing::warn!(error = %err, "database client error");
            return Self::Unavailable("the database connection failed".into());
        };
        let mut message = db.message().to_owned();
        if let Some(detail) = db.detail() {
            message = format!("{message}: {detail}");
        }
        Self::from_sqlstate(db.code().code(), message)
    }
}

impl From<WireError> for DatabaseError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Server(ServerError {
                code,
                message,
                detail,
            }) => {
                let message = match detail {
                    Some(detail) => format!("{message}: {detail}"),
                    None => message,
                };
                DatabaseError::from_sqlstate(&code, message)
            }
            WireError::TooLarge(_) => DatabaseError::ResourceExhausted(
                "a result row is larger than the result limit (BROKER_MAX_RESULT_MIB)".into(),
            ),
            WireError::Broken(reason) => {
                tracing::warn!(error = %reason, "database connection failed");
                DatabaseError::Unavailable("the database connection failed".into())
            }
        }
    }
}

impl DatabaseError {
    /// The error for PostgreSQL's SQLSTATE `code` (see PostgreSQL's
    /// "Error Codes" appendix). What the caller's SQL or data caused keeps
    /// PostgreSQL's message; only server-side faults (classes 58, XX, F0,
    /// HV and the like) are hidden behind INTERNAL.
    pub(super) fn from_sqlstate(code: &str, message: String) -> Self {
        match code {
            "23505" => Self::AlreadyExists(message),
            "25006" => {
                Self::PermissionDenied(format!("{message} (Query is read-only: use Execute)"))
            }
            "42501" => Self::PermissionDenied(message),
            "57014" => Self::DeadlineExceeded(format!("statement cancelled: {message}")),
            // Lock not available (NOWAIT, lock_timeout) and snapshot too old:
            // a concurrency conflict the caller may retry, as a serialization
            // failure; not UNAVAILABLE, which would count against the
            // breaker of a database that is answering.
            "55P03" | "72000" => Self::Aborted(message),
            c if c.starts_with("40") => Self::Aborted(message),
            c if c.starts_with("53") || c.starts_with("54") => Self::ResourceExhausted(message),
            c if c.starts_with("08") || c.starts_with("57") => Self::Unavailable(message),
            // Integrity constraints (not-null, foreign key, check, exclusion),
            // a view's WITH CHECK OPTION, triggered data changes, an object in
            // the wrong state (in use, currval before nextval) and PL/pgSQL's
            // RAISE, STRICT no-row / too-many-rows and ASSERT: the statement is
            // valid but the data or state does not allow it.
            c if ["23", "44", "27", "09", "55", "P0"].contains(&class(c)) => {
                Self::FailedPrecondition(message)
            }
            // The statement itself is at fault: syntax and access rules, data
            // exceptions, cardinality (a scalar subquery returning two rows),
            // feature not supported, invalid transaction state, initiation or
            // termination, savepoints, cursors, CASE not found, routine and
            // trigger protocol errors, invalid grantor or role.
            c if [
                "42", "22", "21", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "24", "25", "26", "2B",
                "2D", "2F", "34", "38", "39", "3B", "3F",
            ]
            .contains(&class(c)) =>
            {
                Self::InvalidArgument(message)
            }
            _ => {
                tracing::warn!(sqlstate = code, error = %message, "unexpected database error");
                Self::Internal(message)
            }
        }
    }
}

/// The two-character class of a SQLSTATE.
fn class(code: &str) -> &str {
    code.get(..2).unwrap_or(code)
}

impl From<bb8::RunError<super::pool::ConnectError>> for DatabaseError {
    fn from(err: bb8::RunError<super::pool::ConnectError>) -> Self {
        match err {
            bb8::RunError::TimedOut => Self::PoolTimeout,
            bb8::RunError::User(e) => {
                tracing::warn!(error = %e, "cannot open a database connection");
                Self::Unavailable("cannot connect to the database".into())
            }
        }
    }
}

impl crate::resilience::BackendError for DatabaseError {
    /// A lost or refused connection; not a busy pool (retrying would only
    /// wait again) nor any answer PostgreSQL gave.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Only a connection that could not be opened or was lost. A pool that
    /// stayed busy for the whole acquire timeout is a saturated broker in
    /// front of a healthy database: opening the breaker would turn a
    /// traffic peak into a blackout of the whole recovery time. Answers
    /// (SQL errors, permission errors, no rows, cancelled statements) are
    /// the database working.
    fn trips_breaker(&self) -> bool {
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
    use super::*;
    use crate::resilience::BackendError;

    #[test]
    fn only_connection_failures_trip_the_breaker_or_retry() {
        let message = || "m".to_owned();
        for answer in [
            DatabaseError::PoolTimeout,
            DatabaseError::InvalidArgument(message()),
            DatabaseError::PermissionDenied(message()),
            DatabaseError::AlreadyExists(message()),
            DatabaseError::FailedPrecondition(message()),
            DatabaseError::Aborted(message()),
            DatabaseError::ResourceExhausted(message()),
            DatabaseError::DeadlineExceeded(message()),
            DatabaseError::Internal(message()),
        ] {
            assert!(!answer.trips_breaker(), "{answer:?} must not trip");
            assert!(!answer.is_transient(), "{answer:?} must not be retried");
        }
        let down = DatabaseError::Unavailable(message());
        assert!(down.trips_breaker() && down.is_transient());
    }
}

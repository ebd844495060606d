//! Errors of lease stores.

use crate::error::Cause;

/// A failed lease-store call. Backend failures keep the backend's own error as their
/// [`source`](std::error::Error::source): print one with [`crate::error::Report`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The write's condition did not hold (another worker changed the lease, or it already
    /// exists). Nothing was written. Not retryable: re-read the lease and decide again.
    #[error("condition failed on lease {key}")]
    ConditionFailed {
        /// The lease key.
        key: String,
    },
    /// No lease has this key.
    #[error("lease {key} not found")]
    NotFound {
        /// The lease key.
        key: String,
    },
    /// The store is throttling requests; retry after a backoff.
    #[error("lease store throttled: {message}")]
    #[non_exhaustive]
    Throttled {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The store could not be reached or failed internally; retry after a backoff. The write may
    /// or may not have been applied.
    #[error("lease store unavailable: {message}")]
    #[non_exhaustive]
    Unavailable {
        /// What went wrong.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// A stored item is not a valid lease (wrong attribute type, missing key, garbage checkpoint).
    #[error("lease {key} is malformed: {reason}")]
    Malformed {
        /// The lease key, or a description of the item when it has none.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The call did not answer within its deadline. Retryable; a write may or may not have
    /// been applied (the next conditional write tells).
    #[error("lease store call {operation} timed out after {after:?}")]
    TimedOut {
        /// The operation.
        operation: &'static str,
        /// The deadline it ran into.
        after: std::time::Duration,
    },
    /// The lease table does not exist. Not retryable: create it (or let the builder do so).
    #[error("lease table {table} not found: {message}")]
    #[non_exhaustive]
    TableNotFound {
        /// The table.
        table: String,
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The caller is not allowed to use the table (IAM policy, KMS key). Not retryable.
    #[error("access to the lease table denied: {message}")]
    #[non_exhaustive]
    AccessDenied {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The credentials were rejected (unknown key, bad signature, expired token). Not
    /// retryable with the same credentials.
    #[error("lease store rejected the credentials: {message}")]
    #[non_exhaustive]
    CredentialsRejected {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The store does not support the operation (see
    /// [`StoreCapabilities`](super::StoreCapabilities)). Nothing was written. Not retryable.
    #[error("the lease store does not support {operation}")]
    Unsupported {
        /// The operation.
        operation: &'static str,
    },
    /// Any other backend error (validation, ...). Not retryable.
    #[error("lease store error: {message}")]
    #[non_exhaustive]
    Backend {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
}

impl LeaseError {
    /// [`LeaseError::Throttled`].
    pub fn throttled(message: impl Into<String>) -> Self {
        Self::Throttled {
            message: message.into(),
            source: None,
        }
    }

    /// [`LeaseError::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`LeaseError::TableNotFound`].
    pub fn table_not_found(table: impl Into<String>, message: impl Into<String>) -> Self {
        Self::TableNotFound {
            table: table.into(),
            message: message.into(),
            source: None,
        }
    }

    /// [`LeaseError::AccessDenied`].
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::AccessDenied {
            message: message.into(),
            source: None,
        }
    }

    /// [`LeaseError::CredentialsRejected`].
    pub fn credentials_rejected(message: impl Into<String>) -> Self {
        Self::CredentialsRejected {
            message: message.into(),
            source: None,
        }
    }

    /// [`LeaseError::Backend`].
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// This error with `cause` as its source (variants that carry a backend message; the
    /// others are returned unchanged).
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        match &mut self {
            Self::Throttled { source, .. }
            | Self::Unavailable { source, .. }
            | Self::TableNotFound { source, .. }
            | Self::AccessDenied { source, .. }
            | Self::CredentialsRejected { source, .. }
            | Self::Backend { source, .. } => *source = Some(Cause::new(cause)),
            _ => {}
        }
        self
    }

    /// Whether retrying the same call after a backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Unavailable { .. } | Self::TimedOut { .. }
        )
    }

    /// Whether no retry can help until an operator acts: the table is missing, access is
    /// denied, or the credentials are rejected. A scheduler fails fast on these.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::TableNotFound { .. }
                | Self::AccessDenied { .. }
                | Self::CredentialsRejected { .. }
        )
    }

    /// Whether the lease changed under us (or vanished): the caller's view is stale.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::ConditionFailed { .. } | Self::NotFound { .. })
    }
}

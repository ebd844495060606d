//! Errors of lease stores.

/// A failed lease-store call.
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
    Throttled {
        /// What the backend said.
        message: String,
    },
    /// The store could not be reached or failed internally; retry after a backoff. The write may
    /// or may not have been applied.
    #[error("lease store unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
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
    TableNotFound {
        /// The table.
        table: String,
        /// What the backend said.
        message: String,
    },
    /// The caller is not allowed to use the table (IAM policy, KMS key). Not retryable.
    #[error("access to the lease table denied: {message}")]
    AccessDenied {
        /// What the backend said.
        message: String,
    },
    /// The credentials were rejected (unknown key, bad signature, expired token). Not
    /// retryable with the same credentials.
    #[error("lease store rejected the credentials: {message}")]
    CredentialsRejected {
        /// What the backend said.
        message: String,
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
    Backend {
        /// What the backend said.
        message: String,
    },
}

impl LeaseError {
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

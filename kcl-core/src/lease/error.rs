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
    /// Any other backend error (permissions, missing table, validation). Not retryable.
    #[error("lease store error: {message}")]
    Backend {
        /// What the backend said.
        message: String,
    },
}

impl LeaseError {
    /// Whether retrying the same call after a backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. })
    }

    /// Whether the lease changed under us (or vanished): the caller's view is stale.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::ConditionFailed { .. } | Self::NotFound { .. })
    }
}

//! Errors of the Kinesis data plane, independent of any SDK.

/// Which quota a throttled call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThrottleKind {
    /// `ProvisionedThroughputExceededException`: a shard's read or write quota.
    ProvisionedThroughputExceeded,
    /// `KMSThrottlingException`: the KMS key's request quota (encrypted streams).
    KmsThrottling,
    /// `LimitExceededException`: a control-plane call rate (ListShards, SubscribeToShard, …).
    LimitExceeded,
}

impl std::fmt::Display for ThrottleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ProvisionedThroughputExceeded => "ProvisionedThroughputExceeded",
            Self::KmsThrottling => "KMSThrottling",
            Self::LimitExceeded => "LimitExceeded",
        })
    }
}

/// A failed Kinesis call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KinesisError {
    /// The shard iterator is older than 5 minutes. Not retryable as is: get a new iterator after
    /// the last sequence number delivered.
    #[error("shard iterator expired: {message}")]
    ExpiredIterator {
        /// What the backend said.
        message: String,
    },
    /// A quota was exceeded; retry after a backoff.
    #[error("throttled ({kind}): {message}")]
    Throttled {
        /// The quota.
        kind: ThrottleKind,
        /// What the backend said.
        message: String,
    },
    /// The stream, shard or consumer does not exist (deleted, or a closed shard past retention).
    #[error("resource not found: {message}")]
    ResourceNotFound {
        /// What the backend said.
        message: String,
    },
    /// The resource is busy: a second subscription for one consumer and shard, a stream being
    /// resharded, a consumer name already registered. Retry after a backoff.
    #[error("resource in use: {message}")]
    ResourceInUse {
        /// What the backend said.
        message: String,
    },
    /// The request is invalid (bad iterator, sequence number outside the shard, limit out of
    /// range, record too large, …). Retrying the same call cannot help.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What the backend said.
        message: String,
    },
    /// Credentials or permissions were refused (including KMS access errors).
    #[error("access denied: {message}")]
    AccessDenied {
        /// What the backend said.
        message: String,
    },
    /// The credentials were rejected (unknown key, bad signature, expired token).
    #[error("credentials rejected: {message}")]
    CredentialsRejected {
        /// What the backend said.
        message: String,
    },
    /// The call did not answer within its deadline. Retryable.
    #[error("Kinesis call {operation} timed out after {after:?}")]
    TimedOut {
        /// The operation.
        operation: &'static str,
        /// The deadline it ran into.
        after: std::time::Duration,
    },
    /// The service could not be reached or failed internally (timeouts, 5xx, connection reset).
    #[error("Kinesis unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
}

impl KinesisError {
    /// Whether the same call may succeed if retried after a backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. }
                | Self::ResourceInUse { .. }
                | Self::Unavailable { .. }
                | Self::TimedOut { .. }
        )
    }

    /// Whether no retry can help until an operator acts: access denied or credentials
    /// rejected. (A missing stream is `ResourceNotFound`, fatal only in single-stream mode.)
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::AccessDenied { .. } | Self::CredentialsRejected { .. }
        )
    }

    /// Whether this is a throttle of any kind.
    pub fn is_throttle(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    #[cfg(feature = "testing")]
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::ResourceNotFound {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
        }
    }

    #[cfg(feature = "testing")]
    pub(crate) fn in_use(message: impl Into<String>) -> Self {
        Self::ResourceInUse {
            message: message.into(),
        }
    }

    /// A `ProvisionedThroughputExceeded` throttle.
    pub fn throughput_exceeded(message: impl Into<String>) -> Self {
        Self::Throttled {
            kind: ThrottleKind::ProvisionedThroughputExceeded,
            message: message.into(),
        }
    }
}

//! Errors of the Kinesis data plane, independent of any SDK.

use crate::error::Cause;

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

/// A failed Kinesis call. Backend failures keep the backend's own error as their
/// [`source`](std::error::Error::source): print one with [`crate::error::Report`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KinesisError {
    /// The shard iterator is older than 5 minutes. Not retryable as is: get a new iterator after
    /// the last sequence number delivered.
    #[error("shard iterator expired: {message}")]
    #[non_exhaustive]
    ExpiredIterator {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The position asked for is older than the stream's retention: its records were trimmed
    /// (DynamoDB Streams' `TrimmedDataAccessException`; Kinesis answers such reads from its
    /// oldest record instead). Not retryable: reading on means passing over lost records.
    #[error("data trimmed: {message}")]
    #[non_exhaustive]
    TrimmedData {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// A quota was exceeded; retry after a backoff.
    #[error("throttled ({kind}): {message}")]
    #[non_exhaustive]
    Throttled {
        /// The quota.
        kind: ThrottleKind,
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The stream, shard or consumer does not exist (deleted, or a closed shard past retention).
    #[error("resource not found: {message}")]
    #[non_exhaustive]
    ResourceNotFound {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The resource is busy: a second subscription for one consumer and shard, a stream being
    /// resharded, a consumer name already registered. Retry after a backoff.
    #[error("resource in use: {message}")]
    #[non_exhaustive]
    ResourceInUse {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The request is invalid (bad iterator, sequence number outside the shard, limit out of
    /// range, record too large, …). Retrying the same call cannot help.
    #[error("invalid argument: {message}")]
    #[non_exhaustive]
    InvalidArgument {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Credentials or permissions were refused (including KMS access errors).
    #[error("access denied: {message}")]
    #[non_exhaustive]
    AccessDenied {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The credentials were rejected (unknown key, bad signature, expired token).
    #[error("credentials rejected: {message}")]
    #[non_exhaustive]
    CredentialsRejected {
        /// What the backend said.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
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
    #[non_exhaustive]
    Unavailable {
        /// What went wrong.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
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

    /// [`KinesisError::ExpiredIterator`].
    pub fn expired_iterator(message: impl Into<String>) -> Self {
        Self::ExpiredIterator {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::TrimmedData`].
    pub fn trimmed(message: impl Into<String>) -> Self {
        Self::TrimmedData {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::Throttled`].
    pub fn throttled(kind: ThrottleKind, message: impl Into<String>) -> Self {
        Self::Throttled {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A `ProvisionedThroughputExceeded` throttle.
    pub fn throughput_exceeded(message: impl Into<String>) -> Self {
        Self::throttled(ThrottleKind::ProvisionedThroughputExceeded, message)
    }

    /// [`KinesisError::ResourceNotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::ResourceNotFound {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::ResourceInUse`].
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::ResourceInUse {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::AccessDenied`].
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::AccessDenied {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::CredentialsRejected`].
    pub fn credentials_rejected(message: impl Into<String>) -> Self {
        Self::CredentialsRejected {
            message: message.into(),
            source: None,
        }
    }

    /// [`KinesisError::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// This error with `cause` as its source (variants that carry a backend message; a
    /// timeout is returned unchanged).
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        match &mut self {
            Self::ExpiredIterator { source, .. }
            | Self::TrimmedData { source, .. }
            | Self::Throttled { source, .. }
            | Self::ResourceNotFound { source, .. }
            | Self::ResourceInUse { source, .. }
            | Self::InvalidArgument { source, .. }
            | Self::AccessDenied { source, .. }
            | Self::CredentialsRejected { source, .. }
            | Self::Unavailable { source, .. } => *source = Some(Cause::new(cause)),
            Self::TimedOut { .. } => {}
        }
        self
    }
}

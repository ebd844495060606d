//! What happens when a processor fails a batch — instead of the KCL's silent skip.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::Record;
use crate::processor::{ProcessorError, ShardInfo};

/// How a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessorFailure {
    /// `process_records` returned an error.
    Error(String),
    /// `process_records` panicked; the panic was contained in the shard's task.
    Panic(String),
}

impl fmt::Display for ProcessorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => write!(f, "error: {e}"),
            Self::Panic(p) => write!(f, "panic: {p}"),
        }
    }
}

/// Receives batches the processor could not handle, under [`FailurePolicy::DeadLetter`].
///
/// # Contract
///
/// - `Ok` means the batch is stored durably: the shard then moves past it (and checkpoints
///   past it when the processor does), so an `Ok` for a batch not stored loses it;
/// - an error is retried with backoff, for ever: the shard does not move past the batch until
///   the handler succeeds (or the lease goes);
/// - it may be called again with the same batch (after a crash or lease loss before the next
///   checkpoint): handlers must tolerate duplicates.
#[async_trait]
pub trait DeadLetterHandler: Send + Sync + fmt::Debug + 'static {
    /// Stores the batch somewhere safe. An error is retried with backoff: the batch is only
    /// passed over once this returns `Ok`.
    async fn handle(
        &self,
        shard: &ShardInfo,
        records: &[Record],
        failure: &ProcessorFailure,
    ) -> Result<(), ProcessorError>;
}

/// When retrying a failed batch (or, in key-parallel mode, a failed record) gives up. A limit
/// that is `None` does not apply; with both set, whichever is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetryLimit {
    /// Attempts in all, the first included (Lambda's `MaximumRetryAttempts` + 1).
    pub max_attempts: Option<u32>,
    /// Age of the oldest record (since Kinesis accepted it) past which it is not retried again
    /// (Lambda's `MaximumRecordAgeInSeconds`).
    pub max_record_age: Option<Duration>,
}

impl RetryLimit {
    /// At most `n` attempts (at least 1).
    pub fn attempts(n: u32) -> Self {
        Self {
            max_attempts: Some(n),
            max_record_age: None,
        }
    }

    /// Give up once the oldest record is older than `age` (attempts unlimited).
    pub fn record_age(age: Duration) -> Self {
        Self {
            max_attempts: None,
            max_record_age: Some(age),
        }
    }

    /// Also give up once the oldest record is older than `age`.
    pub fn or_record_age(mut self, age: Duration) -> Self {
        self.max_record_age = Some(age);
        self
    }

    /// Whether another attempt is out of bounds after `attempts` failed ones, the oldest record
    /// being `age` old.
    pub fn exhausted(&self, attempts: u32, age: Duration) -> bool {
        self.max_attempts.is_some_and(|n| attempts >= n)
            || self.max_record_age.is_some_and(|max| age >= max)
    }

    /// Checks the limit; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match (self.max_attempts, self.max_record_age) {
            (None, None) => Err("a retry limit needs max_attempts or max_record_age".into()),
            (Some(0), _) => Err("max_attempts must be at least 1".into()),
            (_, Some(age)) if age > crate::limits::MAX_SETTING_DURATION => {
                Err(format!("max_record_age {age:?} is longer than a year"))
            }
            _ => Ok(()),
        }
    }
}

/// What happens to a batch once its retries are exhausted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Exhausted {
    /// Skip it, counted and logged with its sequence numbers.
    Skip,
    /// Hand it to a dead-letter handler (retried until stored), then continue.
    DeadLetter(Arc<dyn DeadLetterHandler>),
    /// Stop processing the shard and release its lease.
    StopShard,
}

/// What a shard consumer does when `process_records` fails or panics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Retry the same batch with exponential backoff (and jitter), forever: the shard never
    /// moves past a record that was not processed. The default.
    Retry {
        /// First delay.
        min_backoff: Duration,
        /// Largest delay.
        max_backoff: Duration,
    },
    /// Retry with backoff within `limit`, then do `then` (Lambda's bounded retries and
    /// on-failure destination).
    RetryThen {
        /// First delay.
        min_backoff: Duration,
        /// Largest delay.
        max_backoff: Duration,
        /// When to give up.
        limit: RetryLimit,
        /// What to do then.
        then: Exhausted,
    },
    /// Skip the batch at its first failure, counted and logged with its sequence numbers (the
    /// KCL's behaviour, made visible).
    Skip,
    /// Hand the batch to a dead-letter handler at its first failure, then continue.
    DeadLetter(Arc<dyn DeadLetterHandler>),
    /// Stop processing the shard at the first failure and release its lease (another worker,
    /// or this one after a restart, retries from the last checkpoint).
    StopShard,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self::Retry {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the policy does after a failed attempt.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Retry,
    Give(Exhausted),
}

impl FailurePolicy {
    /// Bounded retries with the default backoff (200 ms doubling to 30 s).
    pub fn retry_then(limit: RetryLimit, then: Exhausted) -> Self {
        Self::RetryThen {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            limit,
            then,
        }
    }

    /// The retry policy between attempts (no bound of its own: `decide` ends the retries).
    pub(crate) fn retry(&self) -> crate::retry::RetryConfig {
        let (min, max) = self.backoff();
        crate::retry::RetryConfig::new(min, max)
    }

    /// The backoff between attempts.
    pub(crate) fn backoff(&self) -> (Duration, Duration) {
        match self {
            Self::Retry {
                min_backoff,
                max_backoff,
            }
            | Self::RetryThen {
                min_backoff,
                max_backoff,
                ..
            } => (*min_backoff, *max_backoff),
            _ => (Duration::from_millis(200), Duration::from_secs(30)),
        }
    }

    /// After `attempts` failed attempts of a batch whose oldest record is `age` old.
    pub(crate) fn decide(&self, attempts: u32, age: Duration) -> Decision {
        match self {
            Self::Retry { .. } => Decision::Retry,
            Self::RetryThen { limit, then, .. } => {
                if limit.exhausted(attempts, age) {
                    Decision::Give(then.clone())
                } else {
                    Decision::Retry
                }
            }
            Self::Skip => Decision::Give(Exhausted::Skip),
            Self::DeadLetter(h) => Decision::Give(Exhausted::DeadLetter(h.clone())),
            Self::StopShard => Decision::Give(Exhausted::StopShard),
        }
    }
}

impl Decision {
    /// The `Outcome` label of the `ProcessorErrors` metric.
    pub(crate) fn outcome_label(&self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Give(Exhausted::Skip) => "skip",
            Self::Give(Exhausted::DeadLetter(_)) => "dead_letter",
            Self::Give(Exhausted::StopShard) => "stop",
        }
    }
}

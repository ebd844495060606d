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
    /// Skip the batch, counted and logged with its sequence numbers (the KCL's behaviour, made
    /// visible).
    Skip,
    /// Hand the batch to a dead-letter handler, then continue.
    DeadLetter(Arc<dyn DeadLetterHandler>),
    /// Stop processing the shard and release its lease (another worker, or this one after a
    /// restart, retries from the last checkpoint).
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

impl FailurePolicy {
    /// The `Outcome` label of the `ProcessorErrors` metric.
    pub(crate) fn outcome_label(&self) -> &'static str {
        match self {
            Self::Retry { .. } => "retry",
            Self::Skip => "skip",
            Self::DeadLetter(_) => "dead_letter",
            Self::StopShard => "stop",
        }
    }
}

//! Retrieval: how records reach a shard consumer. Polling (GetRecords) lives here; enhanced
//! fan-out implements the same [`RecordsPublisher`] in `kcl-efo`, so a shard consumer cannot
//! tell them apart.

mod pacing;
mod polling;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OwnedSemaphorePermit;

pub use polling::{CAUGHT_UP, PollingConfig, PollingRetrieval};

use crate::aggregation::{DeaggregationReport, Deaggregator};
use crate::kinesis::KinesisError;
use crate::model::{
    ChildShard, ExtendedSequenceNumber, InitialPosition, Record, Shard, StartingPosition,
    StreamIdentity,
};

/// One batch for the processor: user records in order, already unpacked.
#[derive(Debug, Default)]
pub struct RecordsBatch {
    /// User records.
    pub records: Vec<Record>,
    /// How far behind the tip of the shard the batch was read.
    pub millis_behind_latest: u64,
    /// `Some(children)` when this batch ends a closed shard.
    pub shard_end: Option<Vec<ChildShard>>,
    /// What unpacking found (pass-throughs, hash-range drops).
    pub deaggregation: DeaggregationReport,
    /// Prefetch capacity held by this batch, released when it is dropped.
    pub(crate) _permits: Vec<OwnedSemaphorePermit>,
}

/// Why a shard's records cannot be read any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// The shard (or its stream) no longer exists: deleted, or past retention.
    #[error("shard is gone: {0}")]
    ShardGone(KinesisError),
    /// A non-retryable error (access denied, invalid request).
    #[error("retrieval failed: {0}")]
    Fatal(KinesisError),
    /// The retrieval was stopped.
    #[error("retrieval stopped")]
    Stopped,
}

/// Where a shard consumer starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFrom {
    /// The lease's checkpoint.
    pub checkpoint: ExtendedSequenceNumber,
    /// The application's initial position (for `AT_TIMESTAMP` checkpoints).
    pub initial_position: InitialPosition,
}

impl StartFrom {
    /// The iterator position to start at, and the record position up to which user records
    /// must be skipped (a checkpoint inside a KPL aggregate resumes at the next sub-record).
    pub fn starting_position(&self) -> Option<(StartingPosition, Option<ExtendedSequenceNumber>)> {
        Some(match &self.checkpoint {
            ExtendedSequenceNumber::TrimHorizon => (StartingPosition::TrimHorizon, None),
            ExtendedSequenceNumber::Latest => (StartingPosition::Latest, None),
            ExtendedSequenceNumber::AtTimestamp => match self.initial_position {
                InitialPosition::AtTimestamp(t) => (StartingPosition::AtTimestamp(t), None),
                // A lease written AT_TIMESTAMP by an application now configured otherwise
                // (the Java KCL then sends a request without a timestamp and fails): nothing
                // says which time, so read everything rather than lose records. The consumer
                // warns.
                _ => (StartingPosition::TrimHorizon, None),
            },
            ExtendedSequenceNumber::Sequence { sequence, .. } => (
                StartingPosition::AtSequenceNumber(sequence.clone()),
                Some(self.checkpoint.clone()),
            ),
            ExtendedSequenceNumber::ShardEnd => return None,
        })
    }
}

/// Delivers one shard's records in order.
///
/// # Contract
///
/// - batches come in shard order with no gap and no repeat: the first starts right after the
///   `StartFrom` position (inside an aggregate when the checkpoint is), each later one right
///   after the previous; KPL aggregates arrive unpacked, with sub-sequence numbers;
/// - a batch with `shard_end` set is the last; after it, or after an error, the publisher yields
///   nothing more (the shard consumer drops it and starts a new one to retry);
/// - every call to Kinesis behind it has a deadline, so `next_batch` never waits on a hung call
///   longer than that deadline plus its backoff (it may wait indefinitely for new records);
/// - dropping the publisher stops its reads.
///
/// Held to this by the polling and fan-out tests, and by the fleet simulation, which runs both.
#[async_trait]
pub trait RecordsPublisher: Send {
    /// The next batch. Waits while nothing new is available. After a batch with `shard_end`,
    /// or an error, no more batches come.
    async fn next_batch(&mut self) -> Result<RecordsBatch, RetrievalError>;
}

/// What a retrieval needs to start a publisher for one shard.
#[derive(Debug, Clone)]
pub struct ShardRead {
    /// The stream.
    pub stream: StreamIdentity,
    /// The shard (its hash range is used for the optional hash-range check).
    pub shard: Shard,
    /// Where to start.
    pub start: StartFrom,
    /// Unpacks KPL aggregates.
    pub deaggregator: Deaggregator,
    /// Seed for jitter, so runs reproduce.
    pub seed: u64,
}

/// Creates a records publisher per shard: polling or fan-out.
///
/// # Contract
///
/// `start` returns at once (no I/O on the caller's task) with a publisher that keeps the
/// [`RecordsPublisher`] contract; publishers of different shards are independent (one shard's
/// errors or slowness do not hold up another's).
pub trait Retrieval: Send + Sync + std::fmt::Debug + 'static {
    /// Starts reading one shard. The publisher stops when dropped.
    fn start(&self, read: ShardRead) -> Box<dyn RecordsPublisher>;
}

/// A retrieval shared by the scheduler's shard consumers.
pub type SharedRetrieval = Arc<dyn Retrieval>;

/// The longest a caught-up or backing-off reader waits between calls.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Drops user records at or before `resume` (a checkpoint, possibly inside an aggregate).
/// Returns whether a record beyond it was seen: records come in order, so nothing later needs
/// skipping.
pub fn skip_through(records: &mut Vec<Record>, resume: &ExtendedSequenceNumber) -> bool {
    records.retain(|r| r.extended_sequence_number() > *resume);
    !records.is_empty()
}

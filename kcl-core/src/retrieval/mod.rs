//! Retrieval: how records reach a shard consumer. Polling (GetRecords) lives here; enhanced
//! fan-out implements the same [`RecordsPublisher`] in `kcl-efo`, so a shard consumer cannot
//! tell them apart.

mod pacing;
mod polling;
mod trimmed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use polling::{CAUGHT_UP, PollingConfig, PollingRetrieval};
pub use trimmed::{TrimmedDataPolicy, TrimmedGap};

use crate::kinesis::KinesisError;
use crate::model::{
    ChildShard, ExtendedSequenceNumber, InitialPosition, Record, Shard, StartingPosition,
    StreamIdentity,
};

/// One read of a shard: Kinesis records as stored, in order. KPL aggregates are *not* unpacked
/// here: the shard consumer unpacks them (and resumes inside an aggregate), once, whatever the
/// retrieval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordsBatch {
    /// Kinesis records in sequence order (possibly KPL aggregates).
    pub records: Vec<Record>,
    /// How far behind the tip of the shard the batch was read.
    pub millis_behind_latest: u64,
    /// `Some(children)` when this batch ends a closed shard.
    pub shard_end: Option<Vec<ChildShard>>,
}

impl RecordsBatch {
    /// The batch that ends a closed shard (with its children).
    pub fn shard_end(children: Vec<ChildShard>) -> Self {
        Self {
            shard_end: Some(children),
            ..Self::default()
        }
    }
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
    /// Records were trimmed before they were read (see [`TrimmedDataPolicy`]).
    #[error("{0}")]
    Trimmed(TrimmedGap),
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
    /// The iterator position to start reading at; `None` for a shard already at SHARD_END.
    /// A sequence checkpoint starts *at* the checkpointed record, because it may be a KPL
    /// aggregate whose later sub-records are not processed yet; the shard consumer drops what
    /// was already processed.
    pub fn starting_position(&self) -> Option<StartingPosition> {
        Some(match &self.checkpoint {
            ExtendedSequenceNumber::TrimHorizon => StartingPosition::TrimHorizon,
            ExtendedSequenceNumber::Latest => StartingPosition::Latest,
            ExtendedSequenceNumber::AtTimestamp => match self.initial_position {
                InitialPosition::AtTimestamp(t) => StartingPosition::AtTimestamp(t),
                // A lease written AT_TIMESTAMP by an application now configured otherwise
                // (the Java KCL then sends a request without a timestamp and fails): nothing
                // says which time, so read everything rather than lose records. The consumer
                // warns.
                _ => StartingPosition::TrimHorizon,
            },
            ExtendedSequenceNumber::Sequence { sequence, .. } => {
                StartingPosition::AtSequenceNumber(sequence.clone())
            }
            ExtendedSequenceNumber::ShardEnd => return None,
        })
    }
}

/// Delivers one shard's records in order.
///
/// # Contract
///
/// - batches come in shard order with no gap and no repeat: the first starts at
///   [`StartFrom::starting_position`], each later one right after the previous; records are
///   Kinesis records as stored (the consumer unpacks KPL aggregates and skips what the
///   checkpoint already covers);
/// - for a shard already at SHARD_END (no starting position) the only batch is
///   [`RecordsBatch::shard_end`] with no children;
/// - a batch with `shard_end` set is the last; after it, or after an error, the publisher yields
///   nothing more (the shard consumer drops it and starts a new one to retry);
/// - a position the source says was trimmed ([`KinesisError::TrimmedData`]) ends the publisher
///   with [`RetrievalError::Trimmed`], never with a silent jump ahead;
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

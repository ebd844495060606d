//! What an application implements: a record processor per shard, and a factory for them.
//!
//! ```
//! use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
//!
//! struct Printer;
//!
//! #[async_trait::async_trait]
//! impl ShardRecordProcessor for Printer {
//!     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
//!         for record in input.records {
//!             println!("{}: {} bytes", record.partition_key, record.data.len());
//!         }
//!         input.checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! The other methods have defaults that lose nothing: `shard_ended` and `shutdown_requested`
//! checkpoint everything delivered (every delivered batch was processed successfully).

use async_trait::async_trait;
use bytes::Bytes;

use crate::checkpoint::Checkpointer;
use crate::model::{ChildShard, ExtendedSequenceNumber, Record, ShardId, StreamIdentity};

/// An application error from a processor callback. Any error type converts into it.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// Which shard a processor is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The stream.
    pub stream: StreamIdentity,
    /// The shard.
    pub shard_id: ShardId,
    /// The lease key (the shard id, or a multi-stream key).
    pub lease_key: String,
    /// The shard's parents, as recorded in its lease.
    pub parent_shard_ids: Vec<ShardId>,
}

/// What `initialize` learns.
#[derive(Debug, Clone, PartialEq)]
pub struct InitializationInput {
    /// The shard.
    pub shard: ShardInfo,
    /// Where processing resumes: records after this position are delivered.
    pub checkpoint: ExtendedSequenceNumber,
    /// A prepared (two-phase) checkpoint that was not committed, if any.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// Application state stored with the pending checkpoint.
    pub pending_checkpoint_state: Option<Bytes>,
}

/// One batch to process.
#[derive(Debug)]
pub struct ProcessRecordsInput<'a> {
    /// The user records, in order (KPL aggregates already unpacked).
    pub records: &'a [Record],
    /// Checkpoints this shard; [`Checkpointer::handle`] gives a handle for checkpointing later
    /// from another task (after an asynchronous flush).
    pub checkpointer: &'a mut Checkpointer,
    /// How far behind the tip of the shard this batch was read.
    pub millis_behind_latest: u64,
    /// The shard's children, in the last batch of a closed shard.
    pub child_shards: Option<&'a [ChildShard]>,
    /// Whether this is the last batch of a closed shard.
    pub is_at_shard_end: bool,
}

/// Why a processor is being told its lease is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLostInput {
    /// The shard.
    pub shard: ShardInfo,
}

/// Processes the records of one shard. One instance per shard lease, so `&mut self` state is
/// natural; it never sees two shards or two concurrent calls.
///
/// # Contract
///
/// What the shard consumer guarantees an implementation (the scheduler tests, the fleet
/// simulation and the chaos run hold it to this):
///
/// - calls come one at a time, in this order: `initialize` until it succeeds (an error or a
///   panic is retried with backoff; the instance is kept), then `process_records` for each
///   batch in shard order, then exactly one of `shard_ended` (retried until it succeeds),
///   `shutdown_requested` (once) or `lease_lost` (once); nothing after that;
/// - a batch that fails goes to the failure policy; by default it is delivered again, so
///   `process_records` must tolerate seeing records again — delivery is at least once, and
///   records after the last checkpoint are delivered again after a crash or lost lease;
/// - a checkpoint is fenced by the lease: once the lease is lost or handed off, checkpoints
///   (through the [`Checkpointer`] or a [`CheckpointHandle`](crate::checkpoint::CheckpointHandle)
///   taken from it) fail with `LeaseLost` and write nothing;
/// - a callback that never returns is abandoned at shutdown once its share of the shutdown
///   timeout is spent.
#[async_trait]
pub trait ShardRecordProcessor: Send + 'static {
    /// Called before the first batch, with where processing resumes. Retried with backoff
    /// until it succeeds (or the lease goes), so it may run more than once.
    async fn initialize(&mut self, _input: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    /// Processes one batch. Returning an error (or panicking) hands the batch to the failure
    /// policy: by default it is retried with backoff and never skipped.
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError>;

    /// The lease was lost (taken by another worker, or expired): stop; checkpointing is no longer
    /// possible. Called at most once, instead of `shard_ended` / `shutdown_requested`.
    async fn lease_lost(&mut self, _input: LeaseLostInput) {}

    /// Records of this shard were trimmed (past the stream's retention) before they were read.
    /// Called once per gap, before the [`TrimmedDataPolicy`](crate::retrieval::TrimmedDataPolicy)
    /// acts: processing then stops (the default) or goes on after the gap. Informational — to
    /// backfill the range from elsewhere, say; the default does nothing (kcl-rs logs and counts
    /// the gap either way).
    async fn records_trimmed(&mut self, _gap: &crate::retrieval::TrimmedGap) {}

    /// Every record of the closed shard was processed. The shard must be checkpointed at its end;
    /// the default does that, and if an override does not, kcl-rs writes SHARD_END itself (every
    /// record was processed successfully), so a shard never gets stuck at its end. Retried with
    /// backoff until it succeeds.
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    /// The worker is shutting down or handing the shard to another worker: last chance to
    /// checkpoint. The default checkpoints everything delivered. A processor that flushes in the
    /// background waits for its flusher here: once this returns, the hand-off ends (or the
    /// lease is released) and later checkpoints through handles are fenced.
    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A boxed processor is a processor, so factories may return `Box<P>` or
/// `Box<dyn ShardRecordProcessor>` as well as a processor itself.
#[async_trait]
impl<P: ShardRecordProcessor + ?Sized> ShardRecordProcessor for Box<P> {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        (**self).initialize(input).await
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        (**self).process_records(input).await
    }

    async fn lease_lost(&mut self, input: LeaseLostInput) {
        (**self).lease_lost(input).await
    }

    async fn records_trimmed(&mut self, gap: &crate::retrieval::TrimmedGap) {
        (**self).records_trimmed(gap).await
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        (**self).shard_ended(checkpointer).await
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        (**self).shutdown_requested(checkpointer).await
    }
}

/// Creates a processor for each shard lease this worker gains.
///
/// Any closure from `&ShardInfo` to a processor is a factory, with no type annotations
/// beyond the argument's:
///
/// ```
/// use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor, ShardRecordProcessorFactory};
///
/// struct Printer;
///
/// #[kcl_core::async_trait]
/// impl ShardRecordProcessor for Printer {
///     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
///         println!("{} records", input.records.len());
///         Ok(())
///     }
/// }
///
/// fn takes(_: impl ShardRecordProcessorFactory) {}
/// takes(|_: &ShardInfo| Printer);
/// takes(|_: &ShardInfo| Box::new(Printer));
/// ```
pub trait ShardRecordProcessorFactory: Send + Sync + 'static {
    /// A new processor for `shard`.
    fn create(&self, shard: &ShardInfo) -> Box<dyn ShardRecordProcessor>;
}

impl<F, P> ShardRecordProcessorFactory for F
where
    F: Fn(&ShardInfo) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    fn create(&self, shard: &ShardInfo) -> Box<dyn ShardRecordProcessor> {
        Box::new(self(shard))
    }
}

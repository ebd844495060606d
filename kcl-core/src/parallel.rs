//! Per-partition-key parallelism inside a shard.
//!
//! [`KeyParallelProcessor`] runs a per-record [`RecordHandler`] on `parallelism` lanes: records
//! with the same partition key go to the same lane, in order; different keys run concurrently.
//! The checkpoint advances only to the *watermark* — the highest position below which every
//! record is done — so a crash never skips an unfinished record (records after the watermark are
//! redelivered). In-flight records and bytes are bounded: a full pipeline holds back
//! `process_records`, and so retrieval (backpressure). A failing record is retried with backoff
//! on its lane (its key waits; other keys go on) unless the policy skips it. Shutdown waits for
//! in-flight records, then checkpoints; a lost lease cancels them at once.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use backon::BackoffBuilder;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::checkpoint::Checkpointer;
use crate::model::{ExtendedSequenceNumber, Record};
use crate::processor::{
    InitializationInput, LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo,
    ShardRecordProcessor, ShardRecordProcessorFactory,
};

/// Where a record handler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordContext {
    /// The shard.
    pub shard: ShardInfo,
    /// The checkpoint this shard's processing resumed from.
    pub started_at: ExtendedSequenceNumber,
}

/// Handles one record. Called concurrently for different partition keys, in order for one key.
#[async_trait]
pub trait RecordHandler: Send + Sync + 'static {
    /// Handles `record`; an error is retried with backoff (or skipped, per the policy).
    async fn handle(&self, context: &RecordContext, record: &Record) -> Result<(), ProcessorError>;
}

/// What happens to a record whose handler fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecordFailurePolicy {
    /// Retry with backoff until it succeeds (its key waits, other keys go on). The default.
    #[default]
    Retry,
    /// Log and skip the record.
    Skip,
}

/// Settings of key-parallel processing.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelConfig {
    /// Lanes per shard (P).
    pub parallelism: usize,
    /// Most records dispatched but not done, per shard.
    pub max_in_flight_records: usize,
    /// Most bytes of record data dispatched but not done, per shard.
    pub max_in_flight_bytes: usize,
    /// Per-record failure policy.
    pub failure: RecordFailurePolicy,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// How often the watermark is checkpointed while a batch is being dispatched (besides once
    /// per batch): bounds the checkpoint lag when a full pipeline holds a batch back.
    pub checkpoint_interval: Duration,
}

impl ParallelConfig {
    /// `parallelism` lanes with default bounds (10,000 records, 64 MiB in flight).
    pub fn new(parallelism: usize) -> Self {
        Self {
            parallelism: parallelism.max(1),
            max_in_flight_records: 10_000,
            max_in_flight_bytes: 64 * 1024 * 1024,
            failure: RecordFailurePolicy::Retry,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Positions dispatched, in order, and whether each is done; the watermark is the last position
/// of the done prefix.
#[derive(Debug, Default)]
struct Tracker {
    first: u64,
    pending: VecDeque<(ExtendedSequenceNumber, bool)>,
    watermark: Option<ExtendedSequenceNumber>,
}

impl Tracker {
    fn push(&mut self, position: ExtendedSequenceNumber) -> u64 {
        self.pending.push_back((position, false));
        self.first + self.pending.len() as u64 - 1
    }

    fn complete(&mut self, index: u64) {
        if let Some(entry) = index
            .checked_sub(self.first)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            entry.1 = true;
        }
        while self.pending.front().is_some_and(|(_, done)| *done) {
            let (position, _) = self.pending.pop_front().expect("front exists");
            self.first += 1;
            self.watermark = Some(position);
        }
    }
}

struct Job {
    index: u64,
    record: Record,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// A [`ShardRecordProcessor`] running a [`RecordHandler`] with per-key parallelism.
pub struct KeyParallelProcessor<H: RecordHandler> {
    handler: Arc<H>,
    config: ParallelConfig,
    context: Option<Arc<RecordContext>>,
    lanes: Vec<mpsc::UnboundedSender<Job>>,
    tracker: Arc<Mutex<Tracker>>,
    progress: Arc<Notify>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    checkpointed: Option<ExtendedSequenceNumber>,
    last_checkpoint: tokio::time::Instant,
}

impl<H: RecordHandler> KeyParallelProcessor<H> {
    /// A processor for one shard.
    pub fn new(handler: Arc<H>, config: ParallelConfig) -> Self {
        let records = Arc::new(Semaphore::new(config.max_in_flight_records.max(1)));
        let bytes = Arc::new(Semaphore::new(
            config.max_in_flight_bytes.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Self {
            handler,
            config,
            context: None,
            lanes: Vec::new(),
            tracker: Arc::default(),
            progress: Arc::new(Notify::new()),
            records,
            bytes,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            checkpointed: None,
            last_checkpoint: tokio::time::Instant::now(),
        }
    }

    fn lane_of(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    /// Checkpoints at the watermark if it moved.
    async fn checkpoint_watermark(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let watermark = self.tracker.lock().watermark.clone();
        if let Some(ExtendedSequenceNumber::Sequence {
            sequence,
            sub_sequence,
        }) = &watermark
            && watermark != self.checkpointed
        {
            checkpointer
                .checkpoint_at(sequence.clone(), *sub_sequence)
                .await?;
            self.checkpointed = watermark;
        }
        self.last_checkpoint = tokio::time::Instant::now();
        Ok(())
    }

    /// Waits until every dispatched record is done.
    async fn drain(&self) {
        loop {
            let notified = self.progress.notified();
            if self.tracker.lock().pending.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

impl<H: RecordHandler> Drop for KeyParallelProcessor<H> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl<H: RecordHandler> ShardRecordProcessor for KeyParallelProcessor<H> {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        let context = Arc::new(RecordContext {
            shard: input.shard,
            started_at: input.checkpoint,
        });
        self.context = Some(context.clone());
        for lane in 0..self.config.parallelism {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            self.lanes.push(tx);
            let (handler, tracker, progress, cancel, config, context) = (
                self.handler.clone(),
                self.tracker.clone(),
                self.progress.clone(),
                self.cancel.clone(),
                self.config.clone(),
                context.clone(),
            );
            self.tasks.spawn(async move {
                while let Some(job) = tokio::select! { biased; _ = cancel.cancelled() => None, j = rx.recv() => j } {
                    let mut backoff = backon::ExponentialBuilder::default()
                        .with_min_delay(config.min_backoff)
                        .with_max_delay(config.max_backoff)
                        .without_max_times()
                        .with_jitter()
                        .with_jitter_seed(job.index ^ lane as u64)
                        .build();
                    loop {
                        // A panicking handler must not take its lane (and every key on it) down.
                        let outcome = AssertUnwindSafe(handler.handle(&context, &job.record)).catch_unwind().await;
                        let result = outcome.unwrap_or_else(|_| Err("record handler panicked".into()));
                        match result {
                            Ok(()) => break,
                            Err(e) if config.failure == RecordFailurePolicy::Skip => {
                                error!(shard_id = %context.shard.shard_id, position = %job.record.extended_sequence_number(), error = %e, "record skipped by the failure policy");
                                break;
                            }
                            Err(e) => {
                                warn!(shard_id = %context.shard.shard_id, position = %job.record.extended_sequence_number(), error = %e, "record failed; retrying");
                                let delay = backoff.next().unwrap_or(config.max_backoff);
                                tokio::select! { biased; _ = cancel.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                            }
                        }
                    }
                    tracker.lock().complete(job.index);
                    progress.notify_waiters();
                }
            });
        }
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        for record in input.records {
            // Backpressure: wait for room in the pipeline.
            let records = self.records.clone().acquire_owned().await?;
            let size = record.data.len().clamp(
                1,
                self.config
                    .max_in_flight_bytes
                    .clamp(1, Semaphore::MAX_PERMITS),
            ) as u32;
            let bytes = self.bytes.clone().acquire_many_owned(size).await?;
            let index = self.tracker.lock().push(record.extended_sequence_number());
            let lane = self.lane_of(&record.partition_key);
            self.lanes[lane]
                .send(Job {
                    index,
                    record: record.clone(),
                    _permits: (records, bytes),
                })
                .map_err(|_| "a processing lane stopped")?;
            if self.last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                self.checkpoint_watermark(input.checkpointer).await?;
            }
        }
        self.checkpoint_watermark(input.checkpointer).await
    }

    async fn lease_lost(&mut self, _input: LeaseLostInput) {
        // Nobody may checkpoint any more: stop in-flight work now.
        self.cancel.cancel();
        self.tasks.abort_all();
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.drain().await;
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.drain().await;
        self.checkpoint_watermark(checkpointer).await
    }
}

/// A processor factory running `handler` with per-key parallelism on every shard.
pub fn key_parallel<H: RecordHandler>(
    handler: Arc<H>,
    config: ParallelConfig,
) -> impl ShardRecordProcessorFactory {
    move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
        Box::new(KeyParallelProcessor::new(handler.clone(), config.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SequenceNumber;

    fn pos(n: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::at(SequenceNumber::from_u128(n.into()))
    }

    #[test]
    fn the_watermark_is_the_end_of_the_done_prefix() {
        let mut t = Tracker::default();
        let ids: Vec<u64> = (1..=5).map(|n| t.push(pos(n))).collect();
        t.complete(ids[2]);
        t.complete(ids[1]);
        assert_eq!(t.watermark, None, "the first record is not done");
        t.complete(ids[0]);
        assert_eq!(t.watermark, Some(pos(3)));
        t.complete(ids[4]);
        assert_eq!(t.watermark, Some(pos(3)));
        t.complete(ids[3]);
        assert_eq!(t.watermark, Some(pos(5)));
        assert!(t.pending.is_empty());
    }
}

//! Per-partition-key parallelism inside a shard.
//!
//! [`KeyParallelProcessor`] runs a per-record [`RecordHandler`] on `parallelism` workers per
//! shard: records with the same partition key are handled one at a time, in order; different keys
//! run concurrently. Keys, not fixed lanes, are scheduled: an idle worker takes the next key that
//! has a record waiting, so a hot key never holds up keys that merely hash alike.
//! The checkpoint advances only to the *watermark* — the highest position below which every
//! record is done — so a crash never skips an unfinished record (records after the watermark are
//! redelivered). In-flight records and bytes are bounded: a full pipeline holds back
//! `process_records`, and so retrieval (backpressure). A failing record is retried with backoff
//! on its lane (its key waits; other keys go on) unless the policy skips it. Shutdown waits for
//! in-flight records, then checkpoints; a lost lease cancels them at once.
//!
//! A hot key (most records on one key) cannot deadlock anything and takes one worker, but it
//! bounds how far others get: records are dispatched in shard order, so other keys run at most
//! `max_in_flight_records` ahead of the hot key's oldest unfinished record, and the watermark
//! waits for it. That is the price of bounded memory; raise the bound to let cold keys run
//! further ahead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use bytestring::ByteString;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::checkpoint::Checkpointer;
use crate::clock::WallClock;
use crate::model::{ExtendedSequenceNumber, Record};
use crate::processor::{
    InitializationInput, LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo,
    ShardRecordProcessor, ShardRecordProcessorFactory,
};
use crate::shard::{DeadLetterHandler, ProcessorFailure, RetryLimit};
use crate::telemetry;

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
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum RecordFailurePolicy {
    /// Retry with backoff until it succeeds (its key waits, other keys go on). The default.
    #[default]
    Retry,
    /// Log and skip the record at its first failure.
    Skip,
    /// Retry with backoff within `limit` (its key waits, other keys go on), then skip or
    /// dead-letter the record: its key moves on to its next record and the watermark passes it.
    RetryThen {
        /// When to give up on the record.
        limit: RetryLimit,
        /// What to do with it then.
        then: RecordExhausted,
    },
}

/// What happens to a record once its retries are exhausted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RecordExhausted {
    /// Skip it, logged with its position and counted (`RecordsSkipped`).
    Skip,
    /// Store it with the handler (retried until it succeeds), counted (`RecordsDeadLettered`).
    DeadLetter(Arc<dyn DeadLetterHandler>),
}

/// Settings of key-parallel processing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParallelConfig {
    /// Workers per shard (P): keys handled at the same time.
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
    /// Sets [`parallelism`](Self::parallelism).
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets [`max_in_flight_records`](Self::max_in_flight_records).
    pub fn with_max_in_flight_records(mut self, max_in_flight_records: usize) -> Self {
        self.max_in_flight_records = max_in_flight_records;
        self
    }

    /// Sets [`max_in_flight_bytes`](Self::max_in_flight_bytes).
    pub fn with_max_in_flight_bytes(mut self, max_in_flight_bytes: usize) -> Self {
        self.max_in_flight_bytes = max_in_flight_bytes;
        self
    }

    /// Sets [`failure`](Self::failure).
    pub fn with_failure(mut self, failure: RecordFailurePolicy) -> Self {
        self.failure = failure;
        self
    }

    /// Sets [`min_backoff`](Self::min_backoff).
    pub fn with_min_backoff(mut self, min_backoff: Duration) -> Self {
        self.min_backoff = min_backoff;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Sets [`checkpoint_interval`](Self::checkpoint_interval).
    pub fn with_checkpoint_interval(mut self, checkpoint_interval: Duration) -> Self {
        self.checkpoint_interval = checkpoint_interval;
        self
    }
}

impl ParallelConfig {
    /// `parallelism` workers with default bounds (10,000 records, 64 MiB in flight).
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

/// Records waiting per key; a key is `ready` when it has records waiting and none running, and
/// sits in `ready` at most once.
#[derive(Default)]
struct KeyQueues {
    waiting: HashMap<ByteString, VecDeque<Job>>,
    running: HashSet<ByteString>,
    ready: VecDeque<ByteString>,
}

/// Hands records to workers key by key.
#[derive(Default)]
struct Dispatch {
    queues: Mutex<KeyQueues>,
    wake: Notify,
}

impl Dispatch {
    fn push(&self, job: Job) {
        let key = job.record.partition_key.clone();
        let mut q = self.queues.lock();
        let queue = q.waiting.entry(key.clone()).or_default();
        queue.push_back(job);
        if queue.len() == 1 && !q.running.contains(&key) {
            q.ready.push_back(key);
            drop(q);
            self.wake.notify_one();
        }
    }

    /// The next record of a ready key; the key stays busy until [`Dispatch::done`].
    async fn next(&self, cancel: &CancellationToken) -> Option<Job> {
        loop {
            {
                let mut q = self.queues.lock();
                if let Some(key) = q.ready.pop_front() {
                    let job = q
                        .waiting
                        .get_mut(&key)
                        .and_then(VecDeque::pop_front)
                        .expect("a ready key has a record");
                    q.running.insert(key);
                    let more = !q.ready.is_empty();
                    drop(q);
                    if more {
                        // Pass the wake-up on: one notification may stand for several keys.
                        self.wake.notify_one();
                    }
                    return Some(job);
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                _ = self.wake.notified() => {}
            }
        }
    }

    fn done(&self, key: &ByteString) {
        let mut q = self.queues.lock();
        q.running.remove(key);
        if q.waiting.get(key).is_some_and(|w| !w.is_empty()) {
            q.ready.push_back(key.clone());
            drop(q);
            self.wake.notify_one();
        } else {
            q.waiting.remove(key);
        }
    }
}

/// A [`ShardRecordProcessor`] running a [`RecordHandler`] with per-key parallelism.
pub struct KeyParallelProcessor<H: RecordHandler> {
    handler: Arc<H>,
    config: ParallelConfig,
    context: Option<Arc<RecordContext>>,
    dispatch: Arc<Dispatch>,
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
            dispatch: Arc::default(),
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
        for worker in 0..self.config.parallelism {
            let (handler, tracker, progress, cancel, config, context, dispatch) = (
                self.handler.clone(),
                self.tracker.clone(),
                self.progress.clone(),
                self.cancel.clone(),
                self.config.clone(),
                context.clone(),
                self.dispatch.clone(),
            );
            self.tasks.spawn(async move {
                let clock = WallClock::start();
                while let Some(job) = dispatch.next(&cancel).await {
                    let mut backoff = crate::retry::RetryConfig::new(config.min_backoff, config.max_backoff)
                        .backoff(job.index ^ worker as u64);
                    let mut attempts = 0u32;
                    let shard_id = &context.shard.shard_id;
                    let position = job.record.extended_sequence_number();
                    'record: loop {
                        // A panicking handler must not take its worker down.
                        let failure = match AssertUnwindSafe(handler.handle(&context, &job.record)).catch_unwind().await {
                            Ok(Ok(())) => break,
                            Ok(Err(e)) => ProcessorFailure::Error(e.to_string()),
                            Err(_) => ProcessorFailure::Panic("record handler panicked".into()),
                        };
                        attempts += 1;
                        let give = match &config.failure {
                            RecordFailurePolicy::Retry => None,
                            RecordFailurePolicy::Skip => Some(RecordExhausted::Skip),
                            RecordFailurePolicy::RetryThen { limit, then } => limit
                                .exhausted(attempts, clock.age(job.record.approximate_arrival_timestamp))
                                .then(|| then.clone()),
                        };
                        match give {
                            None => warn!(%shard_id, %position, attempts, %failure, "record failed; retrying"),
                            Some(RecordExhausted::Skip) => {
                                error!(%shard_id, %position, attempts, %failure, "record skipped by the failure policy");
                                telemetry::parallel_outcome(telemetry::names::RECORDS_SKIPPED, shard_id.as_str());
                                break;
                            }
                            Some(RecordExhausted::DeadLetter(dead_letter)) => loop {
                                match dead_letter.handle(&context.shard, std::slice::from_ref(&job.record), &failure).await {
                                    Ok(()) => {
                                        warn!(%shard_id, %position, attempts, %failure, "record dead-lettered by the failure policy");
                                        telemetry::parallel_outcome(telemetry::names::RECORDS_DEAD_LETTERED, shard_id.as_str());
                                        break 'record;
                                    }
                                    Err(e) => warn!(%shard_id, %position, error = %crate::error::Report(&*e), "dead-letter handler failed; retrying"),
                                }
                                let delay = backoff.next_delay().unwrap_or(config.max_backoff);
                                tokio::select! { biased; _ = cancel.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                            },
                        }
                        let delay = backoff.next_delay().unwrap_or(config.max_backoff);
                        tokio::select! { biased; _ = cancel.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                    }
                    tracker.lock().complete(job.index);
                    progress.notify_waiters();
                    dispatch.done(&job.record.partition_key);
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
            self.dispatch.push(Job {
                index,
                record: record.clone(),
                _permits: (records, bytes),
            });
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

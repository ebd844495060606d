//! Polling retrieval: GetRecords in a prefetching task per shard.

use crate::telemetry;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::pacing::Pacer;
use super::{
    MAX_BACKOFF, RecordsBatch, RecordsPublisher, Retrieval, RetrievalError, ShardRead, TrimmedGap,
};
use crate::kinesis::{KinesisDataPlane, KinesisError, MAX_GET_RECORDS_LIMIT, ShardIterator};
use crate::model::{SequenceNumber, StartingPosition};

/// Settings of polling retrieval, named after the KCL's. Start from `PollingConfig::default()`
/// and change what you need with the `with_*` setters (it can grow fields without breaking you).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PollingConfig {
    /// `maxRecords` per GetRecords call (1..=10,000). KCL default: 10,000.
    pub max_records: u32,
    /// `idleTimeBetweenReadsInMillis`: wait after every call that finds the shard caught up
    /// (MillisBehindLatest at most [`CAUGHT_UP`]), whether or not it returned records, so a
    /// trickling shard costs about one call per idle time. A shard that is behind is read
    /// without this wait. KCL default 1,500 ms, minimum 200 ms (the per-shard budget is 5
    /// calls/s for all readers).
    pub idle_time_between_reads: Duration,
    /// Batches read ahead of the processor. KCL: 3.
    pub max_prefetched_batches: usize,
    /// Records read ahead of the processor (the batch in progress may exceed it). KCL: 30,000.
    pub max_prefetched_records: usize,
    /// Bytes read ahead of the processor. KCL: 8 MiB.
    pub max_prefetched_bytes: usize,
    /// Smallest gap between two GetRecords calls of one shard when nothing is throttled.
    /// Default 0: read as fast as the processor consumes; throttles widen the gap adaptively.
    pub min_interval_between_calls: Duration,
    /// Caps this application's GetRecords calls per second per shard, so several applications
    /// can share a shard's 5 calls/s without throttling each other while catching up (e.g. 1.0
    /// for each of five). `None` (default): no cap beyond the adaptive pacing.
    pub max_calls_per_second: Option<f64>,
}

impl PollingConfig {
    /// Sets [`max_records`](Self::max_records).
    pub fn with_max_records(mut self, max_records: u32) -> Self {
        self.max_records = max_records;
        self
    }

    /// Sets [`idle_time_between_reads`](Self::idle_time_between_reads).
    pub fn with_idle_time_between_reads(mut self, idle_time_between_reads: Duration) -> Self {
        self.idle_time_between_reads = idle_time_between_reads;
        self
    }

    /// Sets [`max_prefetched_batches`](Self::max_prefetched_batches).
    pub fn with_max_prefetched_batches(mut self, max_prefetched_batches: usize) -> Self {
        self.max_prefetched_batches = max_prefetched_batches;
        self
    }

    /// Sets [`max_prefetched_records`](Self::max_prefetched_records).
    pub fn with_max_prefetched_records(mut self, max_prefetched_records: usize) -> Self {
        self.max_prefetched_records = max_prefetched_records;
        self
    }

    /// Sets [`max_prefetched_bytes`](Self::max_prefetched_bytes).
    pub fn with_max_prefetched_bytes(mut self, max_prefetched_bytes: usize) -> Self {
        self.max_prefetched_bytes = max_prefetched_bytes;
        self
    }

    /// Sets [`min_interval_between_calls`](Self::min_interval_between_calls).
    pub fn with_min_interval_between_calls(mut self, min_interval_between_calls: Duration) -> Self {
        self.min_interval_between_calls = min_interval_between_calls;
        self
    }

    /// Sets [`max_calls_per_second`](Self::max_calls_per_second).
    pub fn with_max_calls_per_second(mut self, max_calls_per_second: Option<f64>) -> Self {
        self.max_calls_per_second = max_calls_per_second;
        self
    }
}

impl PollingConfig {
    /// The defaults for DynamoDB Streams, as the Java DynamoDB Streams adapter's: 1,000 records
    /// a call (the service's most) and 1 s between reads of a caught-up shard (DynamoDB Streams
    /// allows 5 reads a second per shard; a rotation's hand-over costs one read interval). The
    /// scheduler uses them for a DynamoDB Streams source unless a retrieval is set.
    pub fn dynamodb_streams() -> Self {
        Self {
            max_records: 1000,
            idle_time_between_reads: Duration::from_secs(1),
            ..Self::default()
        }
    }
}

/// MillisBehindLatest at or below which a shard counts as caught up.
pub const CAUGHT_UP: Duration = Duration::from_secs(1);

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            max_records: MAX_GET_RECORDS_LIMIT,
            idle_time_between_reads: Duration::from_millis(1500),
            max_prefetched_batches: 3,
            max_prefetched_records: 30_000,
            max_prefetched_bytes: 8 * 1024 * 1024,
            min_interval_between_calls: Duration::ZERO,
            max_calls_per_second: None,
        }
    }
}

impl PollingConfig {
    /// Checks the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_GET_RECORDS_LIMIT).contains(&self.max_records) {
            return Err(format!(
                "max_records {} must be in 1..=10000",
                self.max_records
            ));
        }
        if self.idle_time_between_reads < Duration::from_millis(200) {
            return Err(format!(
                "idle_time_between_reads {:?} is below the 200 ms minimum (5 GetRecords/s/shard for all readers)",
                self.idle_time_between_reads
            ));
        }
        if let Some(rate) = self.max_calls_per_second
            && !(rate.is_finite() && (0.01..=5.0).contains(&rate))
        {
            return Err(format!(
                "max_calls_per_second {rate} must be in 0.01..=5 (5 GetRecords/s/shard for all readers)"
            ));
        }
        if self.idle_time_between_reads > crate::limits::MAX_SETTING_DURATION
            || self.min_interval_between_calls > crate::limits::MAX_SETTING_DURATION
        {
            return Err(
                "idle_time_between_reads and min_interval_between_calls must be at most a year"
                    .into(),
            );
        }
        if self.max_prefetched_batches == 0
            || self.max_prefetched_records == 0
            || self.max_prefetched_bytes == 0
        {
            return Err("max_prefetched_batches, max_prefetched_records and max_prefetched_bytes must be positive".into());
        }
        Ok(())
    }

    /// The smallest gap between calls: the configured one, or the rate cap's if wider.
    fn min_gap(&self) -> Duration {
        let cap = self
            .max_calls_per_second
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
        self.min_interval_between_calls.max(cap)
    }
}

/// Polling over any [`KinesisDataPlane`].
#[derive(Debug)]
pub struct PollingRetrieval {
    kinesis: Arc<dyn KinesisDataPlane>,
    config: PollingConfig,
}

impl PollingRetrieval {
    /// Polling with `config` (validate it first).
    pub fn new(kinesis: Arc<dyn KinesisDataPlane>, config: PollingConfig) -> Self {
        Self { kinesis, config }
    }
}

impl Retrieval for PollingRetrieval {
    fn start(&self, read: ShardRead) -> Box<dyn RecordsPublisher> {
        let (tx, rx) = mpsc::channel(self.config.max_prefetched_batches);
        let cancel = CancellationToken::new();
        let fetcher = Fetcher {
            kinesis: self.kinesis.clone(),
            config: self.config.clone(),
            records: Arc::new(Semaphore::new(self.config.max_prefetched_records)),
            bytes: Arc::new(Semaphore::new(
                self.config.max_prefetched_bytes.min(Semaphore::MAX_PERMITS),
            )),
            pacer: Pacer::new(self.config.min_gap(), MAX_BACKOFF, read.seed),
            read,
            tx,
            not_found: 0,
        };
        tokio::spawn(fetcher.run(cancel.clone()));
        Box::new(PollingPublisher {
            rx,
            cancel,
            held: Vec::new(),
        })
    }
}

/// A batch with the prefetch capacity it takes.
type Fetched = Result<(RecordsBatch, Vec<OwnedSemaphorePermit>), RetrievalError>;

struct PollingPublisher {
    rx: mpsc::Receiver<Fetched>,
    cancel: CancellationToken,
    /// The capacity of the batch handed out last, released when the consumer asks for the
    /// next one: prefetch bounds what is read ahead of the consumer's progress.
    held: Vec<OwnedSemaphorePermit>,
}

#[async_trait]
impl RecordsPublisher for PollingPublisher {
    async fn next_batch(&mut self) -> Result<RecordsBatch, RetrievalError> {
        self.held.clear();
        let (batch, permits) = self
            .rx
            .recv()
            .await
            .unwrap_or(Err(RetrievalError::Stopped))?;
        self.held = permits;
        Ok(batch)
    }
}

impl Drop for PollingPublisher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Fetcher {
    kinesis: Arc<dyn KinesisDataPlane>,
    config: PollingConfig,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    pacer: Pacer,
    read: ShardRead,
    tx: mpsc::Sender<Fetched>,
    /// ResourceNotFound answers in a row: a shard can be briefly unknown (a stale endpoint
    /// right after a reshard), so only a few in a row mean it is gone.
    not_found: u32,
}

/// ResourceNotFound answers in a row (with backoff) before the shard counts as gone.
const NOT_FOUND_ATTEMPTS: u32 = 3;

enum Step {
    Continue,
    Stop,
}

impl Fetcher {
    async fn run(mut self, cancel: CancellationToken) {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            _ = self.fetch() => {}
        }
    }

    async fn fetch(&mut self) {
        let Some(start) = self.read.start.starting_position() else {
            // Already at SHARD_END: the consumer handles it without reading.
            let _ = self
                .tx
                .send(Ok((RecordsBatch::shard_end(Vec::new()), Vec::new())))
                .await;
            return;
        };
        let mut last_fetched: Option<SequenceNumber> = None;
        let mut iterator: Option<ShardIterator> = None;
        loop {
            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    let position = match &last_fetched {
                        Some(seq) => StartingPosition::AfterSequenceNumber(seq.clone()),
                        None => start.clone(),
                    };
                    self.pacer.wait().await;
                    match self
                        .kinesis
                        .get_shard_iterator(&self.read.stream, &self.read.shard.id, &position)
                        .await
                    {
                        Ok(it) => it,
                        Err(e) => match self.on_error(e, last_fetched.as_ref()).await {
                            Step::Continue => continue,
                            Step::Stop => return,
                        },
                    }
                }
            };
            self.pacer.wait().await;
            let sent = tokio::time::Instant::now();
            let out = match self.kinesis.get_records(&it, self.config.max_records).await {
                Ok(out) => out,
                Err(KinesisError::ExpiredIterator { .. }) => {
                    debug!(shard_id = %self.read.shard.id, "shard iterator expired; getting a new one after the last record read");
                    telemetry::read_error(
                        telemetry::names::EXPIRED_ITERATOR,
                        "GetRecords",
                        self.read.shard.id.as_str(),
                        &self.read.stream.name,
                    );
                    continue;
                }
                Err(e) => {
                    iterator = Some(it);
                    match self.on_error(e, last_fetched.as_ref()).await {
                        Step::Continue => continue,
                        Step::Stop => return,
                    }
                }
            };
            let bytes: usize = out.records.iter().map(|r| r.data.len()).sum();
            debug!(shard_id = %self.read.shard.id, records = out.records.len(), bytes,
                took_ms = sent.elapsed().as_millis() as u64, behind_ms = ?out.millis_behind_latest, "GetRecords");
            self.pacer.success(bytes);
            self.not_found = 0;
            if let Some(last) = out.records.last() {
                last_fetched = Some(last.sequence_number.clone());
            }
            // No MillisBehindLatest (some emulators) counts as caught up only when empty.
            let caught_up = match out.millis_behind_latest {
                Some(behind) => Duration::from_millis(behind) <= CAUGHT_UP,
                None => out.records.is_empty(),
            };
            let shard_end = out.next_iterator.is_none().then_some(out.child_shards);
            let ended = shard_end.is_some();
            if !out.records.is_empty() || ended {
                let batch = RecordsBatch {
                    records: out.records,
                    millis_behind_latest: out.millis_behind_latest.unwrap_or(0),
                    shard_end,
                };
                let queued = tokio::time::Instant::now();
                if !self.send(batch).await || ended {
                    return;
                }
                let waited = queued.elapsed();
                if waited >= Duration::from_millis(10) {
                    debug!(shard_id = %self.read.shard.id, waited_ms = waited.as_millis() as u64, "prefetch full: waited for the processor");
                }
            }
            iterator = out.next_iterator;
            // The Java KCL waits between every call; waiting only while caught up keeps a
            // backlog's catch-up fast and a trickling shard polite to other applications.
            if caught_up {
                tokio::time::sleep(self.config.idle_time_between_reads).await;
            }
        }
    }

    /// Queues a batch once prefetch capacity allows; false when the consumer is gone.
    async fn send(&self, batch: RecordsBatch) -> bool {
        let records = (batch.records.len().min(self.config.max_prefetched_records)) as u32;
        let bytes: usize = batch.records.iter().map(|r| r.data.len()).sum();
        let bytes = bytes
            .min(self.config.max_prefetched_bytes)
            .min(Semaphore::MAX_PERMITS) as u32;
        let (Ok(r), Ok(b)) = (
            self.records.clone().acquire_many_owned(records).await,
            self.bytes.clone().acquire_many_owned(bytes).await,
        ) else {
            return false;
        };
        self.tx.send(Ok((batch, vec![r, b]))).await.is_ok()
    }

    /// Handles a failed call; `last_fetched` is the last record read (`None`: none yet).
    async fn on_error(&mut self, e: KinesisError, last_fetched: Option<&SequenceNumber>) -> Step {
        let shard_id = &self.read.shard.id;
        match e {
            KinesisError::TrimmedData { message, .. } => {
                let after = last_fetched
                    .or(self.read.start.checkpoint.sequence())
                    .cloned();
                let gap = TrimmedGap::reported(after, message);
                let _ = self.tx.send(Err(RetrievalError::Trimmed(gap))).await;
                Step::Stop
            }
            KinesisError::ResourceNotFound { .. } if self.not_found + 1 < NOT_FOUND_ATTEMPTS => {
                self.not_found += 1;
                warn!(%shard_id, error = %crate::error::Report(&e), attempt = self.not_found, "shard not found; retrying after a backoff");
                self.pacer.failed();
                Step::Continue
            }
            KinesisError::ResourceNotFound { .. } => {
                warn!(%shard_id, error = %crate::error::Report(&e), "shard not found repeatedly");
                let _ = self.tx.send(Err(RetrievalError::ShardGone(e))).await;
                Step::Stop
            }
            KinesisError::Throttled { .. } => {
                debug!(%shard_id, error = %crate::error::Report(&e), "GetRecords throttled; widening the gap between calls");
                telemetry::read_error(
                    telemetry::names::THROTTLES,
                    "GetRecords",
                    shard_id.as_str(),
                    &self.read.stream.name,
                );
                self.pacer.throttled();
                Step::Continue
            }
            e if e.is_retryable() => {
                warn!(%shard_id, error = %crate::error::Report(&e), "GetRecords failed; retrying after a backoff");
                self.pacer.failed();
                Step::Continue
            }
            e => {
                warn!(%shard_id, error = %crate::error::Report(&e), "GetRecords failed for good");
                let _ = self.tx.send(Err(RetrievalError::Fatal(e))).await;
                Step::Stop
            }
        }
    }
}

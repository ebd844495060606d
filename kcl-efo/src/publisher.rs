//! Fan-out retrieval: one SubscribeToShard subscription per held shard, resubscribed as each
//! ends, feeding the same records publisher the shard consumer reads from with polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kcl_core::kinesis::KinesisError;
use kcl_core::model::{StartingPosition, StreamIdentity};
use kcl_core::retrieval::{RecordsBatch, RecordsPublisher, Retrieval, RetrievalError, ShardRead};
use kcl_core::retry::{Backoff, RetryConfig};
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{ConsumerState, FanOutClient};

/// Settings of fan-out retrieval.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FanOutConfig {
    /// Events buffered ahead of the processor per shard; a slow processor stops the
    /// subscription from being read (backpressure) instead of growing a buffer.
    pub max_buffered_events: usize,
    /// First delay before resubscribing after an error.
    pub min_backoff: Duration,
    /// Largest delay before resubscribing.
    pub max_backoff: Duration,
    /// Deadline of each control call (RegisterStreamConsumer, DescribeStreamConsumer,
    /// DeregisterStreamConsumer) and of setting up a SubscribeToShard (default 10 s, the
    /// default failover time).
    pub call_timeout: Duration,
    /// A subscription with no event for this long is ended and renewed from where it stopped
    /// (default 35 s; Kinesis sends an event at least every 5 s).
    pub event_timeout: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            max_buffered_events: 2,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            call_timeout: Duration::from_secs(10),
            event_timeout: Duration::from_secs(35),
        }
    }
}

impl FanOutConfig {
    /// Sets [`max_buffered_events`](Self::max_buffered_events).
    pub fn with_max_buffered_events(mut self, max_buffered_events: usize) -> Self {
        self.max_buffered_events = max_buffered_events;
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

    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// Sets [`event_timeout`](Self::event_timeout).
    pub fn with_event_timeout(mut self, event_timeout: Duration) -> Self {
        self.event_timeout = event_timeout;
        self
    }
}

/// A [`FanOutConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FanOutConfigError {
    /// A deadline or backoff of zero: every call would fail (or retry) at once.
    #[error("fan-out setting {0} must be greater than zero")]
    Zero(&'static str),
    /// A duration beyond a year, where deadline arithmetic stops being meaningful.
    #[error("fan-out setting {field} = {value:?} is longer than a year")]
    TooLong {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: Duration,
    },
    /// `min_backoff` above `max_backoff`.
    #[error("fan-out min_backoff {min:?} is above max_backoff {max:?}")]
    Backoff {
        /// `min_backoff`.
        min: Duration,
        /// `max_backoff`.
        max: Duration,
    },
}

impl FanOutConfigError {
    /// Never: a configuration does not fix itself.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl FanOutConfig {
    /// Checks every setting; [`FanOutRetrieval::new`] calls it.
    pub fn validate(&self) -> Result<(), FanOutConfigError> {
        if self.max_buffered_events == 0 {
            return Err(FanOutConfigError::Zero("max_buffered_events"));
        }
        for (field, value) in [
            ("min_backoff", self.min_backoff),
            ("max_backoff", self.max_backoff),
            ("call_timeout", self.call_timeout),
            ("event_timeout", self.event_timeout),
        ] {
            if value.is_zero() {
                return Err(FanOutConfigError::Zero(field));
            }
            if value > kcl_core::limits::MAX_SETTING_DURATION {
                return Err(FanOutConfigError::TooLong { field, value });
            }
        }
        if self.min_backoff > self.max_backoff {
            return Err(FanOutConfigError::Backoff {
                min: self.min_backoff,
                max: self.max_backoff,
            });
        }
        Ok(())
    }
}

/// The registered consumer of each stream, by ARN (or name when the ARN is not known).
type Consumers = std::sync::Mutex<HashMap<Arc<str>, Arc<OnceCell<String>>>>;

#[derive(Debug)]
struct Inner {
    client: Arc<dyn FanOutClient>,
    stream: StreamIdentity,
    consumer_name: String,
    consumers: Consumers,
    config: FanOutConfig,
}

/// Enhanced fan-out retrieval for the scheduler: `RetrievalMode::Custom(Arc::new(fan_out))`.
///
/// Works for a multi-stream scheduler too: each stream whose shards it reads gets its own
/// stream consumer named `consumer_name` (Kinesis registers consumers per stream), registered
/// or reused on the first subscription to one of its shards.
#[derive(Debug, Clone)]
pub struct FanOutRetrieval {
    inner: Arc<Inner>,
}

impl FanOutRetrieval {
    /// Fan-out as the consumer `consumer_name` (usually the application name); `stream` is the
    /// one [`register`](Self::register) and [`deregister`](Self::deregister) act on (the
    /// `_stream` variants take any). Consumers are registered (or reused) on first use; call
    /// `register` to do it up front. Fails on an invalid `config`.
    pub fn new(
        client: Arc<dyn FanOutClient>,
        stream: StreamIdentity,
        consumer_name: impl Into<String>,
        config: FanOutConfig,
    ) -> Result<Self, FanOutConfigError> {
        config.validate()?;
        let client = Arc::new(crate::deadline::DeadlineFanOut {
            inner: client,
            call_timeout: config.call_timeout,
            event_timeout: config.event_timeout,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                stream,
                consumer_name: consumer_name.into(),
                consumers: Consumers::default(),
                config,
            }),
        })
    }

    /// Registers the stream consumer, or reuses it if another worker did, and waits until it is
    /// ACTIVE. Returns its ARN.
    pub async fn register(&self) -> Result<String, KinesisError> {
        self.register_stream(&self.inner.stream).await
    }

    /// Deregisters the stream consumer (optional at shutdown: other workers may still use it).
    pub async fn deregister(&self) -> Result<(), KinesisError> {
        self.deregister_stream(&self.inner.stream).await
    }

    /// [`register`](Self::register) for `stream`.
    pub async fn register_stream(&self, stream: &StreamIdentity) -> Result<String, KinesisError> {
        self.inner.consumer_arn(stream).await
    }

    /// [`deregister`](Self::deregister) for `stream`.
    pub async fn deregister_stream(&self, stream: &StreamIdentity) -> Result<(), KinesisError> {
        let arn = self.register_stream(stream).await?;
        self.inner.client.deregister_consumer(&arn).await?;
        // A later subscription registers it again rather than using a deleted ARN.
        self.inner.consumers_lock().remove(&consumer_key(stream));
        Ok(())
    }
}

fn consumer_key(stream: &StreamIdentity) -> Arc<str> {
    stream.arn.clone().unwrap_or_else(|| stream.name.clone())
}

impl Inner {
    fn backoff(&self, seed: u64) -> Backoff {
        RetryConfig::new(self.config.min_backoff, self.config.max_backoff).backoff(seed)
    }

    fn consumers_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<OnceCell<String>>>> {
        // The map is only read and inserted into; a panic elsewhere cannot leave it torn.
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn consumer_arn(&self, stream: &StreamIdentity) -> Result<String, KinesisError> {
        let cell = self
            .consumers_lock()
            .entry(consumer_key(stream))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.register_and_wait(stream))
            .await
            .cloned()
    }

    async fn register_and_wait(&self, stream: &StreamIdentity) -> Result<String, KinesisError> {
        let mut backoff = self.backoff(1);
        let mut description = match self
            .client
            .register_consumer(stream, &self.consumer_name)
            .await
        {
            Ok(d) => {
                info!(stream = %stream.name, consumer = %d.name, arn = %d.arn, "stream consumer registered");
                d
            }
            // Another worker registered it first: reuse it.
            Err(KinesisError::ResourceInUse { .. }) => {
                self.client
                    .describe_consumer(stream, &self.consumer_name)
                    .await?
            }
            Err(e) => return Err(e),
        };
        while description.state != ConsumerState::Active {
            tokio::time::sleep(backoff.next_delay().unwrap_or(self.config.max_backoff)).await;
            description = self
                .client
                .describe_consumer(stream, &self.consumer_name)
                .await?;
        }
        Ok(description.arn)
    }
}

impl Retrieval for FanOutRetrieval {
    fn start(&self, read: ShardRead) -> Box<dyn RecordsPublisher> {
        let (tx, rx) = mpsc::channel(self.inner.config.max_buffered_events.max(1));
        let cancel = CancellationToken::new();
        let inner = self.inner.clone();
        let token = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {}
                _ = subscribe_loop(inner, read, tx) => {}
            }
        });
        Box::new(FanOutPublisher { rx, cancel })
    }
}

struct FanOutPublisher {
    rx: mpsc::Receiver<Result<RecordsBatch, RetrievalError>>,
    cancel: CancellationToken,
}

#[async_trait]
impl RecordsPublisher for FanOutPublisher {
    async fn next_batch(&mut self) -> Result<RecordsBatch, RetrievalError> {
        self.rx.recv().await.unwrap_or(Err(RetrievalError::Stopped))
    }
}

impl Drop for FanOutPublisher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

type Sender = mpsc::Sender<Result<RecordsBatch, RetrievalError>>;

async fn subscribe_loop(inner: Arc<Inner>, read: ShardRead, tx: Sender) {
    let shard = read.shard.id.clone();
    let Some(start) = read.start.starting_position() else {
        let _ = tx.send(Ok(RecordsBatch::shard_end(Vec::new()))).await;
        return;
    };
    let mut position: StartingPosition = start;
    let mut backoff = inner.backoff(read.seed);
    let arn = loop {
        match inner.consumer_arn(&read.stream).await {
            Ok(arn) => break arn,
            Err(e) if e.is_retryable() => {
                warn!(shard_id = %shard, error = %kcl_core::error::Report(&e), "registering the stream consumer failed; retrying");
                tokio::time::sleep(backoff.next_delay().unwrap_or(inner.config.max_backoff)).await;
            }
            Err(e) => {
                let _ = tx.send(Err(RetrievalError::Fatal(e))).await;
                return;
            }
        }
    };
    let mut first = true;
    loop {
        let mut subscription = match inner.client.subscribe(&arn, &shard, &position).await {
            Ok(s) => {
                // Once per shard consumer at info; renewals (every 5 minutes) at debug.
                if first {
                    info!(stream = %read.stream.name, shard_id = %shard, "fan-out subscription started");
                    first = false;
                } else {
                    debug!(shard_id = %shard, "fan-out subscription renewed");
                }
                s
            }
            Err(e) => {
                match &e {
                    // Expected while the previous subscription drains, or when resubscribing
                    // faster than once a second: not worth a warning.
                    KinesisError::ResourceInUse { .. } | KinesisError::Throttled { .. } => {
                        if matches!(e, KinesisError::Throttled { .. }) {
                            kcl_core::telemetry::read_error(
                                kcl_core::telemetry::names::THROTTLES,
                                "SubscribeToShard",
                                shard.as_str(),
                                &read.stream.name,
                            );
                        }
                        debug!(shard_id = %shard, error = %kcl_core::error::Report(&e), "subscription not ready; retrying")
                    }
                    KinesisError::ResourceNotFound { .. } => {
                        let _ = tx.send(Err(RetrievalError::ShardGone(e))).await;
                        return;
                    }
                    e if e.is_retryable() => {
                        warn!(shard_id = %shard, error = %kcl_core::error::Report(&e), "SubscribeToShard failed; retrying")
                    }
                    _ => {
                        let _ = tx.send(Err(RetrievalError::Fatal(e))).await;
                        return;
                    }
                }
                tokio::time::sleep(backoff.next_delay().unwrap_or(inner.config.max_backoff)).await;
                continue;
            }
        };
        backoff = inner.backoff(read.seed);
        while let Some(event) = subscription.next_event().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // Read timeouts and resets end a subscription; resume where it stopped.
                    debug!(shard_id = %shard, error = %kcl_core::error::Report(&e), "subscription ended with an error; resubscribing");
                    tokio::time::sleep(backoff.next_delay().unwrap_or(inner.config.max_backoff))
                        .await;
                    break;
                }
            };
            let mut batch = RecordsBatch {
                records: event.records,
                millis_behind_latest: event.millis_behind_latest,
                shard_end: None,
            };
            match event.continuation_sequence_number {
                Some(c) => position = StartingPosition::AfterSequenceNumber(c),
                None => batch.shard_end = Some(event.child_shards),
            }
            let ended = batch.shard_end.is_some();
            if (!batch.records.is_empty() || ended) && tx.send(Ok(batch)).await.is_err() {
                return;
            }
            if ended {
                return;
            }
        }
    }
}

/// `builder.retrieval(fan_out)`: enhanced fan-out as the scheduler's retrieval mode.
impl From<FanOutRetrieval> for kcl_core::scheduler::RetrievalMode {
    fn from(fan_out: FanOutRetrieval) -> Self {
        Self::Custom(std::sync::Arc::new(fan_out))
    }
}

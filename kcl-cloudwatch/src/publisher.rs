//! The flush loop: drains the recorder every interval into a bounded queue and sends it in
//! batches, with retries; flushes once more on shutdown.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::recorder::Registry;
use crate::{CloudWatchConfig, CloudWatchRecorder, Datum, MetricSink, SinkError};

#[derive(Debug)]
struct State {
    registry: Arc<Registry>,
    sink: Arc<dyn MetricSink>,
    config: CloudWatchConfig,
    queue: Mutex<VecDeque<Datum>>,
    dropped: AtomicU64,
    sent: AtomicU64,
}

/// Publishes a [`CloudWatchRecorder`]'s statistics. Dropping it stops publishing without a final
/// flush; call [`shutdown`](Self::shutdown) to flush.
#[derive(Debug)]
pub struct CloudWatchPublisher {
    state: Arc<State>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl CloudWatchPublisher {
    /// Starts publishing on the current tokio runtime, once `config` is valid.
    pub fn start(
        recorder: &CloudWatchRecorder,
        sink: Arc<dyn MetricSink>,
        config: CloudWatchConfig,
    ) -> Result<Self, crate::InvalidConfig> {
        config.validate().map_err(crate::InvalidConfig)?;
        let state = Arc::new(State {
            registry: recorder.registry.clone(),
            sink,
            config,
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(state.clone(), stop.clone()));
        Ok(Self {
            state,
            stop,
            task: Some(task),
        })
    }

    /// Datums dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Datums sent.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::Relaxed)
    }

    /// Drains the recorder and sends everything queued now.
    pub async fn flush(&self) {
        flush(&self.state).await;
    }

    /// Stops the loop and flushes what is left, within the configured shutdown timeout.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let timeout = self.state.config.shutdown_timeout;
        if tokio::time::timeout(timeout, flush(&self.state))
            .await
            .is_err()
        {
            warn!(
                queued = self.state.queue.lock().len(),
                "metrics flush at shutdown timed out; the rest is lost"
            );
        }
    }
}

impl Drop for CloudWatchPublisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(state: Arc<State>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => flush(&state).await,
        }
    }
}

/// Moves the recorder's statistics into the queue (dropping the oldest beyond capacity), then
/// sends the queue in batches until it is empty or a batch fails for good.
async fn flush(state: &State) {
    let fresh = state.registry.drain(SystemTime::now());
    {
        let mut q = state.queue.lock();
        q.extend(fresh);
        let excess = q.len().saturating_sub(state.config.queue_capacity);
        if excess > 0 {
            q.drain(..excess);
            state.dropped.fetch_add(excess as u64, Ordering::Relaxed);
            warn!(
                dropped = excess,
                "metrics queue full; oldest datums dropped"
            );
        }
    }
    loop {
        let batch: Vec<Datum> = {
            let mut q = state.queue.lock();
            let n = q.len().min(state.config.max_datums_per_request);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        if !send(state, &batch).await {
            // Back to the front, for the next flush; the capacity bound still applies then.
            let mut q = state.queue.lock();
            for d in batch.into_iter().rev() {
                q.push_front(d);
            }
            return;
        }
    }
}

async fn send(state: &State, batch: &[Datum]) -> bool {
    let mut backoff = kcl_core::retry::RetryConfig::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    )
    .with_max_attempts(u32::try_from(state.config.max_attempts).unwrap_or(u32::MAX))
    .backoff(jitter_seed());
    for attempt in 1..=state.config.max_attempts {
        let timeout = state.config.call_timeout;
        let put = state.sink.put(&state.config.namespace, batch);
        let result = tokio::time::timeout(timeout, put)
            .await
            .unwrap_or_else(|_| {
                Err(SinkError {
                    code: "TimedOut".into(),
                    message: format!("no answer within {timeout:?}"),
                    retryable: true,
                })
            });
        match result {
            Ok(()) => {
                state.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                debug!(datums = batch.len(), "metrics published");
                return true;
            }
            Err(e) if e.is_retryable() && attempt < state.config.max_attempts => {
                debug!(error = %kcl_core::error::Report(&e), attempt, "PutMetricData failed; retrying");
                let delay = backoff
                    .next_delay()
                    .unwrap_or(std::time::Duration::from_secs(1));
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                warn!(error = %kcl_core::error::Report(&e), datums = batch.len(), "PutMetricData failed; keeping the datums for the next flush");
                return false;
            }
        }
    }
    false
}

/// A seed that differs between processes and calls, so publishers of a fleet retrying one
/// outage spread out.
fn jitter_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

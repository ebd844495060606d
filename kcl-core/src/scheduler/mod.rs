//! The scheduler: hand it a processor factory and run it; it syncs shards, coordinates leases
//! and runs one shard consumer task per held lease until told to stop.
//!
//! ```no_run
//! # async fn example(
//! #     store: std::sync::Arc<dyn kcl_core::lease::LeaseStore>,
//! #     kinesis: std::sync::Arc<dyn kcl_core::kinesis::KinesisDataPlane>,
//! #     factory: impl kcl_core::processor::ShardRecordProcessorFactory,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use kcl_core::model::StreamIdentity;
//! use kcl_core::scheduler::SchedulerBuilder;
//! use tokio_util::sync::CancellationToken;
//!
//! let scheduler = SchedulerBuilder::new(StreamIdentity::from_name("orders"), "billing")
//!     .lease_store(store)
//!     .kinesis(kinesis)
//!     .processor_factory(factory)
//!     .build()?;
//! let shutdown = CancellationToken::new();
//! scheduler.run(shutdown.clone()).await?;
//! # Ok(()) }
//! ```

pub(crate) mod bound;
mod config;
mod startup;
mod status;
mod streams;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use bound::StopAt;
pub use config::{RetrievalMode, SchedulerBuilder, SchedulerConfig, SchedulerConfigError};
pub use status::{SchedulerStatus, StoppedShard};
pub use streams::{RemovedStreamPolicy, StreamConfig, StreamSet, StreamSource, StreamTracker};
pub use sync::{SyncError, SyncReport, sync_shards};

use crate::kinesis::KinesisDataPlane;
use crate::lease::{
    Lease, LeaseCoordinator, LeaseEvent, LeaseFilter, LeaseScope, LeaseStore, LeaseToken,
    LostReason,
};
use crate::processor::{ShardInfo, ShardRecordProcessorFactory};
use crate::retrieval::SharedRetrieval;
use crate::shard::ShutdownReason;
use crate::shard::consumer::{ConsumerSettings, Outcome, ShardConsumer};
use crate::telemetry::{FleetSizing, LoadMeter, ShardMetrics, names, workers_needed};
use streams::{ActiveStream, ActiveStreams, identifier_of};
use sync::{ShardSync, SyncNotice};

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEnd {
    /// The shutdown token was cancelled; processors checkpointed and leases were handed off.
    ShutdownRequested,
    /// The stream no longer exists (single-stream mode; in multi-stream mode a deleted stream
    /// is handled like a removed one).
    StreamDeleted,
    /// A bounded run ([`SchedulerBuilder::stop_at`]): every shard reached the bound or ended.
    BoundReached,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Why it ended.
    pub end: RunEnd,
    /// Shards processed to their end by this worker.
    pub shards_ended: usize,
    /// Shard consumers that did not stop within the shutdown timeout and were aborted.
    pub aborted: usize,
}

/// A scheduler failed to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The lease coordinator could not start.
    #[error(transparent)]
    Config(#[from] SchedulerConfigError),
    /// The lease table does not exist. (Each variant's message is its own; the cause is its
    /// `source()`, so an error chain prints every part once.)
    #[error("the lease table is missing")]
    LeaseTableMissing(#[source] crate::lease::LeaseError),
    /// The lease table refused this worker (IAM policy, KMS key).
    #[error("access to the lease table denied")]
    LeaseTableAccessDenied(#[source] crate::lease::LeaseError),
    /// The stream refused this worker (IAM policy, KMS key).
    #[error("access to the stream denied")]
    StreamAccessDenied(#[source] crate::kinesis::KinesisError),
    /// The (single) stream does not exist.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
        /// What Kinesis said.
        #[source]
        source: crate::kinesis::KinesisError,
    },
    /// The lease store or Kinesis rejected the credentials.
    #[error("{service} rejected the credentials")]
    CredentialsRejected {
        /// `"the lease table"` or `"Kinesis"`.
        service: &'static str,
        /// The store's or Kinesis's error.
        #[source]
        source: crate::error::Cause,
    },
}

impl SchedulerError {
    /// Whether a later attempt can succeed without an operator changing anything (never, for
    /// the conditions `run` fails fast on).
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// One worker of an application. Build it with [`SchedulerBuilder`].
pub struct Scheduler {
    config: SchedulerConfig,
    store: Arc<dyn LeaseStore>,
    kinesis: Arc<dyn KinesisDataPlane>,
    retrieval: SharedRetrieval,
    factory: Arc<dyn ShardRecordProcessorFactory>,
    status: SchedulerStatus,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Running {
    signal: watch::Sender<ShutdownReason>,
    token: LeaseToken,
    /// Stream identifier of the lease (`""` in single-stream mode).
    stream: String,
}

impl Scheduler {
    /// The settings this scheduler runs with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// A handle on what the scheduler is doing (for health checks); take it before `run`.
    pub fn status(&self) -> SchedulerStatus {
        self.status.clone()
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.config.coordinator.worker_id
    }

    /// [`run`](Self::run) until SIGTERM or SIGINT (Ctrl-C; on other platforms Ctrl-C only),
    /// then shut down gracefully — what a program in a container wants.
    pub async fn run_until_signal(self) -> Result<RunReport, SchedulerError> {
        let shutdown = CancellationToken::new();
        let signalled = shutdown.clone();
        let signal = signal_received();
        let watcher = tokio::spawn(async move {
            signal.await;
            info!("signal received; shutting down");
            signalled.cancel();
        });
        let report = self.run(shutdown).await;
        watcher.abort();
        report
    }

    /// Runs until `shutdown` is cancelled (then shuts down gracefully: stops taking leases, lets
    /// every processor checkpoint through `shutdown_requested`, hands leases off, within
    /// `shutdown_timeout`) or the stream is deleted.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunReport, SchedulerError> {
        let worker_id = self.worker_id().to_string();
        self.status.set_running(true);
        self.status.set_draining(false);
        // Cleared however `run` ends, including when its future is dropped.
        struct NotRunning(SchedulerStatus);
        impl Drop for NotRunning {
            fn drop(&mut self) {
                self.0.set_running(false);
                self.0.set_consumers(0);
            }
        }
        let _not_running = NotRunning(self.status.clone());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                return Ok(RunReport { end: RunEnd::ShutdownRequested, shards_ended: 0, aborted: 0 });
            }
            checked = startup::check(&self.config, self.store.clone(), self.kinesis.as_ref()) => checked?,
        }
        let active = Arc::new(ActiveStreams::default());
        if let StreamSource::Single(stream) = &self.config.streams {
            active.replace(vec![ActiveStream {
                scope: LeaseScope::single(stream.clone()),
                initial_position: self.config.initial_position,
            }]);
        }
        // Workers take only leases of streams they consume (multi-stream: those active now).
        let filter: LeaseFilter = {
            let active = active.clone();
            Arc::new(move |lease: &Lease| active.stream_of(lease).is_some())
        };
        let (coordinator, mut events) = LeaseCoordinator::start_filtered(
            self.store.clone(),
            self.config.coordinator.clone(),
            Some(filter),
        )
        .map_err(SchedulerConfigError::from)?;
        let coordinator = Arc::new(coordinator);
        // Shard sync and the consumers call the table through the coordinator's store, so
        // their calls have the same deadlines and metrics.
        let store = coordinator.store();
        let load = Arc::new(LoadMeter::default());
        let settings = Arc::new(ConsumerSettings {
            load: load.clone(),
            failure_policy: self.config.failure_policy.clone(),
            checkpoint_policy: self.config.checkpoint_policy,
            idle_tick: self.config.idle_tick,
            batching_window: self.config.batching_window,
            parent_shard_poll_interval: self.config.parent_shard_poll_interval,
            hash_range_check: self.config.hash_range_check,
            trimmed_data: self.config.trimmed_data,
            shard_ends: tokio::sync::watch::Sender::new(0),
            stopped: self.status.stopped_registry(),
            seed: self.config.seed,
            stop_at: self
                .config
                .stop_at
                .map(|b| b.resolve(std::time::SystemTime::now())),
        });
        let (notices, mut notices_rx) = mpsc::unbounded_channel();
        let sync_stop = CancellationToken::new();
        // In a JoinSet so that dropping `run` (a crash, an aborted task) stops shard sync too;
        // a detached task would keep the coordinator alive, renewing leases nobody processes.
        let mut background = JoinSet::new();
        let shard_sync = ShardSync {
            source: self.config.streams.clone(),
            coordinator: coordinator.clone(),
            kinesis: self.kinesis.clone(),
            store: store.clone(),
            active: active.clone(),
            interval: self.config.shard_sync_interval,
            notices,
            status: self.status.clone(),
            resolved: BTreeMap::new(),
            removed_since: BTreeMap::new(),
            suspected_gone: BTreeSet::new(),
        };
        background.spawn(shard_sync.run(sync_stop.clone()));
        info!(worker_id = %worker_id, streams = ?self.config.streams, "scheduler started");

        let ctx = Context {
            coordinator: coordinator.clone(),
            settings,
            active,
            store,
        };
        let mut sizing = Sizing::new(&worker_id, self.config.fleet_sizing, load);
        let mut consumers = Consumers::default();
        let mut shards_ended = 0;
        // Bounded runs: leases that reached the bound here, and a periodic check of the table.
        let mut reached: BTreeSet<String> = BTreeSet::new();
        let mut bound_check = tokio::time::interval(self.config.parent_shard_poll_interval);
        bound_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let bounded = self.config.stop_at.is_some();
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break RunEnd::ShutdownRequested,
                _ = bound_check.tick(), if bounded => {
                    if self.bound_done(&ctx, &reached).await {
                        break RunEnd::BoundReached;
                    }
                }
                Some(notice) = notices_rx.recv() => match notice {
                    SyncNotice::StreamGone => break RunEnd::StreamDeleted,
                    SyncNotice::StreamsRemoved(ids) => on_streams_removed(&ids, &ctx, &mut consumers),
                },
                Some(event) = events.recv() => {
                    if let LeaseEvent::Lost { key, .. } | LeaseEvent::HandingOff { lease: Lease { key, .. } } = &event {
                        reached.remove(key);
                    }
                    self.on_event(event, &ctx, &mut consumers)
                }
                _ = sizing.tick.tick() => sizing.update(ctx.coordinator.fleet_size()),
                Some(done) = consumers.tasks.join_next() => {
                    if let Ok((key, Outcome::BoundReached)) = &done {
                        reached.insert(key.clone());
                    }
                    if self.on_done(done, &ctx, &mut consumers, true).await {
                        shards_ended += 1;
                    }
                }
            }
            self.status.set_consumers(consumers.running.len());
        };
        info!(worker_id = %worker_id, ?end, consumers = consumers.running.len(), "scheduler shutting down");
        // The shutdown timeout counts from here, whatever is in flight.
        let deadline = crate::limits::deadline_after(self.config.shutdown_timeout);
        self.status.set_draining(true);
        // A sync round may be waiting on ListShards or the table: abort it rather than wait.
        // Its writes are conditional, so a round cut short leaves nothing half-done.
        sync_stop.cancel();
        background.abort_all();
        while background.join_next().await.is_some() {}
        coordinator.stop_taking();
        consumers.pending.clear();
        // Planned hand-off: offered leases go on processing until their receivers accept, so
        // the shards pass on with a gap of a few round trips; the rest checkpoint and release.
        // Three store calls at most (offer, post, take back), all leases at once; cut short by
        // the deadline, an offer still in flight is settled by the lease's next write.
        let offered: BTreeSet<String> =
            tokio::time::timeout_at(deadline, coordinator.offer_leases())
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
        for (key, r) in &consumers.running {
            if !offered.contains(key) {
                r.signal
                    .send_if_modified(|s| raise(s, ShutdownReason::Requested));
            }
        }
        let mut aborted = 0;
        loop {
            let offers_pending = coordinator.offers_pending();
            if consumers.tasks.is_empty() && !offers_pending {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = consumers.tasks.join_next(), if !consumers.tasks.is_empty() => {
                    if self.on_done(done, &ctx, &mut consumers, false).await {
                        shards_ended += 1;
                    }
                }
                Some(event) = events.recv() => {
                    self.on_event_while_stopping(event, &ctx, &consumers).await;
                }
                // Offers whose leases have no consumer here: their polls decide them.
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)), if consumers.tasks.is_empty() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    aborted = consumers.tasks.len();
                    warn!(worker_id = %worker_id, consumers = aborted, "shutdown timeout: aborting shard consumers");
                    consumers.tasks.abort_all();
                    while consumers.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // What is left of the shutdown timeout goes to graceful steals still waiting for their
        // previous owner, so they are released rather than left to expire.
        coordinator.shutdown_by(deadline).await;
        info!(worker_id = %worker_id, shards_ended, aborted, "scheduler stopped");
        Ok(RunReport {
            end,
            shards_ended,
            aborted,
        })
    }

    /// Whether a bounded run is over: shards synced, and every lease of the consumed streams
    /// ended or past the bound ([`bound::all_done`]).
    async fn bound_done(&self, ctx: &Context, reached: &BTreeSet<String>) -> bool {
        if !self.status.has_synced() {
            return false;
        }
        match ctx.store.list().await {
            Ok(listing) => {
                let leases: Vec<Lease> = listing
                    .leases
                    .into_iter()
                    .filter(|l| ctx.active.stream_of(l).is_some())
                    .collect();
                bound::all_done(&leases, reached)
            }
            Err(e) => {
                warn!(error = %crate::error::Report(&e), "could not list leases to check the run's bound");
                false
            }
        }
    }

    fn spawn(&self, consumers: &mut Consumers, lease: Lease, token: LeaseToken, ctx: &Context) {
        let Some(stream) = ctx.active.stream_of(&lease) else {
            // Its stream was removed after the lease was taken: hand it back.
            info!(lease_key = %lease.key, "lease of a stream no longer consumed; releasing");
            let coordinator = ctx.coordinator.clone();
            tokio::spawn(async move {
                let _ = coordinator.release(&lease.key, Some(token)).await;
            });
            return;
        };
        let info = ShardInfo {
            stream: stream.scope.stream().clone(),
            shard_id: lease.shard_id(),
            lease_key: lease.key.clone(),
            parent_shard_ids: lease.parent_shard_ids.clone(),
        };
        let (signal, receiver) = watch::channel(ShutdownReason::None);
        let metrics = ShardMetrics::new(
            info.shard_id.as_str(),
            ctx.coordinator.worker_id(),
            stream.scope.stream_identifier(),
        );
        let consumer = ShardConsumer {
            metrics,
            processor: self.factory.create(&info),
            info,
            scope: stream.scope.clone(),
            initial_position: stream.initial_position,
            lease: lease.clone(),
            token,
            coordinator: ctx.coordinator.clone(),
            store: ctx.store.clone(),
            kinesis: self.kinesis.clone(),
            retrieval: self.retrieval.clone(),
            settings: ctx.settings.clone(),
            signal: receiver,
        };
        let key = lease.key.clone();
        consumers
            .tasks
            .spawn(async move { (key, consumer.run().await) });
        let stream = identifier_of(&lease).to_string();
        consumers.running.insert(
            lease.key,
            Running {
                signal,
                token,
                stream,
            },
        );
    }

    fn on_event(&self, event: LeaseEvent, ctx: &Context, consumers: &mut Consumers) {
        match event {
            LeaseEvent::Gained { lease, token } => match consumers.running.get(&lease.key) {
                // A consumer of an earlier holding is still winding down: it must stop (its
                // checkpoints are fenced by its token anyway); the new one starts after it.
                Some(r) => {
                    r.signal
                        .send_if_modified(|s| raise(s, ShutdownReason::LeaseLost));
                    consumers.pending.insert(lease.key.clone(), (lease, token));
                }
                None => self.spawn(consumers, lease, token, ctx),
            },
            LeaseEvent::Lost { key, reason } => {
                consumers.pending.remove(&key);
                if reason == LostReason::Released {
                    return;
                }
                if let Some(r) = consumers.running.get(&key) {
                    r.signal
                        .send_if_modified(|s| raise(s, ShutdownReason::LeaseLost));
                }
            }
            // An offer (a stop's, or the leader's passing on leases it took beyond its share)
            // taken back: the lease is held as before and its consumer never stopped.
            LeaseEvent::OfferWithdrawn { .. } => {}
            LeaseEvent::HandingOff { lease } => {
                consumers.pending.remove(&lease.key);
                match consumers.running.get(&lease.key) {
                    Some(r) => {
                        r.signal
                            .send_if_modified(|s| raise(s, ShutdownReason::HandingOff));
                    }
                    None => {
                        // Nothing is processing it (e.g. the shard already ended): end the hand-off now.
                        let coordinator = ctx.coordinator.clone();
                        tokio::spawn(async move {
                            let _ = coordinator.finish_hand_off(&lease.key, None).await;
                        });
                    }
                }
            }
        }
    }

    /// Lease events after shutdown began: losses and hand-offs reach the consumers, and an
    /// offer taken back is shut down like any other lease. Nothing new starts.
    async fn on_event_while_stopping(
        &self,
        event: LeaseEvent,
        ctx: &Context,
        consumers: &Consumers,
    ) {
        let (key, reason) = match event {
            LeaseEvent::Lost { key, .. } => (key, ShutdownReason::LeaseLost),
            LeaseEvent::HandingOff { lease } => (lease.key, ShutdownReason::HandingOff),
            LeaseEvent::OfferWithdrawn { key } => (key, ShutdownReason::Requested),
            _ => return,
        };
        match consumers.running.get(&key) {
            Some(r) => {
                r.signal.send_if_modified(|s| raise(s, reason));
            }
            None if reason == ShutdownReason::HandingOff => {
                // Nothing processes it here: end the hand-off now, so the receiver starts.
                let _ = ctx.coordinator.finish_hand_off(&key, None).await;
            }
            None => {}
        }
    }

    /// Bookkeeping when a consumer task ends; true if it processed its shard to the end. A
    /// holding gained while it was winding down starts now, unless the worker is stopping.
    async fn on_done(
        &self,
        done: Result<(String, Outcome), tokio::task::JoinError>,
        ctx: &Context,
        consumers: &mut Consumers,
        accepting: bool,
    ) -> bool {
        match done {
            Ok((key, outcome)) => {
                consumers.running.remove(&key);
                ctx.settings.load.behind(&key, None);
                if let Some((lease, token)) = consumers.pending.remove(&key)
                    && accepting
                {
                    self.spawn(consumers, lease, token, ctx);
                }
                outcome == Outcome::ShardEnded
            }
            Err(e) => {
                // Panics in processors are contained inside the consumer; this is a bug in
                // kcl-rs itself. Release every lease whose consumer vanished so others retry.
                error!(error = %crate::error::Report(&e), "shard consumer task failed");
                let orphans: Vec<(String, LeaseToken)> = consumers
                    .running
                    .iter()
                    .filter(|(_, r)| r.signal.is_closed())
                    .map(|(k, r)| (k.clone(), r.token))
                    .collect();
                for (key, token) in orphans {
                    consumers.running.remove(&key);
                    let _ = ctx.coordinator.release(&key, Some(token)).await;
                }
                false
            }
        }
    }
}

/// What the event handlers share.
struct Context {
    store: Arc<dyn LeaseStore>,
    coordinator: Arc<LeaseCoordinator>,
    settings: Arc<ConsumerSettings>,
    active: Arc<ActiveStreams>,
}

/// Streams no longer consumed: their consumers checkpoint and release, their pending holdings
/// are released.
fn on_streams_removed(ids: &[String], ctx: &Context, consumers: &mut Consumers) {
    for r in consumers.running.values() {
        if ids.contains(&r.stream) {
            r.signal
                .send_if_modified(|s| raise(s, ShutdownReason::Requested));
        }
    }
    let pending: Vec<String> = consumers
        .pending
        .iter()
        .filter(|(_, (lease, _))| ids.iter().any(|id| id == identifier_of(lease)))
        .map(|(k, _)| k.clone())
        .collect();
    for key in pending {
        if let Some((_, token)) = consumers.pending.remove(&key) {
            let coordinator = ctx.coordinator.clone();
            tokio::spawn(async move {
                let _ = coordinator.release(&key, Some(token)).await;
            });
        }
    }
}

/// The shard consumers of a running scheduler.
#[derive(Default)]
struct Consumers {
    running: BTreeMap<String, Running>,
    /// Holdings gained while a consumer of an earlier holding was still stopping.
    pending: BTreeMap<String, (Lease, LeaseToken)>,
    tasks: JoinSet<(String, Outcome)>,
}

/// Computes the fleet-sizing signal every interval (see [`workers_needed`]).
struct Sizing {
    tick: tokio::time::Interval,
    settings: FleetSizing,
    load: Arc<LoadMeter>,
    last_busy: std::time::Duration,
    load_factor: metrics::Gauge,
    needed: metrics::Gauge,
}

impl Sizing {
    fn new(worker: &str, settings: FleetSizing, load: Arc<LoadMeter>) -> Self {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let labels = [
            (
                crate::telemetry::labels::OPERATION,
                "FleetSizing".to_string(),
            ),
            (crate::telemetry::labels::WORKER, worker.to_string()),
        ];
        Self {
            tick,
            settings,
            load,
            last_busy: std::time::Duration::ZERO,
            load_factor: metrics::gauge!(names::LOAD_FACTOR, &labels),
            needed: metrics::gauge!(names::WORKERS_NEEDED, &labels),
        }
    }

    fn update(&mut self, workers: usize) {
        let (busy, behind) = self.load.sample();
        let window = self.settings.interval.as_secs_f64() * self.settings.capacity;
        let load_factor = (busy - self.last_busy).as_secs_f64() / window;
        self.last_busy = busy;
        self.load_factor.set(load_factor * 100.0);
        let needed = workers_needed(&self.settings, workers, load_factor, behind);
        self.needed.set(needed as f64);
        tracing::debug!(load_factor, workers, behind, needed, "fleet sizing");
    }
}

/// Raises the shutdown reason; never lowers it.
/// Resolves on SIGTERM or SIGINT. The handlers are installed now, before the first poll, so a
/// signal right after this call is not missed; if one cannot be installed, the other is watched
/// (or none).
fn signal_received() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }),
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                warn!(error = %crate::error::Report(&e), "could not watch one of SIGTERM/SIGINT");
                Box::pin(async move {
                    one.recv().await;
                })
            }
            (Err(e), Err(_)) => {
                warn!(error = %crate::error::Report(&e), "could not watch SIGTERM or SIGINT; run_until_signal runs until the stream ends");
                Box::pin(std::future::pending())
            }
        }
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

fn raise(current: &mut ShutdownReason, to: ShutdownReason) -> bool {
    if to > *current {
        *current = to;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hand_off_tests;

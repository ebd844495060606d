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

mod config;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{RetrievalMode, SchedulerBuilder, SchedulerConfig, SchedulerConfigError};

use crate::kinesis::KinesisDataPlane;
use crate::lease::{LeaseCoordinator, LeaseEvent, LeaseStore, LostReason};
use crate::processor::{ShardInfo, ShardRecordProcessorFactory};
use crate::retrieval::SharedRetrieval;
use crate::shard::ShutdownReason;
use crate::shard::consumer::{ConsumerSettings, Outcome, ShardConsumer};
use crate::shard::lineage::{SyncError, sync_shards};

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEnd {
    /// The shutdown token was cancelled; processors checkpointed and leases were handed off.
    ShutdownRequested,
    /// The stream no longer exists.
    StreamDeleted,
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
}

/// One worker of an application. Build it with [`SchedulerBuilder`].
pub struct Scheduler {
    config: SchedulerConfig,
    store: Arc<dyn LeaseStore>,
    kinesis: Arc<dyn KinesisDataPlane>,
    retrieval: SharedRetrieval,
    factory: Arc<dyn ShardRecordProcessorFactory>,
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
}

impl Scheduler {
    /// The settings this scheduler runs with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.config.coordinator.worker_id
    }

    /// Runs until `shutdown` is cancelled (then shuts down gracefully: stops taking leases, lets
    /// every processor checkpoint through `shutdown_requested`, hands leases off, within
    /// `shutdown_timeout`) or the stream is deleted.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunReport, SchedulerError> {
        let worker_id = self.worker_id().to_string();
        let (coordinator, mut events) =
            LeaseCoordinator::start(self.store.clone(), self.config.coordinator.clone())
                .map_err(SchedulerConfigError::from)?;
        let coordinator = Arc::new(coordinator);
        let settings = Arc::new(ConsumerSettings {
            stream: self.config.stream.clone(),
            initial_position: self.config.initial_position,
            failure_policy: self.config.failure_policy.clone(),
            checkpoint_policy: self.config.checkpoint_policy,
            parent_shard_poll_interval: self.config.parent_shard_poll_interval,
            hash_range_check: self.config.hash_range_check,
            seed: self.config.seed,
        });
        let (gone_tx, mut gone_rx) = mpsc::channel::<()>(1);
        let sync_stop = CancellationToken::new();
        let sync_task = tokio::spawn(shard_sync_loop(
            coordinator.clone(),
            self.kinesis.clone(),
            self.store.clone(),
            self.config.clone(),
            gone_tx,
            sync_stop.clone(),
        ));
        info!(worker_id = %worker_id, stream = %self.config.stream, "scheduler started");

        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut tasks: JoinSet<(String, Outcome)> = JoinSet::new();
        let mut shards_ended = 0;
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break RunEnd::ShutdownRequested,
                Some(()) = gone_rx.recv() => break RunEnd::StreamDeleted,
                Some(event) = events.recv() => self.on_event(event, &coordinator, &settings, &mut running, &mut tasks),
                Some(done) = tasks.join_next() => {
                    if self.on_done(done, &coordinator, &mut running).await {
                        shards_ended += 1;
                    }
                }
            }
        };
        info!(worker_id = %worker_id, ?end, consumers = running.len(), "scheduler shutting down");
        sync_stop.cancel();
        let _ = sync_task.await;
        coordinator.stop_taking();
        for r in running.values() {
            r.signal
                .send_if_modified(|s| raise(s, ShutdownReason::Requested));
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        let mut aborted = 0;
        loop {
            tokio::select! {
                biased;
                done = tasks.join_next() => match done {
                    Some(done) => {
                        if self.on_done(done, &coordinator, &mut running).await {
                            shards_ended += 1;
                        }
                    }
                    None => break,
                },
                Some(event) = events.recv() => {
                    // Losses during shutdown must still reach the consumers.
                    if let LeaseEvent::Lost { key, .. } = event
                        && let Some(r) = running.get(&key)
                    {
                        r.signal.send_if_modified(|s| raise(s, ShutdownReason::LeaseLost));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    aborted = tasks.len();
                    warn!(worker_id = %worker_id, consumers = aborted, "shutdown timeout: aborting shard consumers");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        coordinator.shutdown().await;
        info!(worker_id = %worker_id, shards_ended, aborted, "scheduler stopped");
        Ok(RunReport {
            end,
            shards_ended,
            aborted,
        })
    }

    fn on_event(
        &self,
        event: LeaseEvent,
        coordinator: &Arc<LeaseCoordinator>,
        settings: &Arc<ConsumerSettings>,
        running: &mut BTreeMap<String, Running>,
        tasks: &mut JoinSet<(String, Outcome)>,
    ) {
        match event {
            LeaseEvent::Gained(lease) => {
                if running.contains_key(&lease.key) {
                    return;
                }
                let info = ShardInfo {
                    stream: self.config.stream.clone(),
                    shard_id: lease.shard_id(),
                    lease_key: lease.key.clone(),
                    parent_shard_ids: lease.parent_shard_ids.clone(),
                };
                let (signal, receiver) = watch::channel(ShutdownReason::None);
                let consumer = ShardConsumer {
                    processor: self.factory.create(&info),
                    info,
                    lease: lease.clone(),
                    coordinator: coordinator.clone(),
                    store: self.store.clone(),
                    retrieval: self.retrieval.clone(),
                    settings: settings.clone(),
                    signal: receiver,
                };
                let key = lease.key.clone();
                tasks.spawn(async move { (key, consumer.run().await) });
                running.insert(lease.key, Running { signal });
            }
            LeaseEvent::Lost { key, reason } => {
                if reason == LostReason::Released {
                    return;
                }
                if let Some(r) = running.get(&key) {
                    r.signal
                        .send_if_modified(|s| raise(s, ShutdownReason::LeaseLost));
                }
            }
            LeaseEvent::HandingOff { lease } => match running.get(&lease.key) {
                Some(r) => {
                    r.signal
                        .send_if_modified(|s| raise(s, ShutdownReason::HandingOff));
                }
                None => {
                    // Nothing is processing it (e.g. the shard already ended): end the hand-off now.
                    let coordinator = coordinator.clone();
                    tokio::spawn(async move {
                        let _ = coordinator.finish_hand_off(&lease.key, None).await;
                    });
                }
            },
        }
    }

    /// Bookkeeping when a consumer task ends; true if it processed its shard to the end.
    async fn on_done(
        &self,
        done: Result<(String, Outcome), tokio::task::JoinError>,
        coordinator: &LeaseCoordinator,
        running: &mut BTreeMap<String, Running>,
    ) -> bool {
        match done {
            Ok((key, outcome)) => {
                running.remove(&key);
                outcome == Outcome::ShardEnded
            }
            Err(e) => {
                // Panics in processors are contained inside the consumer; this is a bug in
                // kcl-rs itself. Release every lease whose consumer vanished so others retry.
                error!(error = %e, "shard consumer task failed");
                let orphans: Vec<String> = running
                    .iter()
                    .filter(|(_, r)| r.signal.is_closed())
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in orphans {
                    running.remove(&key);
                    let _ = coordinator.release(&key).await;
                }
                false
            }
        }
    }
}

/// Raises the shutdown reason; never lowers it.
fn raise(current: &mut ShutdownReason, to: ShutdownReason) -> bool {
    if to > *current {
        *current = to;
        true
    } else {
        false
    }
}

async fn shard_sync_loop(
    coordinator: Arc<LeaseCoordinator>,
    kinesis: Arc<dyn KinesisDataPlane>,
    store: Arc<dyn LeaseStore>,
    config: SchedulerConfig,
    gone: mpsc::Sender<()>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(config.shard_sync_interval) => {}
            }
        }
        match sync_shards(
            kinesis.as_ref(),
            store.as_ref(),
            &config.stream,
            config.initial_position,
        )
        .await
        {
            Ok(report) => {
                first = false;
                if !report.created.is_empty() || !report.deleted.is_empty() {
                    info!(
                        created = report.created.len(),
                        deleted = report.deleted.len(),
                        "shard sync"
                    );
                }
                if !report.created.is_empty() {
                    // New leases: take them now rather than at the next taker cycle.
                    coordinator.take_now().await;
                }
            }
            Err(SyncError::StreamGone { stream, source }) => {
                error!(%stream, error = %source, "stream not found; stopping");
                let _ = gone.send(()).await;
                return;
            }
            Err(e) => {
                warn!(error = %e, "shard sync failed; retrying");
                if first {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

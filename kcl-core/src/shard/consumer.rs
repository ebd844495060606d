//! The shard consumer: one tokio task per held lease, driving the processor through
//! waiting-on-parents → initializing → processing → (shutdown requested) → shutting down → done.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::retry::Backoff;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::delivery::{BatchingWindow, Delivered, Delivery};
use super::failure::{Decision, Exhausted, FailurePolicy, ProcessorFailure};
use super::lineage::{create_child_leases, parents_done};
use crate::aggregation::{Deaggregator, HashRangePolicy};
use crate::checkpoint::Checkpointer;
use crate::clock::WallClock;
use crate::kinesis::KinesisDataPlane;
use crate::lease::{Lease, LeaseCoordinator, LeaseScope, LeaseStore, LeaseToken};
use crate::model::{
    ExtendedSequenceNumber, HashKeyRange, InitialPosition, SequenceNumberRange, Shard,
};
use crate::processor::{
    InitializationInput, LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo,
    ShardRecordProcessor,
};
use crate::retrieval::{
    RetrievalError, ShardRead, SharedRetrieval, StartFrom, TrimmedDataPolicy, TrimmedGap,
};

/// Why a shard consumer stops, ranked: a higher reason overrides a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownReason {
    /// Keep going.
    None,
    /// The worker is shutting down gracefully.
    Requested,
    /// Another worker took the lease gracefully: finish and checkpoint for it.
    HandingOff,
    /// The lease is gone: stop at once.
    LeaseLost,
}

/// Automatic checkpointing, for applications that do not checkpoint themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointPolicy {
    /// The processor checkpoints (and `shard_ended` / `shutdown_requested` checkpoint by default).
    #[default]
    Manual,
    /// After a batch is processed, checkpoint when at least `records` user records or
    /// `interval` have passed since the last checkpoint.
    Auto {
        /// Records between checkpoints.
        records: u64,
        /// Time between checkpoints.
        interval: Duration,
    },
}

/// Settings shared by a scheduler's shard consumers.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    pub(crate) load: Arc<crate::telemetry::LoadMeter>,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) checkpoint_policy: CheckpointPolicy,
    pub(crate) idle_tick: Option<Duration>,
    pub(crate) batching_window: BatchingWindow,
    pub(crate) parent_shard_poll_interval: Duration,
    pub(crate) hash_range_check: Option<HashRangePolicy>,
    pub(crate) trimmed_data: TrimmedDataPolicy,
    /// Bumped whenever a consumer of this scheduler ends its shard: children waiting on their
    /// parents check again at once instead of at their next poll.
    pub(crate) shard_ends: watch::Sender<u64>,
    /// Shards stopped until an operator acts, shown by the scheduler's status.
    pub(crate) stopped: Arc<super::stopped::StoppedShards>,
    pub(crate) seed: u64,
    /// A bounded run's bound: records that arrived at or after it are not delivered.
    pub(crate) stop_at: Option<std::time::SystemTime>,
}

/// What happened to a shard consumer, for the scheduler's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The shard was processed to its end.
    ShardEnded,
    /// A bounded run's bound was reached; the lease stays held until `run` returns.
    BoundReached,
    /// Stopped by a shutdown, hand-off or lease loss.
    Stopped(ShutdownReason),
    /// The failure policy stopped the shard, or retrieval failed for good; lease released.
    Failed,
}

pub(crate) struct ShardConsumer {
    pub(crate) info: ShardInfo,
    /// The lease's stream and how its leases are keyed.
    pub(crate) scope: LeaseScope,
    /// Where the stream's shards with no checkpoint start.
    pub(crate) initial_position: InitialPosition,
    pub(crate) lease: Lease,
    pub(crate) token: LeaseToken,
    pub(crate) coordinator: Arc<LeaseCoordinator>,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) kinesis: Arc<dyn KinesisDataPlane>,
    pub(crate) retrieval: SharedRetrieval,
    pub(crate) processor: Box<dyn ShardRecordProcessor>,
    pub(crate) settings: Arc<ConsumerSettings>,
    pub(crate) signal: watch::Receiver<ShutdownReason>,
    pub(crate) metrics: crate::telemetry::ShardMetrics,
}

fn seed_for(base: u64, key: &str) -> u64 {
    key.bytes().fold(base ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

impl ShardConsumer {
    fn reason(&self) -> ShutdownReason {
        *self.signal.borrow()
    }

    /// Waits `d`, or less if a shutdown reason arrives.
    async fn pause(&mut self, d: Duration) -> ShutdownReason {
        let deadline = Instant::now() + d;
        loop {
            let reason = self.reason();
            if reason != ShutdownReason::None {
                return reason;
            }
            tokio::select! {
                biased;
                changed = self.signal.changed() => if changed.is_err() { return ShutdownReason::LeaseLost },
                _ = tokio::time::sleep_until(deadline) => return ShutdownReason::None,
            }
        }
    }

    pub(crate) async fn run(mut self) -> Outcome {
        let key = self.lease.key.clone();
        let seed = seed_for(self.settings.seed, &key);
        let mut checkpointer = Checkpointer::new(
            key.clone(),
            self.token,
            self.coordinator.clone(),
            self.lease.checkpoint.clone(),
            seed,
        );

        // Waiting on parents.
        let mut shard_ends = self.settings.shard_ends.subscribe();
        loop {
            match parents_done(
                self.store.as_ref(),
                self.kinesis.as_ref(),
                &self.scope,
                &self.lease,
            )
            .await
            {
                Ok(true) => break,
                Ok(false) => {
                    debug!(shard_id = %self.info.shard_id, "waiting for parent shards to end")
                }
                Err(e) => {
                    warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&e), "could not read parent leases")
                }
            }
            let interval = self.settings.parent_shard_poll_interval;
            let reason = tokio::select! {
                reason = self.pause(interval) => reason,
                // A shard ended here (maybe a parent): check again now.
                _ = shard_ends.changed() => self.reason(),
            };
            if reason != ShutdownReason::None {
                return self
                    .stop_without_processing(reason, &mut checkpointer)
                    .await;
            }
        }

        // Initializing.
        let init = InitializationInput {
            shard: self.info.clone(),
            checkpoint: self.lease.checkpoint.clone(),
            pending_checkpoint: self.lease.pending_checkpoint.clone(),
            pending_checkpoint_state: self.lease.pending_checkpoint_state.clone(),
        };
        let mut backoff = self.backoff(seed);
        loop {
            let result = AssertUnwindSafe(self.processor.initialize(init.clone()))
                .catch_unwind()
                .await;
            if self.succeeded(result, "initialize") {
                break;
            }
            if let Some(reason) = self.back_off(&mut backoff).await {
                return self
                    .stop_without_processing(reason, &mut checkpointer)
                    .await;
            }
        }
        info!(shard_id = %self.info.shard_id, worker_id = %self.coordinator.worker_id(), checkpoint = %self.lease.checkpoint, "shard consumer processing");

        // Processing.
        let range = self.lease.hash_key_range.unwrap_or(HashKeyRange::FULL);
        let mut deaggregator = Deaggregator::new().for_shard(self.info.shard_id.clone());
        if let Some(policy) = self.settings.hash_range_check {
            deaggregator = deaggregator.with_hash_range_check(range, policy);
        }
        if self.lease.checkpoint == ExtendedSequenceNumber::AtTimestamp
            && !matches!(self.initial_position, InitialPosition::AtTimestamp(_))
        {
            warn!(
                shard_id = %self.info.shard_id,
                lease_key = %self.lease.key,
                initial_position = ?self.initial_position,
                "the lease says AT_TIMESTAMP but no initial timestamp is configured; reading from TRIM_HORIZON so that nothing after the unknown timestamp is lost (configure the timestamp to start there)"
            );
        }
        let read = ShardRead {
            stream: self.scope.stream().clone(),
            shard: Shard {
                id: self.info.shard_id.clone(),
                parent: self.lease.parent_shard_ids.first().cloned(),
                adjacent_parent: self.lease.parent_shard_ids.get(1).cloned(),
                hash_key_range: range,
                sequence_number_range: SequenceNumberRange {
                    start: crate::model::SequenceNumber::from_u128(0),
                    end: None,
                },
            },
            start: StartFrom {
                checkpoint: self.lease.checkpoint.clone(),
                initial_position: self.initial_position,
            },
            seed,
        };
        let mut delivery = Delivery::new(
            self.retrieval.start(read.clone()),
            deaggregator,
            &self.lease.checkpoint,
            self.settings.batching_window,
        );
        let mut auto = AutoCheckpoint::new(self.settings.checkpoint_policy);
        let idle = self.settings.idle_tick;
        let wall = crate::clock::WallClock::start();
        let mut next_tick = idle.map(|t| tokio::time::Instant::now() + t);
        loop {
            let tick = async {
                match next_tick {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let batch = tokio::select! {
                biased;
                changed = self.signal.changed() => {
                    if changed.is_err() || self.reason() != ShutdownReason::None {
                        let reason = if changed.is_err() { ShutdownReason::LeaseLost } else { self.reason() };
                        return self.shut_down(reason, &mut checkpointer).await;
                    }
                    continue;
                }
                batch = delivery.next() => batch,
                () = tick => {
                    next_tick = idle.map(|t| tokio::time::Instant::now() + t);
                    // Records waiting in a batching window are not idleness.
                    if delivery.is_empty() && self.coordinator.is_held(&key) {
                        self.idle_call(&mut checkpointer).await;
                    }
                    continue;
                }
            };
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(RetrievalError::Trimmed(gap)) => {
                    let policy = self.settings.trimmed_data;
                    self.report_trimmed(&gap, policy);
                    let told = AssertUnwindSafe(self.processor.records_trimmed(&gap))
                        .catch_unwind()
                        .await;
                    if told.is_err() {
                        warn!(shard_id = %self.info.shard_id, "records_trimmed panicked");
                    }
                    if policy == TrimmedDataPolicy::Stop {
                        drop(delivery);
                        return self.stop_trimmed(gap, &mut checkpointer).await;
                    }
                    let retrieval = self.retrieval.clone();
                    let from_trim_horizon = ShardRead {
                        start: StartFrom {
                            checkpoint: ExtendedSequenceNumber::TrimHorizon,
                            initial_position: self.initial_position,
                        },
                        ..read.clone()
                    };
                    delivery.pass_gap(|| retrieval.start(from_trim_horizon));
                    continue;
                }
                Err(e) => return self.retrieval_failed(e, &mut checkpointer).await,
            };
            let bound_reached = self
                .settings
                .stop_at
                .is_some_and(|bound| batch.cut(bound, wall.now()));
            let report = delivery.take_report();
            if report.malformed > 0 {
                self.metrics.pass_throughs.increment(report.malformed);
            }
            if report.hash_range_dropped > 0 {
                self.metrics
                    .range_drops
                    .increment(report.hash_range_dropped);
            }
            // Deliver only while this worker believes it holds the lease: after a hand-off or
            // a loss was detected (its signal may still be on its way) or while renewals lag,
            // records delivered now could not be checkpointed and would be processed twice.
            while !self.coordinator.is_held(&key) {
                let reason = self.pause(Duration::from_millis(200)).await;
                if reason != ShutdownReason::None {
                    return self.shut_down(reason, &mut checkpointer).await;
                }
            }
            let shard_end = batch.shard_end.is_some();
            if !batch.records.is_empty() {
                next_tick = idle.map(|t| tokio::time::Instant::now() + t);
            }
            if !batch.records.is_empty() || shard_end {
                if let Some(reason) = self.process(&batch, &mut checkpointer).await {
                    return match reason {
                        Stop::Shutdown(reason) => self.shut_down(reason, &mut checkpointer).await,
                        Stop::Failed => self.stop_failed(&mut checkpointer).await,
                    };
                }
                auto.after_batch(batch.records.len() as u64, &mut checkpointer, &self.info)
                    .await;
            }
            if bound_reached {
                drop(delivery);
                return self.bound_reached(&mut checkpointer).await;
            }
            if let Some(children) = batch.shard_end {
                drop(delivery);
                return self.shard_ended(children, &mut checkpointer).await;
            }
        }
    }

    /// Waits for the next retry delay; the shutdown reason if one arrived meanwhile.
    async fn back_off(&mut self, backoff: &mut Backoff) -> Option<ShutdownReason> {
        let reason = self
            .pause(backoff.next_delay().unwrap_or(Duration::from_secs(30)))
            .await;
        (reason != ShutdownReason::None).then_some(reason)
    }

    /// Logs a processor callback that failed or panicked; true when it succeeded.
    fn succeeded(
        &self,
        result: std::thread::Result<Result<(), ProcessorError>>,
        callback: &str,
    ) -> bool {
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&*e), "{callback} failed");
                false
            }
            Err(p) => {
                warn!(shard_id = %self.info.shard_id, panic = %panic_message(&p), "{callback} panicked");
                false
            }
        }
    }

    fn backoff(&self, seed: u64) -> Backoff {
        self.settings.failure_policy.retry().backoff(seed)
    }

    /// Delivers one batch under the failure policy. Returns why processing must stop, if it must.
    /// The idle tick: `process_records` with no records. An error or panic is logged; there is
    /// nothing to retry, and the next tick comes anyway.
    async fn idle_call(&mut self, checkpointer: &mut Checkpointer) {
        let input = ProcessRecordsInput {
            records: &[],
            checkpointer,
            millis_behind_latest: 0,
            child_shards: None,
            is_at_shard_end: false,
        };
        let result = AssertUnwindSafe(self.processor.process_records(input))
            .catch_unwind()
            .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&*e), "process_records failed on an idle tick")
            }
            Err(_) => {
                warn!(shard_id = %self.info.shard_id, "process_records panicked on an idle tick")
            }
        }
    }

    async fn process(
        &mut self,
        batch: &Delivered,
        checkpointer: &mut Checkpointer,
    ) -> Option<Stop> {
        self.metrics.behind.set(batch.millis_behind_latest as f64);
        self.settings
            .load
            .behind(&self.lease.key, Some(batch.millis_behind_latest));
        let previous = checkpointer.largest_delivered();
        if let Some(last) = batch.records.last() {
            checkpointer.set_largest_delivered(Some(last.extended_sequence_number()));
        }
        if batch.shard_end.is_some() {
            checkpointer.set_at_shard_end(true);
        }
        let mut backoff = self.backoff(seed_for(self.settings.seed, &self.lease.key) ^ 1);
        let clock = WallClock::start();
        let mut attempts = 0u32;
        loop {
            if batch.records.is_empty() {
                return None;
            }
            let input = ProcessRecordsInput {
                records: &batch.records,
                checkpointer,
                millis_behind_latest: batch.millis_behind_latest,
                child_shards: batch.shard_end.as_deref(),
                is_at_shard_end: batch.shard_end.is_some(),
            };
            let started = Instant::now();
            let result = AssertUnwindSafe(self.processor.process_records(input))
                .catch_unwind()
                .await;
            let took = started.elapsed();
            self.settings.load.busy(took);
            self.metrics
                .process_time
                .record(took.as_secs_f64() * 1000.0);
            let failure = match result {
                Ok(Ok(())) => {
                    let bytes: usize = batch.records.iter().map(|r| r.data.len()).sum();
                    self.metrics.records.increment(batch.records.len() as u64);
                    self.metrics.bytes.increment(bytes as u64);
                    self.coordinator
                        .record_processed_bytes(&self.lease.key, bytes as u64);
                    self.metrics.batch_size.record(batch.records.len() as f64);
                    return None;
                }
                Ok(Err(e)) => ProcessorFailure::Error(e.to_string()),
                Err(p) => ProcessorFailure::Panic(panic_message(&p)),
            };
            attempts += 1;
            let (first, last) = (&batch.records[0], &batch.records[batch.records.len() - 1]);
            let oldest = batch
                .records
                .iter()
                .map(|r| r.approximate_arrival_timestamp)
                .min()
                .unwrap_or(first.approximate_arrival_timestamp);
            let decision = self
                .settings
                .failure_policy
                .decide(attempts, clock.age(oldest));
            warn!(
                shard_id = %self.info.shard_id,
                first = %first.extended_sequence_number(),
                last = %last.extended_sequence_number(),
                records = batch.records.len(),
                attempts,
                outcome = decision.outcome_label(),
                %failure,
                "process_records failed"
            );
            self.metrics.processor_error(decision.outcome_label());
            let records = batch.records.len() as u64;
            match decision {
                Decision::Retry => {
                    if let Some(reason) = self.back_off(&mut backoff).await {
                        checkpointer.undeliver(previous.clone());
                        return Some(Stop::Shutdown(reason));
                    }
                }
                Decision::Give(Exhausted::Skip) => {
                    error!(shard_id = %self.info.shard_id, records, attempts, first = %first.extended_sequence_number(), last = %last.extended_sequence_number(), "batch skipped by the failure policy");
                    self.metrics.skipped.increment(records);
                    return None;
                }
                Decision::Give(Exhausted::DeadLetter(handler)) => loop {
                    match handler.handle(&self.info, &batch.records, &failure).await {
                        Ok(()) => {
                            warn!(shard_id = %self.info.shard_id, records, attempts, first = %first.extended_sequence_number(), last = %last.extended_sequence_number(), "batch dead-lettered by the failure policy");
                            self.metrics.dead_lettered.increment(records);
                            return None;
                        }
                        Err(e) => {
                            warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&*e), "dead-letter handler failed; retrying")
                        }
                    }
                    if let Some(reason) = self.back_off(&mut backoff).await {
                        checkpointer.undeliver(previous.clone());
                        return Some(Stop::Shutdown(reason));
                    }
                },
                Decision::Give(Exhausted::StopShard) => {
                    checkpointer.undeliver(previous.clone());
                    return Some(Stop::Failed);
                }
            }
        }
    }

    /// All records of a closed shard were processed: create the children's leases, let the
    /// processor checkpoint, and make sure SHARD_END is written.
    async fn shard_ended(
        mut self,
        children: Vec<crate::model::ChildShard>,
        checkpointer: &mut Checkpointer,
    ) -> Outcome {
        checkpointer.set_at_shard_end(true);
        let mut backoff = self.backoff(seed_for(self.settings.seed, &self.lease.key) ^ 2);
        loop {
            if let Err(e) =
                create_child_leases(self.store.as_ref(), &self.scope, &self.lease.key, &children)
                    .await
            {
                warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&e), "could not create child leases; retrying");
            } else {
                break;
            }
            if let Some(reason) = self.back_off(&mut backoff).await {
                return self.shut_down(reason, checkpointer).await;
            }
        }
        loop {
            let result = AssertUnwindSafe(self.processor.shard_ended(checkpointer))
                .catch_unwind()
                .await;
            if self.succeeded(result, "shard_ended") {
                break;
            }
            if let Some(reason) = self.back_off(&mut backoff).await {
                return self.shut_down(reason, checkpointer).await;
            }
        }
        // Every record was processed successfully; a processor that did not checkpoint the end
        // must not leave the children waiting forever (the KCL loops here).
        while checkpointer.last_checkpoint() != ExtendedSequenceNumber::ShardEnd {
            match checkpointer.write(ExtendedSequenceNumber::ShardEnd).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    if let Some(reason) = self.back_off(&mut backoff).await {
                        return self.shut_down(reason, checkpointer).await;
                    }
                }
                Err(e) => {
                    warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&e), "could not checkpoint SHARD_END");
                    return self
                        .shut_down(ShutdownReason::LeaseLost, checkpointer)
                        .await;
                }
            }
        }
        // A SHARD_END written during a hand-off is buffered: this ends the hand-off with it.
        checkpointer.close().await;
        info!(shard_id = %self.info.shard_id, children = children.len(), "shard ended");
        // The children start now rather than at the next poll or listing: those waiting here
        // check their parents again, and the taker lists at once to take the new leases.
        self.settings
            .shard_ends
            .send_modify(|n| *n = n.wrapping_add(1));
        self.coordinator.list_now();
        Outcome::ShardEnded
    }

    /// A bounded run reached its bound on this shard: the processor checkpoints as at a
    /// shutdown, and the lease stays held (not processed) until `run` returns, so no other
    /// worker of the run processes the shard past the bound.
    async fn bound_reached(mut self, checkpointer: &mut Checkpointer) -> Outcome {
        let result = AssertUnwindSafe(self.processor.shutdown_requested(checkpointer))
            .catch_unwind()
            .await;
        self.succeeded(result, "shutdown_requested");
        checkpointer.close().await;
        info!(shard_id = %self.info.shard_id, checkpoint = %checkpointer.last_checkpoint(), "shard reached the run's bound");
        Outcome::BoundReached
    }

    async fn shut_down(
        mut self,
        reason: ShutdownReason,
        checkpointer: &mut Checkpointer,
    ) -> Outcome {
        let key = self.lease.key.clone();
        match reason {
            ShutdownReason::LeaseLost | ShutdownReason::None => {
                checkpointer.close().await;
                let input = LeaseLostInput {
                    shard: self.info.clone(),
                };
                let _ = AssertUnwindSafe(self.processor.lease_lost(input))
                    .catch_unwind()
                    .await;
                info!(shard_id = %self.info.shard_id, "shard consumer stopped: lease lost");
            }
            ShutdownReason::Requested | ShutdownReason::HandingOff => {
                if reason == ShutdownReason::HandingOff {
                    checkpointer.hand_off();
                }
                let result = AssertUnwindSafe(self.processor.shutdown_requested(checkpointer))
                    .catch_unwind()
                    .await;
                self.succeeded(result, "shutdown_requested");
                // Ends a hand-off the processor did not checkpoint for (the new owner starts
                // now), and fences checkpoint handles first: nothing may land after a release.
                let handed_off = checkpointer.close().await;
                if !handed_off && reason == ShutdownReason::Requested {
                    let _ = self.coordinator.release(&key, Some(self.token)).await;
                }
                info!(shard_id = %self.info.shard_id, ?reason, "shard consumer stopped");
            }
        }
        Outcome::Stopped(reason)
    }

    async fn stop_without_processing(
        self,
        reason: ShutdownReason,
        checkpointer: &mut Checkpointer,
    ) -> Outcome {
        match reason {
            ShutdownReason::HandingOff => {
                let _ = self
                    .coordinator
                    .finish_hand_off(&self.lease.key, None)
                    .await;
            }
            ShutdownReason::Requested => {
                let _ = self
                    .coordinator
                    .release(&self.lease.key, Some(self.token))
                    .await;
            }
            _ => {}
        }
        checkpointer.close().await;
        Outcome::Stopped(reason)
    }

    async fn stop_failed(self, checkpointer: &mut Checkpointer) -> Outcome {
        checkpointer.close().await;
        error!(shard_id = %self.info.shard_id, "failure policy stopped the shard; releasing its lease");
        let _ = self
            .coordinator
            .release(&self.lease.key, Some(self.token))
            .await;
        Outcome::Failed
    }

    /// Logs and counts a trimmed gap.
    fn report_trimmed(&self, gap: &TrimmedGap, policy: TrimmedDataPolicy) {
        self.metrics.trimmed(policy.outcome());
        let after = gap.after.as_ref().map(ToString::to_string);
        let first_readable = gap.first_readable.as_ref().map(ToString::to_string);
        let arrival_unix_ms = gap.first_readable_arrival.and_then(|t| {
            t.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64)
        });
        error!(
            shard_id = %self.info.shard_id,
            lease_key = %self.lease.key,
            after = after.as_deref().unwrap_or("unknown"),
            first_readable = first_readable.as_deref().unwrap_or("unknown"),
            first_readable_arrival_unix_ms = ?arrival_unix_ms,
            message = gap.message.as_deref().unwrap_or(""),
            policy = policy.outcome(),
            "records were trimmed (past the stream's retention) before they were read"
        );
    }

    /// Under [`TrimmedDataPolicy::Stop`]: processes nothing more and keeps the lease (so no
    /// other worker passes over the gap either) until it is lost, handed off or the worker
    /// stops; the shard shows as stopped meanwhile.
    async fn stop_trimmed(mut self, gap: TrimmedGap, checkpointer: &mut Checkpointer) -> Outcome {
        let _stopped = self.settings.stopped.stop(&self.lease.key, gap.to_string());
        self.metrics.stopped.set(1.0);
        let reason = loop {
            let reason = self.pause(Duration::from_secs(3600)).await;
            if reason != ShutdownReason::None {
                break reason;
            }
        };
        self.metrics.stopped.set(0.0);
        self.shut_down(reason, checkpointer).await
    }

    async fn retrieval_failed(self, e: RetrievalError, checkpointer: &mut Checkpointer) -> Outcome {
        match e {
            RetrievalError::ShardGone(e) => {
                // Either the shard is gone (stream deleted, past retention: shard sync confirms
                // that and deletes the lease) or Kinesis answered wrongly for a while. Keeping
                // the lease without a consumer would leave the shard stuck for ever; releasing
                // it lets a fresh consumer (here or elsewhere) retry from the checkpoint.
                warn!(shard_id = %self.info.shard_id, error = %crate::error::Report(&e), "shard not found; releasing its lease");
                checkpointer.close().await;
                let _ = self
                    .coordinator
                    .release(&self.lease.key, Some(self.token))
                    .await;
                Outcome::Failed
            }
            e => {
                error!(shard_id = %self.info.shard_id, error = %crate::error::Report(&e), "retrieval failed; releasing the lease");
                self.stop_failed(checkpointer).await
            }
        }
    }
}

enum Stop {
    Shutdown(ShutdownReason),
    Failed,
}

/// Checkpoints after batches per [`CheckpointPolicy::Auto`].
struct AutoCheckpoint {
    policy: CheckpointPolicy,
    records: u64,
    since: Instant,
}

impl AutoCheckpoint {
    fn new(policy: CheckpointPolicy) -> Self {
        Self {
            policy,
            records: 0,
            since: Instant::now(),
        }
    }

    async fn after_batch(
        &mut self,
        records: u64,
        checkpointer: &mut Checkpointer,
        info: &ShardInfo,
    ) {
        let CheckpointPolicy::Auto {
            records: every,
            interval,
        } = self.policy
        else {
            return;
        };
        self.records += records;
        if self.records >= every || self.since.elapsed() >= interval {
            match checkpointer.checkpoint().await {
                Ok(()) => {
                    self.records = 0;
                    self.since = Instant::now();
                }
                Err(e) => {
                    warn!(shard_id = %info.shard_id, error = %crate::error::Report(&e), "automatic checkpoint failed")
                }
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

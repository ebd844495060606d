//! Checkpointing: recording in the lease how far a shard has been processed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use crate::lease::{CheckpointUpdate, HeldLeaseError, LeaseCoordinator, LeaseError, LeaseToken};
use crate::model::{ExtendedSequenceNumber, SequenceNumber};

/// A checkpoint that was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The position is before the last checkpoint: checkpoints never go backwards.
    #[error("checkpoint {requested} is before the last checkpoint {last}")]
    BeforeLastCheckpoint {
        /// The requested position.
        requested: ExtendedSequenceNumber,
        /// The last checkpoint.
        last: ExtendedSequenceNumber,
    },
    /// The position is after the largest record delivered to the processor.
    #[error("checkpoint {requested} is after the largest delivered record {largest:?}")]
    AfterLargestDelivered {
        /// The requested position.
        requested: ExtendedSequenceNumber,
        /// The largest delivered record, if any.
        largest: Option<ExtendedSequenceNumber>,
    },
    /// This worker no longer holds the lease: nothing was written (the fence that keeps a
    /// former owner from moving a checkpoint).
    #[error("lease {key} is no longer held: checkpoint not written")]
    LeaseLost {
        /// The lease key.
        key: String,
    },
    /// The lease store failed; retryable errors were already retried.
    #[error("lease store failed while checkpointing")]
    Store(#[source] LeaseError),
}

impl CheckpointError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The lease is held: checkpoints are conditional writes through the coordinator.
    Holding,
    /// Another worker took the lease gracefully: checkpoints are buffered, and the hand-off
    /// ends with the last of them when the consumer closes.
    HandingOff,
    /// Nothing more may be written.
    Closed,
}

/// Checkpoints one shard. Handed to the processor with each batch and at shutdown.
///
/// [`handle`](Self::handle) gives a cloneable, `Send` [`CheckpointHandle`] for checkpointing
/// later from another task (e.g. after an asynchronous flush), fenced exactly like this one.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<Shared>,
}

/// A cloneable, `Send` handle on a shard's [`Checkpointer`], for checkpointing from any task
/// after the callback that took it returned — typically a background flusher that checkpoints
/// once a write to its sink is durable.
///
/// Fenced exactly like the checkpointer: once the lease is lost, taken or released, every
/// checkpoint fails with [`CheckpointError::LeaseLost`] and writes nothing. During a graceful
/// hand-off, checkpoints succeed but are buffered: the hand-off ends with the last of them once
/// `shutdown_requested` has returned, and the new owner starts right after it (a crash before
/// then loses them: the new owner starts from the previous checkpoint).
/// Positions must lie between the last checkpoint and the largest record delivered so far.
/// Writes through clones of one handle and the checkpointer are serialized, and a checkpoint
/// never goes backwards: one behind a concurrent later one fails with
/// [`CheckpointError::BeforeLastCheckpoint`].
///
/// A flusher that must not lose its last checkpoint at shutdown or hand-off finishes before
/// `shutdown_requested` returns (await it there): after that callback the shard's consumer
/// ends the hand-off or releases the lease, and later checkpoints are fenced.
#[derive(Debug, Clone)]
pub struct CheckpointHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    key: String,
    token: LeaseToken,
    coordinator: Arc<LeaseCoordinator>,
    seed: u64,
    state: parking_lot::Mutex<State>,
    /// One checkpoint operation at a time (validation, write, state update), so `last` only
    /// moves forward and a hand-off ends once. Held across the store call; `state` never is.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct State {
    mode: Mode,
    last: ExtendedSequenceNumber,
    largest_delivered: Option<ExtendedSequenceNumber>,
    at_shard_end: bool,
    /// During a hand-off: the checkpoint the hand-off ends with when the consumer closes.
    hand_off_position: Option<ExtendedSequenceNumber>,
}

impl Checkpointer {
    pub(crate) fn new(
        key: String,
        token: LeaseToken,
        coordinator: Arc<LeaseCoordinator>,
        last: ExtendedSequenceNumber,
        seed: u64,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                key,
                token,
                coordinator,
                seed,
                state: parking_lot::Mutex::new(State {
                    mode: Mode::Holding,
                    last,
                    largest_delivered: None,
                    at_shard_end: false,
                    hand_off_position: None,
                }),
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A handle for checkpointing this shard later, from any task.
    pub fn handle(&self) -> CheckpointHandle {
        CheckpointHandle {
            shared: self.shared.clone(),
        }
    }

    /// The last checkpoint written (or read at start).
    pub fn last_checkpoint(&self) -> ExtendedSequenceNumber {
        self.shared.state.lock().last.clone()
    }

    /// The largest record delivered to the processor (successfully processed, outside
    /// `process_records`).
    pub fn largest_delivered(&self) -> Option<ExtendedSequenceNumber> {
        self.shared.state.lock().largest_delivered.clone()
    }

    pub(crate) fn set_largest_delivered(&mut self, position: Option<ExtendedSequenceNumber>) {
        self.shared.state.lock().largest_delivered = position;
    }

    pub(crate) fn set_at_shard_end(&mut self, at_end: bool) {
        self.shared.state.lock().at_shard_end = at_end;
    }

    /// Forgets a batch that was not processed: neither its records nor a shard end it carried
    /// count as delivered any more, so no default checkpoint can cover them.
    pub(crate) fn undeliver(&mut self, previous: Option<ExtendedSequenceNumber>) {
        let mut state = self.shared.state.lock();
        state.largest_delivered = previous;
        state.at_shard_end = false;
    }

    pub(crate) fn hand_off(&mut self) {
        let mut state = self.shared.state.lock();
        if state.mode == Mode::Holding {
            state.mode = Mode::HandingOff;
        }
    }

    /// Ends this holding of the lease for checkpoints: once a checkpoint in flight finished,
    /// ends a hand-off in progress with the last checkpoint buffered for it (or none, so the new
    /// owner starts now), then fences everything after, through this checkpointer and its
    /// handles. Returns whether the lease was being handed off.
    pub(crate) async fn close(&mut self) -> bool {
        let _writing = self.shared.writing.lock().await;
        let (mode, buffered) = {
            let mut s = self.shared.state.lock();
            (s.mode, s.hand_off_position.take())
        };
        if mode == Mode::HandingOff {
            let result = self
                .shared
                .coordinator
                .finish_hand_off(&self.shared.key, buffered.clone())
                .await;
            if let (Err(e), Some(position)) = (result, buffered) {
                warn!(lease_key = %self.shared.key, checkpoint = %position, error = %crate::error::Report(&e),
                    "the hand-off's final checkpoint was not written; the new owner resumes from an earlier one");
            }
        }
        self.shared.state.lock().mode = Mode::Closed;
        mode == Mode::HandingOff
    }

    /// Checkpoints everything delivered so far (SHARD_END once a closed shard is done).
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        let _writing = self.shared.writing.lock().await;
        let state = self.shared.state.lock().clone();
        match state.largest_delivered {
            Some(position) => self.shared.checkpoint_at_position(position).await,
            None if state.at_shard_end => self.shared.write(ExtendedSequenceNumber::ShardEnd).await,
            // Nothing delivered: nothing to record.
            None => Ok(()),
        }
    }

    /// Checkpoints at a record: `sequence`, and `sub_sequence` inside a KPL aggregate (0 for
    /// records that were not aggregated).
    pub async fn checkpoint_at(
        &mut self,
        sequence: SequenceNumber,
        sub_sequence: u64,
    ) -> Result<(), CheckpointError> {
        self.handle().checkpoint_at(sequence, sub_sequence).await
    }

    /// Prepares a checkpoint (two-phase): records `position` (default: everything delivered) and
    /// optional application state as pending, without moving the checkpoint. Commit it with
    /// [`PreparedCheckpoint::commit`]; an uncommitted one is shown to the next `initialize`.
    pub async fn prepare_checkpoint(
        &mut self,
        position: Option<ExtendedSequenceNumber>,
        state: Option<Bytes>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        self.handle().prepare_checkpoint(position, state).await
    }

    /// Writes `position` as is (the consumer's SHARD_END), serialized with other checkpoints.
    pub(crate) async fn write(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        let _writing = self.shared.writing.lock().await;
        self.shared.write(position).await
    }
}

impl CheckpointHandle {
    /// Checkpoints at a record: `sequence`, and `sub_sequence` inside a KPL aggregate (0 for
    /// records that were not aggregated).
    pub async fn checkpoint_at(
        &self,
        sequence: SequenceNumber,
        sub_sequence: u64,
    ) -> Result<(), CheckpointError> {
        self.checkpoint_at_position(ExtendedSequenceNumber::Sequence {
            sequence,
            sub_sequence,
        })
        .await
    }

    /// Checkpoints at `position` (a record's
    /// [`extended_sequence_number`](crate::model::Record::extended_sequence_number)).
    pub async fn checkpoint_at_position(
        &self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        let _writing = self.shared.writing.lock().await;
        self.shared.checkpoint_at_position(position).await
    }

    /// The last checkpoint written (or read at start).
    pub fn last_checkpoint(&self) -> ExtendedSequenceNumber {
        self.shared.state.lock().last.clone()
    }

    /// Whether checkpoints are fenced for good (the lease was lost, released or handed off).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().mode == Mode::Closed
    }

    /// Prepares a checkpoint (two-phase) at `position` (default: everything delivered so far),
    /// as [`Checkpointer::prepare_checkpoint`].
    pub async fn prepare_checkpoint(
        &self,
        position: Option<ExtendedSequenceNumber>,
        state: Option<Bytes>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        let _writing = self.shared.writing.lock().await;
        let delivered = self.shared.state.lock().largest_delivered.clone();
        let position = match position.or(delivered) {
            Some(p) => self.shared.validate(p)?,
            None => {
                return Err(CheckpointError::AfterLargestDelivered {
                    requested: self.last_checkpoint(),
                    largest: None,
                });
            }
        };
        if self.shared.state.lock().mode != Mode::Holding {
            return Err(self.shared.lost());
        }
        self.shared
            .retrying(CheckpointUpdate::Prepare {
                pending: position.clone(),
                state,
            })
            .await?;
        Ok(PreparedCheckpoint {
            shared: self.shared.clone(),
            position,
        })
    }
}

impl Shared {
    /// Callers hold `writing`.
    async fn checkpoint_at_position(
        &self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        let covered = {
            let s = self.state.lock();
            s.last == ExtendedSequenceNumber::ShardEnd
                && s.at_shard_end
                && s.largest_delivered.as_ref().is_some_and(|l| position <= *l)
        };
        if covered {
            // The end of the shard is already recorded: any position within it is covered.
            return Ok(());
        }
        let position = self.validate(position)?;
        self.write(position).await
    }

    /// Checks bounds, and rewrites the last record of a finished shard to SHARD_END.
    fn validate(
        &self,
        requested: ExtendedSequenceNumber,
    ) -> Result<ExtendedSequenceNumber, CheckpointError> {
        let s = self.state.lock();
        if requested.is_sentinel() {
            return Err(CheckpointError::AfterLargestDelivered {
                requested,
                largest: s.largest_delivered.clone(),
            });
        }
        if requested < s.last {
            return Err(CheckpointError::BeforeLastCheckpoint {
                requested,
                last: s.last.clone(),
            });
        }
        match &s.largest_delivered {
            Some(largest) if requested <= *largest => {
                Ok(if s.at_shard_end && requested == *largest {
                    ExtendedSequenceNumber::ShardEnd
                } else {
                    requested
                })
            }
            largest => Err(CheckpointError::AfterLargestDelivered {
                requested,
                largest: largest.clone(),
            }),
        }
    }

    fn lost(&self) -> CheckpointError {
        CheckpointError::LeaseLost {
            key: self.key.clone(),
        }
    }

    /// Moves to `mode` unless closed meanwhile (a close waits for `writing`, so this is only
    /// defensive).
    fn set_mode(&self, mode: Mode) {
        let mut s = self.state.lock();
        if s.mode != Mode::Closed {
            s.mode = mode;
        }
    }

    /// Callers hold `writing`.
    async fn write(&self, position: ExtendedSequenceNumber) -> Result<(), CheckpointError> {
        let mode = self.state.lock().mode;
        match mode {
            Mode::Closed => Err(self.lost()),
            Mode::Holding => {
                self.retrying(CheckpointUpdate::Commit(position.clone()))
                    .await?;
                self.state.lock().last = position;
                Ok(())
            }
            Mode::HandingOff => {
                // Buffered: the hand-off ends with the last one when the consumer closes, once
                // `shutdown_requested` returned (a flusher may still checkpoint until then).
                let mut s = self.state.lock();
                s.last = position.clone();
                s.hand_off_position = Some(position);
                Ok(())
            }
        }
    }

    /// A conditional write through the coordinator, retrying throttles and outages briefly.
    async fn retrying(&self, update: CheckpointUpdate) -> Result<(), CheckpointError> {
        let mut delays =
            crate::retry::RetryConfig::new(Duration::from_millis(100), Duration::from_secs(2))
                .with_max_attempts(5)
                .backoff(self.seed);
        loop {
            match self
                .coordinator
                .checkpoint(&self.key, self.token, update.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(HeldLeaseError::NotHeld { .. })
                    if self.coordinator.is_handing_off(&self.key) =>
                {
                    // A thief took the lease gracefully while this batch was processed: the
                    // checkpoint is the hand-off's, so the thief starts right after it.
                    self.set_mode(Mode::HandingOff);
                    return match update {
                        CheckpointUpdate::Commit(position) => Box::pin(self.write(position)).await,
                        CheckpointUpdate::Prepare { .. } => Err(self.lost()),
                    };
                }
                Err(HeldLeaseError::NotHeld { .. }) => {
                    self.set_mode(Mode::Closed);
                    return Err(self.lost());
                }
                Err(e) if e.is_retryable() => match delays.next_delay() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(store_error(e)),
                },
                Err(e) => return Err(store_error(e)),
            }
        }
    }
}

fn store_error(e: HeldLeaseError) -> CheckpointError {
    match e {
        HeldLeaseError::Store(e) => CheckpointError::Store(e),
        HeldLeaseError::NotHeld { key } => CheckpointError::LeaseLost { key },
    }
}

/// A prepared checkpoint waiting to be committed (from any task: it owns what it needs).
#[derive(Debug)]
pub struct PreparedCheckpoint {
    shared: Arc<Shared>,
    position: ExtendedSequenceNumber,
}

impl PreparedCheckpoint {
    /// The prepared position.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.position
    }

    /// Commits the prepared checkpoint.
    pub async fn commit(self) -> Result<(), CheckpointError> {
        let _writing = self.shared.writing.lock().await;
        self.shared.write(self.position).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lease::{CoordinatorConfig, InMemoryLeaseStore, Lease, LeaseStore};
    use crate::model::ShardId;

    fn at(n: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::at(SequenceNumber::new(&n.to_string()).unwrap())
    }

    /// A graceful steal lands while a batch is processed: the batch's checkpoint finds the
    /// hand-off and is buffered for it, so is the one `shutdown_requested` makes, and closing
    /// ends the hand-off with the last; anything after is fenced.
    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_racing_a_graceful_steal_is_kept_for_the_hand_off() {
        let (store, _a, mut checkpointer, key) = holding().await;
        checkpointer.set_largest_delivered(Some(at(5)));
        // The thief's graceful steal, before `a` has noticed.
        let stored = store.get(&key).await.unwrap().unwrap();
        store.hand_off(&stored, "b").await.unwrap();

        checkpointer
            .checkpoint()
            .await
            .expect("buffered for the hand-off");
        let during = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            during.checkpoint_owner.as_deref(),
            Some("a"),
            "hand-off not ended yet"
        );

        // The consumer then sees the hand-off and asks the processor to checkpoint again.
        checkpointer.hand_off();
        checkpointer.set_largest_delivered(Some(at(6)));
        checkpointer.checkpoint().await.expect("buffered");
        assert!(checkpointer.close().await, "it was a hand-off");
        let after = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            (
                after.owner.as_deref(),
                after.checkpoint_owner,
                after.checkpoint
            ),
            (Some("b"), None, at(6)),
            "the hand-off ended with the last checkpoint"
        );
        assert!(matches!(
            checkpointer.checkpoint().await,
            Err(CheckpointError::LeaseLost { .. })
        ));
    }

    /// One lease held by coordinator `a`, and a checkpointer on it with records up to 9
    /// delivered.
    async fn holding() -> (
        Arc<InMemoryLeaseStore>,
        Arc<LeaseCoordinator>,
        Checkpointer,
        String,
    ) {
        let store = Arc::new(InMemoryLeaseStore::new());
        let shard = ShardId::from_index(0);
        store
            .create_if_absent(&Lease::new(&shard, ExtendedSequenceNumber::TrimHorizon))
            .await
            .unwrap();
        let (a, _events) =
            LeaseCoordinator::start(store.clone(), CoordinatorConfig::new("a")).unwrap();
        let a = Arc::new(a);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let key = shard.to_string();
        let token = a.token(&key).await.expect("a holds the lease");
        let mut checkpointer = Checkpointer::new(
            key.clone(),
            token,
            a.clone(),
            ExtendedSequenceNumber::TrimHorizon,
            0,
        );
        checkpointer.set_largest_delivered(Some(at(9)));
        (store, a, checkpointer, key)
    }

    /// Issue 12 §1: a handle checkpoints from another task after the callback returned, never
    /// backwards, and a prepared checkpoint can be committed there too.
    #[tokio::test(start_paused = true)]
    async fn a_handle_checkpoints_from_another_task() {
        let (store, _a, checkpointer, key) = holding().await;
        let handle = checkpointer.handle();
        let flusher = tokio::spawn(async move {
            handle.checkpoint_at_position(at(5)).await.unwrap();
            let behind = handle.checkpoint_at_position(at(3)).await;
            assert!(matches!(
                behind,
                Err(CheckpointError::BeforeLastCheckpoint { .. })
            ));
            let ahead = handle.checkpoint_at_position(at(10)).await;
            assert!(matches!(
                ahead,
                Err(CheckpointError::AfterLargestDelivered { .. })
            ));
            let prepared = handle
                .prepare_checkpoint(Some(at(7)), Some(Bytes::from_static(b"state")))
                .await
                .unwrap();
            prepared.commit().await.unwrap();
            handle.last_checkpoint()
        });
        assert_eq!(flusher.await.unwrap(), at(7));
        assert_eq!(checkpointer.last_checkpoint(), at(7));
        assert_eq!(store.get(&key).await.unwrap().unwrap().checkpoint, at(7));
    }

    /// A handle is fenced like the checkpointer: after the lease was taken, and after the
    /// consumer closed the checkpointer (lease lost, released), it writes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_handle_is_fenced_when_the_lease_is_lost_or_closed() {
        let (store, _a, mut checkpointer, key) = holding().await;
        let handle = checkpointer.handle();
        let stored = store.get(&key).await.unwrap().unwrap();
        store.take(&stored, "intruder").await.unwrap();
        let lost = tokio::spawn({
            let handle = handle.clone();
            async move { handle.checkpoint_at_position(at(4)).await }
        });
        assert!(matches!(
            lost.await.unwrap(),
            Err(CheckpointError::LeaseLost { .. })
        ));
        assert_eq!(
            store.get(&key).await.unwrap().unwrap().checkpoint,
            ExtendedSequenceNumber::TrimHorizon
        );

        let (_store, _a, mut other, _key) = holding().await;
        let handle = other.handle();
        other.close().await;
        assert!(handle.is_closed());
        assert!(matches!(
            handle.checkpoint_at_position(at(4)).await,
            Err(CheckpointError::LeaseLost { .. })
        ));
        checkpointer.close().await;
    }

    /// During a graceful hand-off, a flusher's handle checkpoints (while `shutdown_requested`
    /// waits for it) are kept for the hand-off, which ends with the last of them.
    #[tokio::test(start_paused = true)]
    async fn handle_checkpoints_during_a_hand_off_end_it_with_the_last() {
        let (store, _a, mut checkpointer, key) = holding().await;
        let stored = store.get(&key).await.unwrap().unwrap();
        store.hand_off(&stored, "b").await.unwrap();
        checkpointer.hand_off();
        let handle = checkpointer.handle();
        tokio::spawn(async move {
            handle.checkpoint_at_position(at(4)).await.unwrap();
            handle.checkpoint_at_position(at(6)).await.unwrap();
        })
        .await
        .unwrap();
        assert!(checkpointer.close().await, "it was a hand-off");
        let after = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            (
                after.owner.as_deref(),
                after.checkpoint_owner,
                after.checkpoint
            ),
            (Some("b"), None, at(6))
        );
        assert!(matches!(
            checkpointer.handle().checkpoint_at_position(at(8)).await,
            Err(CheckpointError::LeaseLost { .. })
        ));
    }
}

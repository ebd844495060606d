//! Checkpointing: recording in the lease how far a shard has been processed.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;

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
    #[error("lease store failed while checkpointing: {0}")]
    Store(LeaseError),
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
    /// Another worker took the lease gracefully: the next checkpoint ends the hand-off.
    HandingOff,
    /// This checkpointer ended the hand-off at `last`: checkpointing that position again (e.g.
    /// in `shutdown_requested` right after a batch's checkpoint ended it) succeeds, anything
    /// else is fenced.
    HandedOff,
    /// Nothing more may be written.
    Closed,
}

/// Checkpoints one shard. Handed to the processor with each batch and at shutdown.
#[derive(Debug)]
pub struct Checkpointer {
    key: String,
    token: LeaseToken,
    coordinator: Arc<LeaseCoordinator>,
    mode: Mode,
    last: ExtendedSequenceNumber,
    largest_delivered: Option<ExtendedSequenceNumber>,
    at_shard_end: bool,
    seed: u64,
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
            key,
            token,
            coordinator,
            mode: Mode::Holding,
            last,
            largest_delivered: None,
            at_shard_end: false,
            seed,
        }
    }

    /// The last checkpoint written (or read at start).
    pub fn last_checkpoint(&self) -> &ExtendedSequenceNumber {
        &self.last
    }

    /// The largest record delivered to the processor (successfully processed, outside
    /// `process_records`).
    pub fn largest_delivered(&self) -> Option<&ExtendedSequenceNumber> {
        self.largest_delivered.as_ref()
    }

    pub(crate) fn set_largest_delivered(&mut self, position: Option<ExtendedSequenceNumber>) {
        self.largest_delivered = position;
    }

    pub(crate) fn set_at_shard_end(&mut self, at_end: bool) {
        self.at_shard_end = at_end;
    }

    /// Forgets a batch that was not processed: neither its records nor a shard end it carried
    /// count as delivered any more, so no default checkpoint can cover them.
    pub(crate) fn undeliver(&mut self, previous: Option<ExtendedSequenceNumber>) {
        self.largest_delivered = previous;
        self.at_shard_end = false;
    }

    pub(crate) fn hand_off(&mut self) {
        if self.mode == Mode::Holding {
            self.mode = Mode::HandingOff;
        }
    }

    pub(crate) fn close(&mut self) {
        self.mode = Mode::Closed;
    }

    pub(crate) fn is_handing_off(&self) -> bool {
        self.mode == Mode::HandingOff
    }

    /// Checkpoints everything delivered so far (SHARD_END once a closed shard is done).
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        match self.largest_delivered.clone() {
            Some(position) => self.checkpoint_at_position(position).await,
            None if self.at_shard_end => self.write(ExtendedSequenceNumber::ShardEnd).await,
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
        self.checkpoint_at_position(ExtendedSequenceNumber::Sequence {
            sequence,
            sub_sequence,
        })
        .await
    }

    async fn checkpoint_at_position(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        if self.last == ExtendedSequenceNumber::ShardEnd
            && self.at_shard_end
            && self
                .largest_delivered
                .as_ref()
                .is_some_and(|l| position <= *l)
        {
            // The end of the shard is already recorded: any position within it is covered.
            return Ok(());
        }
        let position = self.validate(position)?;
        self.write(position).await
    }

    /// Prepares a checkpoint (two-phase): records `position` (default: everything delivered) and
    /// optional application state as pending, without moving the checkpoint. Commit it with
    /// [`PreparedCheckpoint::commit`]; an uncommitted one is shown to the next `initialize`.
    pub async fn prepare_checkpoint(
        &mut self,
        position: Option<ExtendedSequenceNumber>,
        state: Option<Bytes>,
    ) -> Result<PreparedCheckpoint<'_>, CheckpointError> {
        let position = match position.or_else(|| self.largest_delivered.clone()) {
            Some(p) => self.validate(p)?,
            None => {
                return Err(CheckpointError::AfterLargestDelivered {
                    requested: self.last.clone(),
                    largest: None,
                });
            }
        };
        if self.mode != Mode::Holding {
            return Err(self.lost());
        }
        self.retrying(CheckpointUpdate::Prepare {
            pending: position.clone(),
            state,
        })
        .await?;
        Ok(PreparedCheckpoint {
            checkpointer: self,
            position,
        })
    }

    /// Checks bounds, and rewrites the last record of a finished shard to SHARD_END.
    fn validate(
        &self,
        requested: ExtendedSequenceNumber,
    ) -> Result<ExtendedSequenceNumber, CheckpointError> {
        if requested.is_sentinel() {
            return Err(CheckpointError::AfterLargestDelivered {
                requested,
                largest: self.largest_delivered.clone(),
            });
        }
        if requested < self.last {
            return Err(CheckpointError::BeforeLastCheckpoint {
                requested,
                last: self.last.clone(),
            });
        }
        match &self.largest_delivered {
            Some(largest) if requested <= *largest => {
                Ok(if self.at_shard_end && requested == *largest {
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

    pub(crate) async fn write(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        match self.mode {
            Mode::HandedOff if position == self.last => Ok(()),
            Mode::Closed | Mode::HandedOff => Err(self.lost()),
            Mode::Holding => {
                self.retrying(CheckpointUpdate::Commit(position.clone()))
                    .await?;
                self.last = position;
                Ok(())
            }
            Mode::HandingOff => {
                let result = self
                    .coordinator
                    .finish_hand_off(&self.key, Some(position.clone()))
                    .await;
                // One write ends the hand-off, whatever its outcome.
                self.mode = Mode::Closed;
                match result {
                    Ok(_) => {
                        self.last = position;
                        self.mode = Mode::HandedOff;
                        Ok(())
                    }
                    Err(e) if e.is_lost() => Err(self.lost()),
                    Err(e) => Err(CheckpointError::Store(e)),
                }
            }
        }
    }

    /// A conditional write through the coordinator, retrying throttles and outages briefly.
    async fn retrying(&mut self, update: CheckpointUpdate) -> Result<(), CheckpointError> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(4)
            .with_jitter()
            .with_jitter_seed(self.seed)
            .build();
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
                    self.mode = Mode::HandingOff;
                    return match update {
                        CheckpointUpdate::Commit(position) => Box::pin(self.write(position)).await,
                        CheckpointUpdate::Prepare { .. } => Err(self.lost()),
                    };
                }
                Err(HeldLeaseError::NotHeld { .. }) => {
                    self.mode = Mode::Closed;
                    return Err(self.lost());
                }
                Err(e) if e.is_retryable() => match delays.next() {
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

/// A prepared checkpoint waiting to be committed.
#[derive(Debug)]
pub struct PreparedCheckpoint<'a> {
    checkpointer: &'a mut Checkpointer,
    position: ExtendedSequenceNumber,
}

impl PreparedCheckpoint<'_> {
    /// The prepared position.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.position
    }

    /// Commits the prepared checkpoint.
    pub async fn commit(self) -> Result<(), CheckpointError> {
        let position = self.position;
        self.checkpointer.write(position).await
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

    /// A graceful steal lands while a batch is processed: the batch's checkpoint ends the
    /// hand-off (the thief starts right after it), the same checkpoint in `shutdown_requested`
    /// then succeeds, and anything further is fenced.
    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_racing_a_graceful_steal_ends_the_hand_off() {
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
        checkpointer.set_largest_delivered(Some(at(5)));
        // The thief's graceful steal, before `a` has noticed.
        let stored = store.get(&key).await.unwrap().unwrap();
        store.hand_off(&stored, "b").await.unwrap();

        checkpointer.checkpoint().await.expect("ends the hand-off");
        let after = store.get(&key).await.unwrap().unwrap();
        assert_eq!(after.owner.as_deref(), Some("b"));
        assert_eq!(after.checkpoint_owner, None, "hand-off ended");
        assert_eq!(after.checkpoint, at(5));

        // The consumer then sees the hand-off and asks the processor to checkpoint again.
        checkpointer.hand_off();
        checkpointer
            .checkpoint()
            .await
            .expect("same position: done");
        checkpointer.set_largest_delivered(Some(at(6)));
        assert!(matches!(
            checkpointer.checkpoint().await,
            Err(CheckpointError::LeaseLost { .. })
        ));
        assert_eq!(store.get(&key).await.unwrap().unwrap().checkpoint, at(5));
    }
}

//! The testing kit (feature `testing`), besides the in-memory engine (`engine`), lease store
//! (`lease::InMemoryLeaseStore`), fault injection (`fault`) and the fleet simulation
//! (`simulation`, which also runs your own processors):
//!
//! - [`TestCheckpointer`]: a real [`Checkpointer`] over one lease in an in-memory lease store,
//!   so `process_records` can be called on hand-made batches and its checkpoints checked —
//!   including what happens after the lease is lost;
//! - [`RecordingLedger`] / [`RecordingProcessor`]: a processor that records what it processed,
//!   and the ledger checks (every record, in order per key, at least once);
//! - [`run_until`]: runs a scheduler until a condition holds, then stops it gracefully.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use bytes::Bytes;
//! use kcl_core::model::{ExtendedSequenceNumber, Record, SequenceNumber};
//! use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
//! use kcl_core::testing::TestCheckpointer;
//!
//! struct Counter(usize);
//!
//! #[kcl_core::async_trait]
//! impl ShardRecordProcessor for Counter {
//!     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
//!         self.0 += input.records.len();
//!         input.checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//!
//! let records = vec![Record::new(SequenceNumber::new("7").unwrap(), "key", Bytes::from_static(b"x"))];
//! let mut test = TestCheckpointer::new().await;
//! let mut counter = Counter(0);
//! counter.process_records(test.input(&records)).await.unwrap();
//! assert_eq!(counter.0, 1);
//! assert_eq!(test.stored_checkpoint().await, records[0].extended_sequence_number());
//! # }
//! ```

mod recording;
mod run;

pub use recording::{RecordingLedger, RecordingProcessor, StreamKey};
pub use run::{RunUntilError, run_until};

use std::sync::Arc;

use crate::checkpoint::Checkpointer;
use crate::lease::{CoordinatorConfig, InMemoryLeaseStore, Lease, LeaseCoordinator, LeaseStore};
use crate::model::{ExtendedSequenceNumber, Record, ShardId};
use crate::processor::ProcessRecordsInput;

/// A checkpointer over one held lease of an in-memory store, for unit tests of processors.
#[derive(Debug)]
pub struct TestCheckpointer {
    store: Arc<InMemoryLeaseStore>,
    checkpointer: Checkpointer,
    key: String,
}

impl TestCheckpointer {
    /// A held lease of `shardId-000000000000` at TRIM_HORIZON.
    pub async fn new() -> Self {
        Self::starting_at(ExtendedSequenceNumber::TrimHorizon).await
    }

    /// A held lease whose checkpoint is `checkpoint`.
    pub async fn starting_at(checkpoint: ExtendedSequenceNumber) -> Self {
        let store = Arc::new(InMemoryLeaseStore::new());
        let shard = ShardId::from_index(0);
        let lease = Lease::new(&shard, checkpoint.clone());
        let key = lease.key.clone();
        store
            .create_if_absent(&lease)
            .await
            .expect("a fresh in-memory store takes the lease");
        let (coordinator, _events) =
            LeaseCoordinator::start(store.clone(), CoordinatorConfig::new("test-worker"))
                .expect("the default coordinator settings are valid");
        let coordinator = Arc::new(coordinator);
        coordinator.take_now().await;
        let token = coordinator
            .token(&key)
            .await
            .expect("the only worker takes the only lease");
        let checkpointer =
            Checkpointer::new(key.clone(), token, coordinator.clone(), checkpoint, 0);
        Self {
            store,
            checkpointer,
            key,
        }
    }

    /// The input for one `process_records` call on `records`: they count as delivered, so the
    /// processor may checkpoint up to the last of them.
    pub fn input<'a>(&'a mut self, records: &'a [Record]) -> ProcessRecordsInput<'a> {
        if let Some(last) = records.last() {
            self.checkpointer
                .set_largest_delivered(Some(last.extended_sequence_number()));
        }
        ProcessRecordsInput {
            records,
            checkpointer: &mut self.checkpointer,
            millis_behind_latest: 0,
            child_shards: None,
            is_at_shard_end: false,
        }
    }

    /// The checkpointer itself (for `shutdown_requested`, `shard_ended`, or a handle).
    pub fn checkpointer(&mut self) -> &mut Checkpointer {
        &mut self.checkpointer
    }

    /// The checkpoint as stored in the lease table.
    pub async fn stored_checkpoint(&self) -> ExtendedSequenceNumber {
        self.store
            .get(&self.key)
            .await
            .expect("the in-memory store answers")
            .expect("the lease exists")
            .checkpoint
    }

    /// Another worker takes the lease: later checkpoints fail with `LeaseLost`.
    pub async fn lose_lease(&self) {
        let stored = self
            .store
            .get(&self.key)
            .await
            .expect("the in-memory store answers")
            .expect("the lease exists");
        self.store
            .take(&stored, "another-worker")
            .await
            .expect("the take lands");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::checkpoint::CheckpointError;
    use crate::model::SequenceNumber;

    #[tokio::test]
    async fn checkpoints_land_until_the_lease_is_lost() {
        let records: Vec<Record> = (1..=3)
            .map(|n| {
                Record::new(
                    SequenceNumber::new(&n.to_string()).unwrap(),
                    "k",
                    Bytes::from_static(b"x"),
                )
            })
            .collect();
        let mut test = TestCheckpointer::new().await;
        let input = test.input(&records[..2]);
        input.checkpointer.checkpoint().await.unwrap();
        assert_eq!(
            test.stored_checkpoint().await,
            records[1].extended_sequence_number()
        );
        test.lose_lease().await;
        let input = test.input(&records);
        assert!(matches!(
            input.checkpointer.checkpoint().await,
            Err(CheckpointError::LeaseLost { .. })
        ));
        assert_eq!(
            test.stored_checkpoint().await,
            records[1].extended_sequence_number()
        );
    }
}

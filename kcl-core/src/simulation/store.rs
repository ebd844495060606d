//! A lease store wrapper that records every committed checkpoint and every deletion, for the
//! ledger.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::lease::{
    CheckpointUpdate, InMemoryLeaseStore, Lease, LeaseError, LeaseListing, LeaseStore,
    StoreCapabilities,
};
use crate::model::{ExtendedSequenceNumber, ShardId};

/// Checkpoints as they were committed, in order: (lease key, position).
pub(crate) type CheckpointLog = Arc<Mutex<Vec<(String, ExtendedSequenceNumber)>>>;

pub(crate) struct RecordingStore {
    pub(crate) inner: Arc<InMemoryLeaseStore>,
    pub(crate) log: CheckpointLog,
    /// The run's ledger, marked at each deletion.
    pub(crate) shared: Arc<super::Shared>,
    pub(crate) multi: bool,
}

impl std::fmt::Debug for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl LeaseStore for RecordingStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.inner.ensure_table().await
    }
    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.inner.create_if_absent(lease).await
    }
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.inner.get(key).await
    }
    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        self.inner.list().await
    }
    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError> {
        self.inner.list_eventually().await
    }
    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.inner.renew(expected).await
    }
    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.inner.take(expected, new_owner).await
    }
    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.inner.hand_off(expected, new_owner).await
    }
    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        // Recorded before the write: a write that lands but reports failure must be logged too.
        let result = self
            .inner
            .finish_hand_off(key, previous_owner, checkpoint.clone())
            .await;
        if let (Ok(stored), Some(c)) = (&result, checkpoint)
            && stored.checkpoint == c
        {
            tracing::debug!(lease_key = %key, previous_owner, checkpoint = %c, "hand-off checkpoint committed");
            self.log.lock().push((key.to_string(), c));
        }
        result
    }
    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.inner.evict(expected).await
    }
    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        let result = self.inner.checkpoint(expected, update.clone()).await;
        // A write that lands but reports failure committed too: the stored lease shows it.
        let landed = |c: &ExtendedSequenceNumber| {
            self.inner.snapshot().iter().any(|l| {
                l.key == expected.key && l.counter == expected.counter + 1 && l.checkpoint == *c
            })
        };
        if let CheckpointUpdate::Commit(c) = update
            && (result.is_ok() || landed(&c))
        {
            tracing::debug!(lease_key = %expected.key, owner = ?expected.owner, checkpoint = %c, "checkpoint committed");
            self.log.lock().push((expected.key.clone(), c));
        }
        result
    }
    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        self.inner.set_child_shards(key, children).await
    }
    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError> {
        self.inner.post(key, owner, entries).await
    }
    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        let result = self.inner.delete(expected).await;
        // A delete that lands but reports failure is a deletion too: mark it whenever the lease
        // is gone afterwards.
        if result.is_ok() || self.inner.snapshot().iter().all(|l| l.key != expected.key) {
            let shard = match &expected.multi_stream {
                Some(m) => {
                    let stream = m.stream_identifier.split(':').nth(1).unwrap_or_default();
                    super::ledger_shard(self.multi, stream, &m.shard_id)
                }
                None => expected.shard_id(),
            };
            self.shared.ledger.lock().mark_deletion(shard);
        }
        result
    }
}

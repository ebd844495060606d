//! A lease store that records each call's latency and failures (`LeaseStore.Time`,
//! `LeaseStore.Errors`); the scheduler wraps its store in one.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{CheckpointUpdate, Lease, LeaseError, LeaseListing, LeaseStore};
use crate::model::{ExtendedSequenceNumber, ShardId};
use crate::telemetry::LeaseMetrics;

#[derive(Debug)]
pub(crate) struct MeteredStore {
    pub(crate) inner: Arc<dyn LeaseStore>,
    pub(crate) metrics: LeaseMetrics,
}

impl MeteredStore {
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        let start = Instant::now();
        let result = call.await;
        // A failed condition is the store answering, not failing.
        let error = matches!(&result, Err(e) if !e.is_lost() && !matches!(e, LeaseError::ConditionFailed { .. }));
        self.metrics
            .store_call(operation, start.elapsed().as_secs_f64() * 1000.0, error);
        result
    }
}

#[async_trait]
impl LeaseStore for MeteredStore {
    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.timed("CreateLease", self.inner.create_if_absent(lease))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.timed("GetLease", self.inner.get(key)).await
    }

    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        self.timed("ListLeases", self.inner.list()).await
    }

    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.timed("RenewLease", self.inner.renew(expected)).await
    }

    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.timed("TakeLease", self.inner.take(expected, new_owner))
            .await
    }

    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.timed("HandOffLease", self.inner.hand_off(expected, new_owner))
            .await
    }

    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        self.timed(
            "FinishHandOff",
            self.inner.finish_hand_off(key, previous_owner, checkpoint),
        )
        .await
    }

    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.timed("EvictLease", self.inner.evict(expected)).await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        self.timed("Checkpoint", self.inner.checkpoint(expected, update))
            .await
    }

    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        self.timed("SetChildShards", self.inner.set_child_shards(key, children))
            .await
    }

    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        self.timed("DeleteLease", self.inner.delete(expected)).await
    }
}

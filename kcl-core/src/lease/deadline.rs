//! A lease store whose every call answers within a deadline, and (inside a worker) records
//! each call's latency and failures (`LeaseStore.Time`, `LeaseStore.Errors`). AWS SDK clients
//! set only a connect timeout, so without a deadline a hung call holds whatever waits on it
//! for ever.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{CheckpointUpdate, Lease, LeaseError, LeaseListing, LeaseStore, StoreCapabilities};
use crate::model::{ExtendedSequenceNumber, ShardId};
use crate::telemetry::LeaseMetrics;

/// Deadline of [`LeaseStore::ensure_table`]: DynamoDB takes seconds to minutes to make a new
/// table and its index ACTIVE.
pub(crate) const TABLE_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Wraps a [`LeaseStore`] so that each call fails with [`LeaseError::TimedOut`] once its
/// deadline passes. A timed-out write may still land: callers treat it like any retryable
/// failure, and the next conditional write tells whether it did.
#[derive(Debug, Clone)]
pub struct DeadlineStore {
    inner: Arc<dyn LeaseStore>,
    call: Duration,
    list: Duration,
    metrics: Option<LeaseMetrics>,
}

impl DeadlineStore {
    /// `call` bounds single-item operations, `list` the paged listing of the whole table.
    pub fn new(inner: Arc<dyn LeaseStore>, call: Duration, list: Duration) -> Self {
        Self {
            inner,
            call,
            list,
            metrics: None,
        }
    }

    /// Also records every call's latency and failures, a timeout counting as a failure.
    pub(crate) fn with_metrics(mut self, metrics: LeaseMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn within<T>(
        &self,
        operation: &'static str,
        after: Duration,
        call: impl Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        let start = Instant::now();
        let result = tokio::time::timeout(after, call)
            .await
            .unwrap_or(Err(LeaseError::TimedOut { operation, after }));
        if let Some(metrics) = &self.metrics {
            // A failed condition (or a missing lease) is the store answering, not failing.
            let error = matches!(&result, Err(e) if !e.is_lost());
            metrics.store_call(operation, start.elapsed().as_secs_f64() * 1000.0, error);
        }
        result
    }
}

#[async_trait]
impl LeaseStore for DeadlineStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.within("CreateLease", self.call, self.inner.create_if_absent(lease))
            .await
    }

    async fn ensure_table(&self) -> Result<(), LeaseError> {
        // Creating a table and waiting until it is ACTIVE takes seconds to minutes.
        self.within(
            "EnsureTable",
            TABLE_CREATION_TIMEOUT,
            self.inner.ensure_table(),
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.within("GetLease", self.call, self.inner.get(key))
            .await
    }

    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        self.within("ListLeases", self.list, self.inner.list())
            .await
    }

    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError> {
        self.within("ListLeases", self.list, self.inner.list_eventually())
            .await
    }

    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.within("RenewLease", self.call, self.inner.renew(expected))
            .await
    }

    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.within("TakeLease", self.call, self.inner.take(expected, new_owner))
            .await
    }

    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.within(
            "HandOffLease",
            self.call,
            self.inner.hand_off(expected, new_owner),
        )
        .await
    }

    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        self.within(
            "FinishHandOff",
            self.call,
            self.inner.finish_hand_off(key, previous_owner, checkpoint),
        )
        .await
    }

    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.within("EvictLease", self.call, self.inner.evict(expected))
            .await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        self.within(
            "Checkpoint",
            self.call,
            self.inner.checkpoint(expected, update),
        )
        .await
    }

    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        self.within(
            "SetChildShards",
            self.call,
            self.inner.set_child_shards(key, children),
        )
        .await
    }

    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        self.within("DeleteLease", self.call, self.inner.delete(expected))
            .await
    }

    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError> {
        self.within(
            "PostToInbox",
            self.call,
            self.inner.post(key, owner, entries),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultAction;
    use crate::lease::{InMemoryLeaseStore, LeaseOperation};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_fails_typed_at_its_deadline() {
        let memory = Arc::new(InMemoryLeaseStore::new());
        let lease = Lease::new(&ShardId::from_index(0), ExtendedSequenceNumber::TrimHorizon);
        memory.create_if_absent(&lease).await.unwrap();
        memory.faults().next_calls(
            LeaseOperation::Get,
            1,
            FaultAction::Delay(Duration::from_secs(3600)),
        );
        let store = DeadlineStore::new(memory, Duration::from_secs(2), Duration::from_secs(5));
        let start = Instant::now();
        let err = store.get(&lease.key).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(err.is_retryable());
        assert!(
            matches!(
                err,
                LeaseError::TimedOut {
                    operation: "GetLease",
                    ..
                }
            ),
            "{err}"
        );
        assert!(store.get(&lease.key).await.unwrap().is_some());
    }
}

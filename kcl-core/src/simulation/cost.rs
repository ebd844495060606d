//! A lease store that charges every call in DynamoDB capacity units, for the scale simulation.
//!
//! DynamoDB's unit rules: an item's size is the bytes of its attribute names and values (a
//! number takes about one byte per two significant digits, plus one); a strongly consistent
//! read costs one read unit per 4 KB (a Scan sums the items of a page, up to 1 MB, before
//! rounding), an eventually consistent one half that; a write costs one write unit per 1 KB of
//! the item, and a conditional write whose condition fails costs the same.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::lease::{
    CheckpointUpdate, InMemoryLeaseStore, Lease, LeaseError, LeaseListing, LeaseStore,
    StoreCapabilities,
};
use crate::model::{ExtendedSequenceNumber, ShardId};

/// Capacity units and calls charged so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    /// Read units.
    pub read: f64,
    /// Write units.
    pub write: f64,
    /// Full-table listings.
    pub listings: u64,
}

fn number_bytes(n: u64) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    1 + digits.div_ceil(2)
}

/// The DynamoDB size of a lease item in the KCL schema (and kcl-rs's own attributes).
pub fn item_bytes(l: &Lease) -> usize {
    let s = |name: &str, value: usize| name.len() + value;
    let mut size = s("leaseKey", l.key.len())
        + s("entityType", 5)
        + s("leaseCounter", number_bytes(l.counter))
        + s("checkpoint", l.checkpoint.checkpoint_value().len())
        + s(
            "checkpointSubSequenceNumber",
            number_bytes(l.checkpoint.sub_sequence()),
        )
        + s(
            "ownerSwitchesSinceCheckpoint",
            number_bytes(l.owner_switches_since_checkpoint),
        );
    size += l.owner.as_ref().map_or(0, |o| s("leaseOwner", o.len()));
    size += l
        .checkpoint_owner
        .as_ref()
        .map_or(0, |o| s("checkpointOwner", o.len()));
    if !l.parent_shard_ids.is_empty() {
        size += s(
            "parentShardId",
            l.parent_shard_ids.iter().map(|p| p.as_str().len()).sum(),
        );
    }
    if !l.child_shard_ids.is_empty() {
        size += s(
            "childShardIds",
            l.child_shard_ids.iter().map(|p| p.as_str().len()).sum(),
        );
    }
    if let Some(r) = &l.hash_key_range {
        size += s("startingHashKey", r.start.to_string().len())
            + s("endingHashKey", r.end.to_string().len());
    }
    size += l.throughput_kbps.map_or(0, |_| s("throughputKBps", 4));
    size += l
        .renewed_at
        .map_or(0, |r| s("kclRsRenewedAt", r.to_string().len()));
    if !l.inbox.is_empty() {
        size += s("kclRsInbox", l.inbox.iter().map(String::len).sum());
    }
    size
}

/// Charges each call of the wrapped store in capacity units.
#[derive(Debug)]
pub struct CostStore {
    inner: Arc<InMemoryLeaseStore>,
    units: Mutex<Units>,
}

impl CostStore {
    /// Charges calls of `inner`.
    pub fn new(inner: Arc<InMemoryLeaseStore>) -> Self {
        Self {
            inner,
            units: Mutex::default(),
        }
    }

    /// Units charged so far.
    pub fn units(&self) -> Units {
        *self.units.lock()
    }

    fn size_of(&self, key: &str) -> usize {
        self.inner.snapshot_of(key).map_or(100, |l| item_bytes(&l))
    }

    fn write(&self, bytes: usize) {
        self.units.lock().write += bytes.div_ceil(1024).max(1) as f64;
    }

    fn scan(&self, listing: &LeaseListing, consistent: bool) {
        // Pages of at most 1 MB, each rounded up to 4 KB.
        let mut pages = Vec::new();
        let mut page = 0usize;
        for l in &listing.leases {
            let b = item_bytes(l);
            if page + b > 1 << 20 {
                pages.push(page);
                page = 0;
            }
            page += b;
        }
        pages.push(page);
        let units: f64 = pages.iter().map(|p| p.div_ceil(4096).max(1) as f64).sum();
        let mut u = self.units.lock();
        u.read += if consistent { units } else { units / 2.0 };
        u.listings += 1;
    }

    /// A conditional write of the lease at `key`: charged by the larger of the item before and
    /// after, whether it applied or not.
    async fn charged(
        &self,
        key: &str,
        call: impl std::future::Future<Output = Result<Lease, LeaseError>>,
    ) -> Result<Lease, LeaseError> {
        let before = self.size_of(key);
        let result = call.await;
        let after = result.as_ref().map_or(0, item_bytes);
        self.write(before.max(after));
        result
    }
}

#[async_trait]
impl LeaseStore for CostStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.inner.ensure_table().await
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.write(item_bytes(lease));
        self.inner.create_if_absent(lease).await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let result = self.inner.get(key).await;
        let bytes = match &result {
            Ok(Some(l)) => item_bytes(l),
            _ => 1,
        };
        self.units.lock().read += bytes.div_ceil(4096).max(1) as f64;
        result
    }

    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        let listing = self.inner.list().await?;
        self.scan(&listing, true);
        Ok(listing)
    }

    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError> {
        let listing = self.inner.list_eventually().await?;
        self.scan(&listing, false);
        Ok(listing)
    }

    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.charged(&expected.key, self.inner.renew(expected))
            .await
    }

    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.charged(&expected.key, self.inner.take(expected, new_owner))
            .await
    }

    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.charged(&expected.key, self.inner.hand_off(expected, new_owner))
            .await
    }

    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        self.charged(
            key,
            self.inner.finish_hand_off(key, previous_owner, checkpoint),
        )
        .await
    }

    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.charged(&expected.key, self.inner.evict(expected))
            .await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        self.charged(&expected.key, self.inner.checkpoint(expected, update))
            .await
    }

    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        self.charged(key, self.inner.set_child_shards(key, children))
            .await
    }

    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        self.write(self.size_of(&expected.key));
        self.inner.delete(expected).await
    }

    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError> {
        self.write(self.size_of(key));
        self.inner.post(key, owner, entries).await
    }
}

//! An in-memory lease store: linearizable, with fault injection and per-operation counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{CheckpointUpdate, Lease, LeaseError, LeaseListing, LeaseStore, StoreCapabilities};
use crate::fault::{FaultAction, FaultInjector};
use crate::model::{ExtendedSequenceNumber, ShardId};

/// The operations of a lease store, for fault injection and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LeaseOperation {
    /// `create_if_absent`.
    Create,
    /// `get`.
    Get,
    /// `list` (one full read of the table).
    List,
    /// `renew`.
    Renew,
    /// `take`.
    Take,
    /// `hand_off`.
    HandOff,
    /// `finish_hand_off`.
    FinishHandOff,
    /// `evict`.
    Evict,
    /// `checkpoint`.
    Checkpoint,
    /// `set_child_shards`.
    SetChildShards,
    /// `delete`.
    Delete,
    /// `post`.
    Post,
}

impl LeaseOperation {
    /// Every operation, in order.
    pub const ALL: [LeaseOperation; 12] = [
        Self::Create,
        Self::Get,
        Self::List,
        Self::Renew,
        Self::Take,
        Self::HandOff,
        Self::FinishHandOff,
        Self::Evict,
        Self::Checkpoint,
        Self::SetChildShards,
        Self::Delete,
        Self::Post,
    ];
}

/// Operation counts of an [`InMemoryLeaseStore`], including failed calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStoreStats {
    /// Calls per operation.
    pub calls: BTreeMap<LeaseOperation, u64>,
}

impl LeaseStoreStats {
    /// Calls of one operation.
    pub fn get(&self, op: LeaseOperation) -> u64 {
        self.calls.get(&op).copied().unwrap_or(0)
    }

    /// Calls of every operation.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Writes (everything but `get` and `list`).
    pub fn writes(&self) -> u64 {
        self.total() - self.get(LeaseOperation::Get) - self.get(LeaseOperation::List)
    }
}

/// A lease table in memory, for tests and single-process fleets.
///
/// Every call takes one lock, so the store is linearizable however many workers share it.
/// Faults (fail, throttle, delay, fail after applying; next N calls or seeded probability) are
/// scheduled per [`LeaseOperation`] through [`InMemoryLeaseStore::faults`].
#[derive(Debug)]
pub struct InMemoryLeaseStore {
    leases: Mutex<BTreeMap<String, Lease>>,
    faults: FaultInjector<LeaseOperation, LeaseError>,
    calls: [AtomicU64; LeaseOperation::ALL.len()],
    /// Keys whose single-lease calls hang until released (a stuck partition, a hung socket).
    hung: Mutex<std::collections::BTreeSet<String>>,
    /// Eventually consistent listings that answer stale.
    stale: Mutex<Stale>,
    /// What it supports (all, unless built as a store without inboxes).
    capabilities: StoreCapabilities,
}

/// How `list_eventually` answers stale: with `probability`, the table as the previous
/// eventually consistent listing saw it (seconds old, where DynamoDB's are usually under one).
#[derive(Debug)]
struct Stale {
    probability: f64,
    rng: SmallRng,
    previous: Option<Vec<Lease>>,
}

impl Default for InMemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes the caller's renewal stamp, when it brings one.
fn stamp(stored: &mut Lease, expected: &Lease) {
    if expected.renewed_at.is_some() {
        stored.renewed_at = expected.renewed_at;
    }
}

fn not_found(key: &str) -> LeaseError {
    LeaseError::NotFound {
        key: key.to_string(),
    }
}

fn condition_failed(key: &str) -> LeaseError {
    LeaseError::ConditionFailed {
        key: key.to_string(),
    }
}

impl InMemoryLeaseStore {
    /// An empty store whose random faults follow seed 0.
    pub fn new() -> Self {
        Self::with_seed(0)
    }

    /// An empty store whose random faults follow `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            leases: Mutex::new(BTreeMap::new()),
            faults: FaultInjector::new(seed),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            hung: Mutex::default(),
            stale: Mutex::new(Stale {
                probability: 0.0,
                rng: SmallRng::seed_from_u64(seed ^ 0x5747),
                previous: None,
            }),
            capabilities: StoreCapabilities::all(),
        }
    }

    /// A store without inboxes, as some backends are: `post` answers
    /// [`LeaseError::Unsupported`], and coordinators release leases instead of offering them.
    pub fn without_inboxes(mut self) -> Self {
        self.capabilities = StoreCapabilities::without_inboxes();
        self
    }

    /// Makes `list_eventually` answer stale with `probability`: the table as the previous
    /// eventually consistent listing saw it, as an eventually consistent Scan may (strongly
    /// consistent `list` and `get` stay exact).
    pub fn stale_listings(&self, probability: f64) {
        self.stale.lock().probability = probability;
    }

    /// The fault injector.
    pub fn faults(&self) -> &FaultInjector<LeaseOperation, LeaseError> {
        &self.faults
    }

    /// Throttles the next `n` calls of `op`.
    pub fn throttle_next(&self, op: LeaseOperation, n: u64) {
        self.faults.next_calls(
            op,
            n,
            FaultAction::Fail(LeaseError::throttled("injected throttle")),
        );
    }

    /// Makes every call on `key` (get, conditional writes, delete) hang while `hang` is true;
    /// calls already hanging go on once it is set back to false. Listings are not affected.
    pub fn hang_key(&self, key: &str, hang: bool) {
        let mut hung = self.hung.lock();
        if hang {
            hung.insert(key.to_string());
        } else {
            hung.remove(key);
        }
    }

    async fn wait_while_hung(&self, key: &str) {
        while self.hung.lock().contains(key) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Operation counts so far.
    pub fn stats(&self) -> LeaseStoreStats {
        LeaseStoreStats {
            calls: LeaseOperation::ALL
                .iter()
                .map(|op| (*op, self.calls[*op as usize].load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Resets the operation counts.
    pub fn reset_stats(&self) {
        self.calls
            .iter()
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }

    /// A copy of every lease, for assertions.
    pub fn snapshot(&self) -> Vec<Lease> {
        self.leases.lock().values().cloned().collect()
    }

    /// A copy of one lease.
    pub fn snapshot_of(&self, key: &str) -> Option<Lease> {
        self.leases.lock().get(key).cloned()
    }

    /// Overwrites or inserts a lease unconditionally, for setting up tests.
    pub fn put_unconditionally(&self, lease: Lease) {
        self.leases.lock().insert(lease.key.clone(), lease);
    }

    /// Counts the call, applies scheduled faults, then runs `f` on the table under the lock.
    async fn run<T>(
        &self,
        op: LeaseOperation,
        f: impl FnOnce(&mut BTreeMap<String, Lease>) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseError> {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        let after = self.faults.apply(op).await?;
        let result = f(&mut self.leases.lock())?;
        after.finish(result)
    }

    /// Runs a conditional update of one lease: `check` decides on the stored lease, `update`
    /// changes a copy that replaces it.
    async fn update(
        &self,
        op: LeaseOperation,
        key: &str,
        check: impl FnOnce(&Lease) -> bool,
        update: impl FnOnce(&mut Lease),
    ) -> Result<Lease, LeaseError> {
        self.wait_while_hung(key).await;
        self.run(op, |leases| {
            let stored = leases.get_mut(key).ok_or_else(|| not_found(key))?;
            if !check(stored) {
                return Err(condition_failed(key));
            }
            update(stored);
            Ok(stored.clone())
        })
        .await
    }
}

/// Whether the stored lease still has the caller's counter and owner.
fn held_as_expected(stored: &Lease, expected: &Lease) -> bool {
    stored.counter == expected.counter && stored.owner == expected.owner
}

fn commit(lease: &mut Lease, checkpoint: ExtendedSequenceNumber) {
    lease.checkpoint = checkpoint;
    lease.pending_checkpoint = None;
    lease.pending_checkpoint_state = None;
    lease.owner_switches_since_checkpoint = 0;
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.capabilities
    }

    async fn ensure_table(&self) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.run(LeaseOperation::Create, |leases| {
            if leases.contains_key(&lease.key) {
                return Err(condition_failed(&lease.key));
            }
            leases.insert(lease.key.clone(), lease.clone());
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.wait_while_hung(key).await;
        self.run(LeaseOperation::Get, |leases| Ok(leases.get(key).cloned()))
            .await
    }

    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        self.run(LeaseOperation::List, |leases| {
            Ok(LeaseListing {
                leases: leases.values().cloned().collect(),
                malformed: Vec::new(),
                other_entities: 0,
            })
        })
        .await
    }

    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError> {
        let mut listing = self.list().await?;
        let mut stale = self.stale.lock();
        let fresh = listing.leases.clone();
        let p = stale.probability;
        if p > 0.0
            && stale.rng.random_bool(p.min(1.0))
            && let Some(previous) = stale.previous.clone()
        {
            listing.leases = previous;
        }
        stale.previous = Some(fresh);
        Ok(listing)
    }

    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::Renew,
            &expected.key,
            |s| held_as_expected(s, expected),
            |l| {
                l.counter += 1;
                if expected.throughput_kbps.is_some() {
                    l.throughput_kbps = expected.throughput_kbps;
                }
                stamp(l, expected);
                l.inbox.retain(|k| !expected.inbox.contains(k));
            },
        )
        .await
    }

    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::Take,
            &expected.key,
            |s| s.counter == expected.counter,
            |l| {
                if l.owner.as_deref() != Some(new_owner) {
                    l.owner_switches_since_checkpoint += 1;
                }
                l.owner = Some(new_owner.to_string());
                l.checkpoint_owner = None;
                l.counter += 1;
                stamp(l, expected);
            },
        )
        .await
    }

    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::HandOff,
            &expected.key,
            |s| held_as_expected(s, expected) && s.owner.is_some() && s.checkpoint_owner.is_none(),
            |l| {
                l.checkpoint_owner = l.owner.replace(new_owner.to_string());
                l.owner_switches_since_checkpoint += 1;
                l.counter += 1;
                stamp(l, expected);
            },
        )
        .await
    }

    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::FinishHandOff,
            key,
            |s| s.checkpoint_owner.as_deref() == Some(previous_owner),
            |l| {
                if let Some(c) = checkpoint {
                    commit(l, c);
                }
                l.checkpoint_owner = None;
            },
        )
        .await
    }

    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::Evict,
            &expected.key,
            |s| held_as_expected(s, expected),
            |l| {
                l.owner = None;
                l.checkpoint_owner = None;
                l.counter += 1;
            },
        )
        .await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::Checkpoint,
            &expected.key,
            |s| held_as_expected(s, expected),
            |l| {
                match update {
                    CheckpointUpdate::Commit(c) => commit(l, c),
                    CheckpointUpdate::Prepare { pending, state } => {
                        l.pending_checkpoint = Some(pending);
                        l.pending_checkpoint_state = state;
                    }
                }
                l.counter += 1;
                stamp(l, expected);
            },
        )
        .await
    }

    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        self.update(
            LeaseOperation::SetChildShards,
            key,
            |_| true,
            |l| l.child_shard_ids = children.to_vec(),
        )
        .await
    }

    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError> {
        self.wait_while_hung(key).await;
        self.run(LeaseOperation::Post, |leases| {
            // Counted like any call, so a test can tell that nobody tried.
            if !self.capabilities.inboxes {
                return Err(LeaseError::Unsupported { operation: "post" });
            }
            let l = leases.get_mut(key).ok_or_else(|| not_found(key))?;
            if l.owner.as_deref() != Some(owner) {
                return Err(condition_failed(key));
            }
            for e in entries {
                if !l.inbox.contains(e) {
                    l.inbox.push(e.clone());
                }
            }
            l.inbox.sort();
            Ok(())
        })
        .await
    }

    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        self.run(LeaseOperation::Delete, |leases| {
            let stored = leases
                .get(&expected.key)
                .ok_or_else(|| not_found(&expected.key))?;
            if stored.counter != expected.counter {
                return Err(condition_failed(&expected.key));
            }
            leases.remove(&expected.key);
            Ok(())
        })
        .await
    }
}

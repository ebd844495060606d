//! The lease store: the shared table every worker of an application coordinates through.

use std::fmt;

use async_trait::async_trait;

use super::{CheckpointUpdate, Lease, LeaseError};
use crate::model::{ExtendedSequenceNumber, ShardId};

/// What [`LeaseStore::list`] read: the valid leases, and the items that could not be read as
/// leases (reported, skipped, never fatal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseListing {
    /// Valid leases, in key order.
    pub leases: Vec<Lease>,
    /// Items that are not valid leases, as [`LeaseError::Malformed`].
    pub malformed: Vec<LeaseError>,
    /// Rows of other kinds sharing the table (KCL 3.x worker metrics, leader and migration
    /// rows: `entityType` other than `LEASE`), skipped without a warning.
    pub other_entities: usize,
}

/// What a store supports beyond the core contract. The coordinator asks once, when it starts,
/// and leaves unsupported features alone instead of trying them and failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// Lease inboxes ([`LeaseStore::post`], and renewals that return and trim them): planned
    /// hand-off by offers. Without them, a stopping worker releases its leases instead.
    pub inboxes: bool,
}

impl StoreCapabilities {
    /// Everything the contract describes.
    pub const fn all() -> Self {
        Self { inboxes: true }
    }

    /// Everything but inboxes ([`LeaseStore::post`] answers [`LeaseError::Unsupported`]).
    pub const fn without_inboxes() -> Self {
        Self { inboxes: false }
    }
}

/// The shared lease table.
///
/// Every write that can race is conditional, so a fleet of workers needs no other coordination.
/// Each write takes the caller's last view of the lease (`expected`) and applies only if the
/// stored lease still matches it. The returned lease is the caller's new view.
///
/// # Contract
/// Enforced by the conformance suite (`kcl_core::lease_store_conformance!`):
/// - `create_if_absent` writes the lease only if no lease has its key, else `ConditionFailed`.
/// - `ensure_table` creates the store's table if it is missing (a no-op for stores without
///   one) and returns once it can be used; calling it again changes nothing.
/// - `get` reads the latest value (strongly consistent); `None` if absent.
/// - `list` returns every lease, paging internally; malformed items are reported, not fatal.
///   `list_eventually` likewise, but may miss writes of the last moments.
/// - `renew`: if `leaseCounter` = expected and `leaseOwner` = expected owner → counter + 1,
///   and `throughputKBps` = expected's when it is set (the load figure a renewal carries, as in
///   the KCL 3.x); left as stored when it is not. The entries of expected's `inbox` are removed
///   from the stored inbox (entries posted since stay).
/// - `renew`, `take`, `hand_off` and `checkpoint` write `kclRsRenewedAt` = expected's
///   `renewed_at` when it is set, and leave it as stored when it is not.
/// - `take`: if `leaseCounter` = expected → `leaseOwner` = new owner, counter + 1,
///   `ownerSwitchesSinceCheckpoint` + 1 when the owner changes, `checkpointOwner` removed.
/// - `post`: if `leaseOwner` = the given owner → the entries are added to `inbox` (a set: each
///   once, concurrent posts all kept); the counter is unchanged, so the owner's renewals keep
///   working and return it. A store whose `capabilities()` say no inboxes answers
///   `Unsupported` and writes nothing.
/// - `hand_off`: if `leaseCounter` = expected, `leaseOwner` = expected owner and no
///   `checkpointOwner` → `leaseOwner` = new owner, `checkpointOwner` = previous owner,
///   counter + 1, `ownerSwitchesSinceCheckpoint` + 1. The previous owner's next renew fails.
/// - `finish_hand_off`: if `checkpointOwner` = the given previous owner → optionally commits a
///   checkpoint (as `checkpoint` does), removes `checkpointOwner`; the counter is unchanged, so
///   the new owner's renewals keep working.
/// - `evict`: if `leaseCounter` = expected and `leaseOwner` = expected owner → `leaseOwner` and
///   `checkpointOwner` removed, counter + 1.
/// - `checkpoint`: if `leaseCounter` = expected and `leaseOwner` = expected owner → counter + 1
///   and the update applied (commit: checkpoint set, pending cleared, owner switches reset;
///   prepare: pending checkpoint and state set).
/// - `set_child_shards`: if the lease exists → `childShardIds` set; counter unchanged.
/// - `delete`: if `leaseCounter` = expected → the lease is removed.
/// - A conditional write on a missing lease is `NotFound`; a failed condition is
///   `ConditionFailed`; in both cases nothing is written. Counters never decrease.
///
/// Every method is required: a wrapper (deadlines, metrics, recording) cannot forget to
/// forward one and silently fall back to a default.
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// What this store supports beyond the core contract.
    fn capabilities(&self) -> StoreCapabilities;

    /// Creates the lease table if it does not exist (with the owner index the KCL 3.x uses,
    /// where the backend has one) and waits until it is usable; a store without a table to
    /// create returns `Ok(())`.
    async fn ensure_table(&self) -> Result<(), LeaseError>;

    /// Creates the lease if its key is free.
    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// Reads one lease.
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError>;

    /// Reads every lease.
    async fn list(&self) -> Result<LeaseListing, LeaseError>;

    /// Reads every lease, possibly a moment stale (DynamoDB: an eventually consistent scan, at
    /// half the read units). The coordinator's taker lists this way: each of its decisions is
    /// a write conditional on the counter it read, so a stale listing costs at most a failed
    /// write, never a wrong state. A store without a cheaper read answers as [`list`](Self::list).
    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError>;

    /// Renews a lease the caller holds, writing its `throughput_kbps` if set.
    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError>;

    /// Takes an unowned or expired lease, or steals one abruptly.
    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError>;

    /// Moves a lease to `new_owner` while its current owner finishes (graceful steal or hand-off).
    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError>;

    /// Ends a hand-off: the previous owner's last checkpoint, or the new owner giving up waiting.
    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError>;

    /// Releases a lease the caller holds.
    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError>;

    /// Writes a checkpoint of a lease the caller holds.
    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError>;

    /// Records the children of an ended shard.
    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError>;

    /// Deletes a lease.
    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError>;

    /// Adds `entries` to the inbox of lease `key` if `owner` holds it: how a worker offering
    /// leases in a planned hand-off tells the receiver, which reads its inbox from its next
    /// renewal's response. A store without inboxes ([`StoreCapabilities::inboxes`] false)
    /// answers [`LeaseError::Unsupported`]; the coordinator never calls it then.
    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError>;
}

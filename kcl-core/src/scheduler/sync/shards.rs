//! Shard sync: leases for new shards, and cleanup of finished leases — one round, from a
//! listing of the stream's shards and of the lease table. The loop that runs it is the parent
//! module.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, error, info, warn};

use crate::kinesis::{KinesisDataPlane, KinesisError};
use crate::lease::{Lease, LeaseError, LeaseScope, LeaseStore};
use crate::model::{ExtendedSequenceNumber, InitialPosition, Shard, ShardId};
use crate::shard::lineage::{close_open_parents, hash_space_hole, new_lease};

/// What one shard sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Leases created.
    pub created: Vec<String>,
    /// Finished or orphaned leases deleted.
    pub deleted: Vec<String>,
    /// Leases with records left whose shard was unlisted and answered ResourceNotFound in this
    /// round. Such a lease is deleted only when the next round (a sync interval later) finds the
    /// same, because one ResourceNotFound can be transient; pass this round's list to the next.
    pub suspected_gone: BTreeSet<String>,
}

/// A shard sync failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The stream does not exist (any more).
    #[error("stream {stream} not found")]
    StreamGone {
        /// The stream.
        stream: String,
        /// What Kinesis said.
        source: KinesisError,
    },
    /// Listing shards failed.
    #[error("listing shards failed")]
    Kinesis(#[source] KinesisError),
    /// The lease store failed.
    #[error("lease store failed")]
    Store(#[source] LeaseError),
}

fn checkpoint_for(position: InitialPosition) -> ExtendedSequenceNumber {
    match position {
        InitialPosition::Latest => ExtendedSequenceNumber::Latest,
        InitialPosition::TrimHorizon => ExtendedSequenceNumber::TrimHorizon,
        InitialPosition::AtTimestamp(_) => ExtendedSequenceNumber::AtTimestamp,
    }
}

/// Lists the stream's shards and its leases (those in `scope`); creates leases for shards that lack one;
/// deletes leases that are finished (SHARD_END, every child started, no parent left) or whose
/// shard no longer exists.
///
/// A shard whose ancestor has a lease starts at TRIM_HORIZON (its records follow the
/// ancestor's). A closed shard with no leased ancestor but a leased descendant was processed and
/// cleaned up, and gets none. Any other shard starts at the application's initial position — for
/// `Latest` only open shards get one, for the others every retained shard does, so children wait
/// for their parents.
pub async fn sync_shards(
    kinesis: &dyn KinesisDataPlane,
    store: &dyn LeaseStore,
    scope: &LeaseScope,
    initial_position: InitialPosition,
) -> Result<SyncReport, SyncError> {
    let listing = store.list().await.map_err(SyncError::Store)?;
    sync_listed(
        kinesis,
        store,
        scope,
        initial_position,
        &listing.leases,
        &BTreeSet::new(),
    )
    .await
}

/// [`sync_shards`] with the lease table already listed (a multi-stream scheduler lists it once
/// for all its streams), and the leases the previous round suspected gone
/// ([`SyncReport::suspected_gone`]): only those can be deleted with records left.
pub(crate) async fn sync_listed(
    kinesis: &dyn KinesisDataPlane,
    store: &dyn LeaseStore,
    scope: &LeaseScope,
    initial_position: InitialPosition,
    table: &[Lease],
    suspected_before: &BTreeSet<String>,
) -> Result<SyncReport, SyncError> {
    let stream = scope.stream();
    let mut shards = kinesis
        .list_all_shards(stream, None)
        .await
        .map_err(|e| match e {
            KinesisError::ResourceNotFound { .. } => SyncError::StreamGone {
                stream: stream.name.to_string(),
                source: e,
            },
            e => SyncError::Kinesis(e),
        })?;
    close_open_parents(&mut shards);
    // Keyed by shard id: parents and children are recorded as shard ids in every mode.
    let leases: BTreeMap<String, &Lease> = table
        .iter()
        .filter(|l| scope.contains(l))
        .map(|l| (l.shard_id().to_string(), l))
        .collect();
    // Open shards always tile the hash-key space: a hole means the listing missed one (eventual
    // consistency, a lost page). Decisions on such a listing could re-lease a finished shard
    // whose child was missing, or drop a parent before an unlisted child started: skip the
    // round, as the Java KCL does with an inconsistent listing. (A source without hash-key
    // ranges has nothing to tile.)
    if kinesis.capabilities().hash_key_ranges
        && let Some(hole) = hash_space_hole(&shards)
    {
        warn!(stream = %stream, hole = %hole, "shard listing is incomplete (open shards leave a hole in the hash-key space); shard sync skipped this round");
        return Ok(SyncReport::default());
    }
    let by_id: BTreeMap<&ShardId, &Shard> = shards.iter().map(|s| (&s.id, s)).collect();
    let has_leased_ancestor = |shard: &Shard| {
        let mut stack: Vec<&ShardId> = shard.parents().collect();
        let mut seen = BTreeSet::new();
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if leases.contains_key(p.as_str()) {
                return true;
            }
            if let Some(parent) = by_id.get(p) {
                stack.extend(parent.parents());
            }
        }
        false
    };
    // Children from the listing and from the table (a lease records its parents, a finished
    // one its children), so that a shard missing from one listing still links its family.
    let mut children: BTreeMap<&ShardId, Vec<&ShardId>> = BTreeMap::new();
    for s in &shards {
        for p in s.parents() {
            children.entry(p).or_default().push(&s.id);
        }
    }
    let table_ids: Vec<(ShardId, &Lease)> = leases.values().map(|l| (l.shard_id(), *l)).collect();
    for (id, l) in &table_ids {
        for p in &l.parent_shard_ids {
            children.entry(p).or_default().push(id);
        }
        children
            .entry(id)
            .or_default()
            .extend(l.child_shard_ids.iter());
    }
    for c in children.values_mut() {
        c.sort();
        c.dedup();
    }
    // A closed shard with a leased descendant was processed and its lease cleaned up: it must
    // not be leased (and read) again.
    let has_leased_descendant = |shard: &Shard| {
        let mut stack: Vec<&ShardId> = children.get(&shard.id).cloned().unwrap_or_default();
        let mut seen = BTreeSet::new();
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            if leases.contains_key(c.as_str()) {
                return true;
            }
            stack.extend(children.get(c).cloned().unwrap_or_default());
        }
        false
    };
    let mut report = SyncReport::default();
    for shard in &shards {
        if leases.contains_key(shard.id.as_str()) {
            continue;
        }
        let checkpoint = if has_leased_ancestor(shard) {
            ExtendedSequenceNumber::TrimHorizon
        } else if !shard.is_open()
            && (has_leased_descendant(shard) || matches!(initial_position, InitialPosition::Latest))
        {
            // Finished and cleaned up (its children are leased), or before a `Latest` start.
            continue;
        } else {
            checkpoint_for(initial_position)
        };
        let lease = new_lease(
            scope,
            &shard.id,
            shard.parents().cloned().collect(),
            shard.hash_key_range,
            checkpoint,
        );
        match store.create_if_absent(&lease).await {
            Ok(()) => {
                info!(shard_id = %shard.id, checkpoint = %lease.checkpoint, "lease created");
                report.created.push(lease.key);
            }
            Err(LeaseError::ConditionFailed { .. }) => {}
            Err(e) => return Err(SyncError::Store(e)),
        }
    }
    for lease in leases.values() {
        let shard = by_id.get(&lease.shard_id()).copied();
        let delete = match shard {
            // Trimmed, or missing from this listing: the same rule as when it is listed.
            None if lease.is_shard_end() => finished(lease, false, &children, &leases),
            // One listing can miss a shard (eventual consistency, a page lost between tokens),
            // and one ResourceNotFound can be transient: a lease with records left is deleted
            // only once two rounds a sync interval apart both find the shard unlisted and gone.
            None => match shard_confirmed_gone(kinesis, stream, lease).await {
                Ok(true) if suspected_before.contains(&lease.key) => {
                    error!(lease_key = %lease.key, checkpoint = %lease.checkpoint, "shard confirmed gone (unlisted and ResourceNotFound in two rounds; past retention): deleting its lease with an unfinished checkpoint");
                    true
                }
                Ok(true) => {
                    warn!(lease_key = %lease.key, checkpoint = %lease.checkpoint, "shard unlisted and ResourceNotFound; lease kept until the next sync round confirms");
                    report.suspected_gone.insert(lease.key.clone());
                    false
                }
                Ok(false) => {
                    warn!(lease_key = %lease.key, checkpoint = %lease.checkpoint, "shard missing from the listing but still readable; lease kept");
                    false
                }
                Err(e) => {
                    warn!(lease_key = %lease.key, error = %crate::error::Report(&e), "could not confirm whether the shard is gone; lease kept");
                    false
                }
            },
            Some(_) if lease.is_shard_end() => finished(lease, true, &children, &leases),
            Some(_) => false,
        };
        if delete {
            match store.delete(lease).await {
                Ok(()) => {
                    debug!(lease_key = %lease.key, "finished lease deleted");
                    report.deleted.push(lease.key.clone());
                }
                // Renewed or changed since the listing: try again at the next sync.
                Err(e) if e.is_lost() => {}
                Err(e) => return Err(SyncError::Store(e)),
            }
        }
    }
    Ok(report)
}

/// A SHARD_END lease can go once each child's lease exists and has started, and none of its own
/// parents still has a lease (so the chain is cleaned oldest first). Its children are those the
/// listing, the table's leases and its own `childShardIds` name. A listed (closed) shard must have
/// some; an unlisted one was trimmed, and a lease written before `childShardIds` may name none.
fn finished(
    lease: &Lease,
    listed: bool,
    children: &BTreeMap<&ShardId, Vec<&ShardId>>,
    leases: &BTreeMap<String, &Lease>,
) -> bool {
    let id = lease.shard_id();
    let kids = children.get(&&id).map(Vec::as_slice).unwrap_or_default();
    let started = |l: &&Lease| {
        !matches!(
            l.checkpoint,
            ExtendedSequenceNumber::TrimHorizon
                | ExtendedSequenceNumber::Latest
                | ExtendedSequenceNumber::AtTimestamp
        )
    };
    let children_started = (!listed || !kids.is_empty())
        && kids
            .iter()
            .all(|c| leases.get(c.as_str()).is_some_and(started));
    let parents_gone = lease
        .parent_shard_ids
        .iter()
        .all(|p| !leases.contains_key(p.as_str()));
    children_started && parents_gone
}

/// Whether the shard of `lease` no longer exists: GetShardIterator answers ResourceNotFound.
async fn shard_confirmed_gone(
    kinesis: &dyn KinesisDataPlane,
    stream: &crate::model::StreamIdentity,
    lease: &Lease,
) -> Result<bool, KinesisError> {
    let position = crate::model::StartingPosition::TrimHorizon;
    match kinesis
        .get_shard_iterator(stream, &lease.shard_id(), &position)
        .await
    {
        Ok(_) => Ok(false),
        Err(KinesisError::ResourceNotFound { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::InMemoryKinesis;
    use crate::lease::InMemoryLeaseStore;
    use crate::model::ChildShard;
    use crate::model::{SequenceNumber, StreamIdentity};
    use crate::shard::lineage::create_child_leases;

    async fn setup() -> (InMemoryKinesis, InMemoryLeaseStore, LeaseScope) {
        let k = InMemoryKinesis::new();
        let stream: StreamIdentity = k.create_stream("s", 2).unwrap();
        let store = InMemoryLeaseStore::new();
        let scope = LeaseScope::single(stream);
        let report = sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(report.created.len(), 2);
        // A checkpoint in the middle of each shard: records are left to read.
        for mut lease in store.snapshot() {
            lease.checkpoint = ExtendedSequenceNumber::Sequence {
                sequence: SequenceNumber::new("1").unwrap(),
                sub_sequence: 0,
            };
            store.put_unconditionally(lease);
        }
        (k, store, scope)
    }

    /// One shard-sync round over the store's current leases, given the last round's suspects.
    async fn round(
        k: &InMemoryKinesis,
        store: &InMemoryLeaseStore,
        scope: &LeaseScope,
        suspected: &BTreeSet<String>,
    ) -> SyncReport {
        let table = store.snapshot();
        sync_listed(
            k,
            store,
            scope,
            InitialPosition::TrimHorizon,
            &table,
            suspected,
        )
        .await
        .unwrap()
    }

    /// Issue 14 §5: a lease whose shard was missing from one listing was deleted at once,
    /// whatever its checkpoint.
    #[tokio::test(start_paused = true)]
    async fn a_shard_missing_from_one_listing_keeps_its_lease() {
        let (k, store, scope) = setup().await;
        k.miss_in_next_listings("s", &ShardId::from_index(1), 1);
        let report = sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        assert_eq!(store.snapshot().len(), 2);
    }

    /// A shard confirmed gone (ResourceNotFound past retention) has its lease deleted.
    #[tokio::test(start_paused = true)]
    async fn a_shard_confirmed_gone_has_its_lease_deleted() {
        let (k, store, scope) = setup().await;
        k.split_shard_evenly("s", &ShardId::from_index(0)).unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        k.set_retention_period("s", Duration::from_secs(1800))
            .unwrap();
        let key = ShardId::from_index(0).to_string();
        // The first round only suspects it (a ResourceNotFound can be transient)...
        let first = round(&k, &store, &scope, &BTreeSet::new()).await;
        assert!(first.deleted.is_empty(), "{first:?}");
        assert_eq!(first.suspected_gone, BTreeSet::from([key.clone()]));
        // ...the next one confirms and deletes.
        let second = round(&k, &store, &scope, &first.suspected_gone).await;
        assert_eq!(second.deleted, vec![key]);
    }

    /// A transient ResourceNotFound while a closed shard with records left is missing from one
    /// listing deletes nothing: the next round finds it again.
    #[tokio::test(start_paused = true)]
    async fn a_transient_resource_not_found_with_a_listing_gap_deletes_nothing() {
        let (k, store, scope) = setup().await;
        let shard = ShardId::from_index(0);
        k.split_shard_evenly("s", &shard).unwrap();
        k.miss_in_next_listings("s", &shard, 1);
        k.faults().next_calls(
            crate::engine::KinesisOperation::GetShardIterator,
            1,
            crate::fault::FaultAction::Fail(KinesisError::not_found("transient")),
        );
        let first = round(&k, &store, &scope, &BTreeSet::new()).await;
        assert_eq!(first.suspected_gone, BTreeSet::from([shard.to_string()]));
        let second = round(&k, &store, &scope, &first.suspected_gone).await;
        assert!(
            second.deleted.is_empty() && second.suspected_gone.is_empty(),
            "{second:?}"
        );
        assert!(store.snapshot().iter().any(|l| l.key == shard.to_string()));
    }

    /// A listing that misses the open children of a finished, cleaned-up parent used to make the
    /// parent look childless: its lease was created again and the shard read a second time.
    #[tokio::test(start_paused = true)]
    async fn a_listing_missing_a_child_does_not_re_lease_a_finished_parent() {
        let (k, store, scope) = setup().await;
        k.split_shard_evenly("s", &ShardId::from_index(0)).unwrap();
        sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        // The parent finished, its children started; the parent's lease is cleaned up.
        for mut lease in store.snapshot() {
            if lease.key == ShardId::from_index(0).to_string() {
                lease.checkpoint = ExtendedSequenceNumber::ShardEnd;
                lease.child_shard_ids = vec![ShardId::from_index(2), ShardId::from_index(3)];
            } else {
                lease.checkpoint = ExtendedSequenceNumber::at(SequenceNumber::new("7").unwrap());
            }
            store.put_unconditionally(lease);
        }
        let cleaned = sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(cleaned.deleted, vec![ShardId::from_index(0).to_string()]);
        k.miss_in_next_listings("s", &ShardId::from_index(2), 1);
        k.miss_in_next_listings("s", &ShardId::from_index(3), 1);
        let report = sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(report, SyncReport::default());
        assert!(
            store
                .snapshot()
                .iter()
                .all(|l| l.key != ShardId::from_index(0).to_string())
        );
    }

    /// A merged child's lease created while its other parent had none (a shard sync that
    /// failed half-way) made the next sync take that parent for done — it had a leased
    /// descendant — so its records were never read (found by the fan-out fleet simulation).
    #[tokio::test(start_paused = true)]
    async fn a_merged_child_waits_for_its_other_parent_to_be_leased() {
        let (k, store, scope) = setup().await;
        let (a, b) = (ShardId::from_index(0), ShardId::from_index(1));
        let child_id = k.merge_shards("s", &a, &b).unwrap();
        let lease_b = store.get(&scope.key(&b)).await.unwrap().unwrap();
        store.delete(&lease_b).await.unwrap();
        let child = ChildShard {
            id: child_id.clone(),
            parents: vec![a.clone(), b.clone()],
            hash_key_range: crate::model::HashKeyRange::FULL,
        };
        create_child_leases(&store, &scope, &scope.key(&a), std::slice::from_ref(&child))
            .await
            .unwrap();
        assert!(store.get(&scope.key(&child_id)).await.unwrap().is_none());
        // The next sync leases the other parent (no leased descendant hides it)...
        let report = sync_shards(&k, &store, &scope, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert!(report.created.contains(&scope.key(&b)), "{report:?}");
        // ...and that parent's end creates the child.
        create_child_leases(&store, &scope, &scope.key(&b), &[child])
            .await
            .unwrap();
        assert!(store.get(&scope.key(&child_id)).await.unwrap().is_some());
    }
}

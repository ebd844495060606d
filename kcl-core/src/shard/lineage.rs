//! Shard lineage: leases for a closed shard's children, and parents before children. (Shard
//! sync, which leases new shards and cleans up finished ones, is `scheduler::sync`.)

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::kinesis::{KinesisDataPlane, KinesisError};
use crate::lease::{Lease, LeaseError, LeaseScope, LeaseStore};
use crate::model::{ChildShard, ExtendedSequenceNumber, Shard, ShardId};

/// The lease of a new shard.
pub(crate) fn new_lease(
    scope: &LeaseScope,
    shard: &ShardId,
    parents: Vec<ShardId>,
    range: crate::model::HashKeyRange,
    checkpoint: ExtendedSequenceNumber,
) -> Lease {
    let mut lease = scope.new_lease(shard, checkpoint);
    lease.parent_shard_ids = parents;
    lease.hash_key_range = Some(range);
    lease
}

/// Marks closed every listed shard that some listed shard names as its parent. A paged listing
/// can show an open child under a parent still shown open (DynamoDB Streams does; the Java
/// adapter closes such parents the same way): a shard with a child has ended, whatever the
/// listing says, and must never be leased again as if it were open.
pub(crate) fn close_open_parents(shards: &mut [Shard]) {
    let parents: BTreeSet<ShardId> = shards
        .iter()
        .flat_map(|s| s.parents().cloned().collect::<Vec<_>>())
        .collect();
    for shard in shards.iter_mut() {
        if shard.is_open() && parents.contains(&shard.id) {
            shard.sequence_number_range.end =
                Some(crate::model::SequenceNumber::from_u128(u128::MAX));
        }
    }
}

/// The first hash key not covered by an open shard of the listing, if any.
pub(crate) fn hash_space_hole(shards: &[Shard]) -> Option<u128> {
    let mut open: Vec<_> = shards
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.hash_key_range)
        .collect();
    open.sort();
    let mut next = 0u128;
    for r in open {
        if r.start > next {
            return Some(next);
        }
        match r.end.checked_add(1) {
            Some(n) => next = next.max(n),
            None => return None,
        }
    }
    Some(next)
}

/// Creates the leases of a closed shard's children (TRIM_HORIZON, parents recorded) and records
/// them on the parent. Children that already have a lease (the other parent of a merge, or a
/// shard sync) are left alone.
///
/// A merged child is created only when its other parent has a lease too (the KCL's rule): with
/// that parent unleased — a shard sync that failed half-way, say — the child's lease would make
/// the next sync take the other parent for done (it has a leased descendant), and its records
/// would never be read. Left alone, the next sync leases the other parent, whose end creates
/// the child.
pub(crate) async fn create_child_leases(
    store: &dyn LeaseStore,
    scope: &LeaseScope,
    parent_key: &str,
    children: &[ChildShard],
) -> Result<(), LeaseError> {
    'children: for child in children {
        for other in &child.parents {
            let key = scope.key(other);
            if key != parent_key && store.get(&key).await?.is_none() {
                warn!(shard_id = %child.id, parent = %parent_key, other_parent = %other,
                    "merged child not created yet: its other parent has no lease (shard sync will create that one first)");
                continue 'children;
            }
        }
        let lease = new_lease(
            scope,
            &child.id,
            child.parents.clone(),
            child.hash_key_range,
            ExtendedSequenceNumber::TrimHorizon,
        );
        match store.create_if_absent(&lease).await {
            Ok(()) => info!(shard_id = %child.id, parent = %parent_key, "child lease created"),
            Err(LeaseError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if !children.is_empty() {
        let ids: Vec<ShardId> = children.iter().map(|c| c.id.clone()).collect();
        store.set_child_shards(parent_key, &ids).await?;
    }
    Ok(())
}

/// Whether every parent of a lease has finished: its lease is at SHARD_END, or it has no lease
/// and never will — it was cleaned up after finishing, never leased (started `Latest`), or is past
/// retention. A parent without a lease that has a leased ancestor is not finished: its lease will
/// be created when that ancestor ends (or at the next shard sync), so the child waits.
pub(crate) async fn parents_done(
    store: &dyn LeaseStore,
    kinesis: &dyn KinesisDataPlane,
    scope: &LeaseScope,
    lease: &Lease,
) -> Result<bool, ParentCheckError> {
    let mut shards: Option<Vec<Shard>> = None;
    for parent in &lease.parent_shard_ids {
        match store.get(&scope.key(parent)).await? {
            Some(p) if p.is_shard_end() => {}
            Some(_) => return Ok(false),
            None => {
                if shards.is_none() {
                    let mut listed = kinesis.list_all_shards(scope.stream(), None).await?;
                    close_open_parents(&mut listed);
                    // An incomplete listing cannot tell a parent trimmed past retention from
                    // one it missed: wait for a complete one.
                    if kinesis.capabilities().hash_key_ranges && hash_space_hole(&listed).is_some()
                    {
                        return Ok(false);
                    }
                    shards = Some(listed);
                }
                let shards = shards.as_deref().unwrap_or_default();
                let Some(shard) = shards.iter().find(|s| &s.id == parent) else {
                    continue;
                };
                let leased: BTreeSet<String> = store
                    .list()
                    .await?
                    .leases
                    .iter()
                    .filter(|l| scope.contains(l))
                    .map(|l| l.shard_id().to_string())
                    .collect();
                if leased_ancestor(shard, shards, &leased) {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// Why the parents of a shard could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParentCheckError {
    #[error(transparent)]
    Store(#[from] LeaseError),
    #[error(transparent)]
    Kinesis(#[from] KinesisError),
}

fn leased_ancestor(shard: &Shard, shards: &[Shard], leased: &BTreeSet<String>) -> bool {
    let by_id: BTreeMap<&ShardId, &Shard> = shards.iter().map(|s| (&s.id, s)).collect();
    let mut stack: Vec<&ShardId> = shard.parents().collect();
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        if leased.contains(p.as_str()) {
            return true;
        }
        if let Some(parent) = by_id.get(p) {
            stack.extend(parent.parents());
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HashKeyRange, SequenceNumber, SequenceNumberRange};

    fn shard(index: u64, parent: Option<u64>, end: Option<u128>) -> Shard {
        Shard {
            id: ShardId::from_index(index),
            parent: parent.map(ShardId::from_index),
            adjacent_parent: None,
            hash_key_range: HashKeyRange { start: 0, end: 1 },
            sequence_number_range: SequenceNumberRange {
                start: SequenceNumber::from_u128(u128::from(index) * 100),
                end: end.map(SequenceNumber::from_u128),
            },
        }
    }

    /// Found by the DynamoDB Streams simulation: a finished parent listed open beside its child
    /// was leased again from TRIM_HORIZON once its lease had been cleaned up.
    #[test]
    fn a_parent_listed_open_beside_its_child_counts_as_closed() {
        let mut listed = vec![
            shard(0, None, None),
            shard(1, Some(0), None),
            shard(2, None, None),
        ];
        close_open_parents(&mut listed);
        let open: Vec<bool> = listed.iter().map(Shard::is_open).collect();
        assert_eq!(open, [false, true, true]);
        let mut closed = vec![shard(0, None, Some(50)), shard(1, Some(0), None)];
        close_open_parents(&mut closed);
        assert_eq!(
            closed[0].sequence_number_range.end,
            Some(SequenceNumber::from_u128(50)),
            "a parent listed closed keeps its end"
        );
    }
}

//! Bounded runs: each shard stops at a timestamp (or at the stream's tip as of start), and
//! `run` returns once every shard of the application got there — for backfills and replays
//! into a separate application name.
//!
//! A shard has reached the bound when a read returned a record that arrived at or after it
//! (records from there on are not delivered), or when a read at the tip (MillisBehindLatest 0)
//! came back a margin after the bound. A child shard whose parent stopped at the bound holds
//! only later records, so it counts as reached without being read. Arrival times are
//! Kinesis's `ApproximateArrivalTimestamp`: the bound is on Kinesis's clock, and
//! [`StopAt::TipAtStart`] takes this worker's clock at start (NTP keeps the two within a
//! fraction of a second of each other).
//!
//! A worker returns only once it has seen every lease ended or reached the bound itself:
//! leases it reached stay held (renewed, not processed) until `run` returns, and a lease
//! another worker reached is released when that worker returns and verified again here from
//! its checkpoint, which costs one read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::lease::Lease;

/// Where a bounded run stops each shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopAt {
    /// Deliver records that arrived before this time, then stop the shard.
    Timestamp(SystemTime),
    /// Deliver what the stream held when `run` started (records that arrived before the
    /// start), then stop.
    TipAtStart,
}

impl StopAt {
    /// The bound as a time, for a run starting at `start`.
    pub(crate) fn resolve(self, start: SystemTime) -> SystemTime {
        match self {
            Self::Timestamp(t) => t,
            Self::TipAtStart => start,
        }
    }
}

/// Whether every lease is done: ended, reached the bound on this worker (`reached`), or a
/// descendant of one that reached it (such a shard opened after the bound).
pub(crate) fn all_done(leases: &[Lease], reached: &BTreeSet<String>) -> bool {
    let by_key: BTreeMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut memo: BTreeMap<String, bool> = BTreeMap::new();
    !leases.is_empty()
        && leases
            .iter()
            .all(|l| l.is_shard_end() || past_bound(l, &by_key, reached, &mut memo, 0))
}

/// Whether `lease` reached the bound here, or descends from a lease that did.
fn past_bound(
    lease: &Lease,
    by_key: &BTreeMap<&str, &Lease>,
    reached: &BTreeSet<String>,
    memo: &mut BTreeMap<String, bool>,
    depth: usize,
) -> bool {
    if reached.contains(&lease.key) {
        return true;
    }
    if let Some(&known) = memo.get(&lease.key) {
        return known;
    }
    // A lineage deeper than this is a malformed table (a cycle): not done, never a hang.
    let result = depth < 64
        && lease.parent_shard_ids.iter().any(|p| {
            let key = lease.key_in_stream(p);
            match by_key.get(key.as_str()) {
                Some(parent) => {
                    !parent.is_shard_end() && past_bound(parent, by_key, reached, memo, depth + 1)
                }
                None => false,
            }
        });
    memo.insert(lease.key.clone(), result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExtendedSequenceNumber, ShardId};

    fn lease(shard: u64, parents: &[u64], checkpoint: ExtendedSequenceNumber) -> Lease {
        let mut l = Lease::new(&ShardId::from_index(shard), checkpoint);
        l.parent_shard_ids = parents.iter().map(|p| ShardId::from_index(*p)).collect();
        l
    }

    #[test]
    fn descendants_of_a_shard_stopped_at_the_bound_are_done() {
        let open = ExtendedSequenceNumber::TrimHorizon;
        let leases = vec![
            lease(0, &[], ExtendedSequenceNumber::ShardEnd),
            lease(1, &[0], open.clone()),
            lease(2, &[1], open.clone()),
            lease(3, &[1, 4], open.clone()),
            lease(4, &[], open.clone()),
        ];
        let mut reached: BTreeSet<String> = [ShardId::from_index(1).to_string()].into();
        assert!(!all_done(&leases, &reached), "shard 4 is still open");
        reached.insert(ShardId::from_index(4).to_string());
        assert!(all_done(&leases, &reached));
        assert!(!all_done(&[], &reached), "an empty table is not done");
    }

    #[test]
    fn a_cycle_in_the_lineage_is_not_done() {
        let open = ExtendedSequenceNumber::TrimHorizon;
        let leases = vec![lease(1, &[2], open.clone()), lease(2, &[1], open)];
        assert!(!all_done(&leases, &BTreeSet::new()));
    }
}

//! The ledger of a simulated run, and the invariants checked against it.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ExtendedSequenceNumber, SequenceNumber, ShardId};
use crate::retrieval::TrimmedGap;

/// One record the producer put: partition key and its index among that key's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Put {
    pub(crate) key: String,
    pub(crate) index: u64,
    pub(crate) sequence: SequenceNumber,
    pub(crate) shard: ShardId,
}

/// A trimmed gap a processor was told of, with how many puts the ledger held then.
#[derive(Debug, Clone)]
pub(crate) struct Gap {
    pub(crate) shard: ShardId,
    pub(crate) gap: TrimmedGap,
    pub(crate) puts: usize,
}

impl Gap {
    /// Whether the gap accounts for `put` (the `index`-th put): on the gap's shard, between its
    /// bounds; on a descendant, put before the gap was found (a child starts at its trim
    /// horizon, after the gap of its parent).
    fn covers(&self, put: &Put, index: usize, lineage: &BTreeMap<ShardId, Vec<ShardId>>) -> bool {
        if put.shard == self.shard {
            return self.gap.after.as_ref().is_none_or(|a| put.sequence > *a)
                && self
                    .gap
                    .first_readable
                    .as_ref()
                    .is_none_or(|f| put.sequence < *f);
        }
        index < self.puts && descends(&put.shard, &self.shard, lineage)
    }
}

/// Whether `shard` descends from `ancestor`.
fn descends(
    shard: &ShardId,
    ancestor: &ShardId,
    lineage: &BTreeMap<ShardId, Vec<ShardId>>,
) -> bool {
    let mut todo = vec![shard];
    let mut seen = BTreeSet::new();
    while let Some(s) = todo.pop() {
        for p in lineage.get(s).into_iter().flatten() {
            if p == ancestor {
                return true;
            }
            if seen.insert(p) {
                todo.push(p);
            }
        }
    }
    false
}

/// One successful `process_records` call.
#[derive(Debug, Clone)]
pub(crate) struct Processed {
    pub(crate) incarnation: u64,
    pub(crate) shard: ShardId,
    /// Where this processor instance started (its `initialize` checkpoint).
    pub(crate) started_at: ExtendedSequenceNumber,
    /// (key, index, position) of each record, in order.
    pub(crate) records: Vec<(String, u64, ExtendedSequenceNumber)>,
    /// When the call began and returned (virtual time).
    pub(crate) during: (tokio::time::Instant, tokio::time::Instant),
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) puts: Vec<Put>,
    pub(crate) processed: Vec<Processed>,
    /// Incarnations that crashed or lost a lease, with the shards they held.
    pub(crate) interrupted: BTreeSet<u64>,
    /// Lease deletions, in order: the shard, and how many puts and processings the ledger held
    /// at that moment.
    pub(crate) deletions: Vec<Deletion>,
    /// Trimmed gaps processors were told of.
    pub(crate) gaps: Vec<Gap>,
}

/// A lease deleted from the table, with the ledger's length at that moment.
#[derive(Debug, Clone)]
pub(crate) struct Deletion {
    pub(crate) shard: ShardId,
    pub(crate) puts: usize,
    pub(crate) processed: usize,
}

/// What the invariant check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Records put.
    pub records_put: u64,
    /// Record deliveries in successful `process_records` calls (duplicates included).
    pub deliveries: u64,
    /// Deliveries of a record that had been processed before.
    pub duplicates: u64,
    /// Trimmed gaps processors were told of.
    pub trimmed_gaps: u64,
    /// Records never processed because they were trimmed first, each inside a gap reported.
    pub records_trimmed: u64,
    /// Invariant violations, each described; empty on success.
    pub violations: Vec<String>,
}

impl Ledger {
    pub(crate) fn mark_deletion(&mut self, shard: ShardId) {
        let (puts, processed) = (self.puts.len(), self.processed.len());
        self.deletions.push(Deletion {
            shard,
            puts,
            processed,
        });
    }

    pub(crate) fn mark_gap(&mut self, shard: ShardId, gap: TrimmedGap) {
        let puts = self.puts.len();
        self.gaps.push(Gap { shard, gap, puts });
    }

    /// Checks every invariant of the run.
    pub(crate) fn check(
        &self,
        lineage: &BTreeMap<ShardId, Vec<ShardId>>,
        checkpoints: &[(String, ExtendedSequenceNumber)],
    ) -> LedgerSummary {
        let mut s = LedgerSummary {
            records_put: self.puts.len() as u64,
            ..Default::default()
        };
        let mut violation = |v: String| {
            if s.violations.len() < 20 {
                s.violations.push(v);
            }
        };
        // Records trimmed before they were read: never processed, and inside a reported gap.
        let processed: BTreeSet<(&str, u64)> = self
            .processed
            .iter()
            .flat_map(|p| p.records.iter().map(|(k, i, _)| (k.as_str(), *i)))
            .collect();
        let lost: BTreeSet<(&str, u64)> = self
            .puts
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                !processed.contains(&(p.key.as_str(), p.index))
                    && self.gaps.iter().any(|g| g.covers(p, *i, lineage))
            })
            .map(|(_, p)| (p.key.as_str(), p.index))
            .collect();
        s.trimmed_gaps = self.gaps.len() as u64;
        s.records_trimmed = lost.len() as u64;
        // First processing of each (key, index), as a position in the global processing order.
        let mut first: BTreeMap<(String, u64), usize> = BTreeMap::new();
        let mut next_expected: BTreeMap<String, u64> = BTreeMap::new();
        let mut deliveries = 0u64;
        let mut duplicates = 0u64;
        let mut first_of_shard: BTreeMap<ShardId, usize> = BTreeMap::new();
        for (i, call) in self.processed.iter().enumerate() {
            first_of_shard.entry(call.shard.clone()).or_insert(i);
            let mut last_in_call: BTreeMap<&str, u64> = BTreeMap::new();
            for (key, index, position) in &call.records {
                deliveries += 1;
                // Nothing at or before the checkpoint a processor started from is delivered to it.
                if *position <= call.started_at {
                    violation(format!(
                        "{key}#{index} at {position} delivered to a processor that started at {}",
                        call.started_at
                    ));
                }
                // Within one call, a key's records come in order.
                if let Some(prev) = last_in_call.insert(key, *index)
                    && *index <= prev
                {
                    violation(format!(
                        "{key}#{index} after #{prev} in one batch of {}",
                        call.shard
                    ));
                }
                match first.get(&(key.clone(), *index)) {
                    Some(_) => duplicates += 1,
                    None => {
                        // First processings of a key happen in put order, with no gap but
                        // records trimmed before they were read.
                        let expected = next_expected.entry(key.clone()).or_insert(0);
                        while *expected < *index && lost.contains(&(key.as_str(), *expected)) {
                            *expected += 1;
                        }
                        if *index != *expected {
                            violation(format!(
                                "{key}#{index} first processed while #{expected} was not yet"
                            ));
                        }
                        *expected = (*expected).max(index + 1);
                        first.insert((key.clone(), *index), i);
                    }
                }
            }
        }
        s.deliveries = deliveries;
        s.duplicates = duplicates;
        // No two processors work on one shard at once, unless the earlier one crashed or lost
        // its lease (a graceful hand-off waits for the batch in progress).
        let mut by_shard: BTreeMap<&ShardId, Vec<&Processed>> = BTreeMap::new();
        for call in &self.processed {
            by_shard.entry(&call.shard).or_default().push(call);
        }
        for (shard, mut calls) in by_shard {
            calls.sort_by_key(|c| c.during.0);
            // The call that ends last among those begun so far.
            let mut open: Option<&Processed> = None;
            for call in calls {
                if let Some(prev) = open
                    && prev.incarnation != call.incarnation
                    && call.during.0 < prev.during.1
                    && !self.interrupted.contains(&prev.incarnation)
                {
                    violation(format!(
                        "{shard}: incarnation {} began a batch {:?} before incarnation {} ended one it began {:?} earlier",
                        call.incarnation,
                        prev.during.1 - call.during.0,
                        prev.incarnation,
                        call.during.0 - prev.during.0,
                    ));
                }
                if open.is_none_or(|p| call.during.1 > p.during.1) {
                    open = Some(call);
                }
            }
        }
        // At least once.
        let missing: Vec<&Put> = self
            .puts
            .iter()
            .filter(|p| !first.contains_key(&(p.key.clone(), p.index)))
            .filter(|p| !lost.contains(&(p.key.as_str(), p.index)))
            .collect();
        if !missing.is_empty() {
            violation(format!(
                "{} records never processed (and in no reported trimmed gap), e.g. {}#{} in {}",
                missing.len(),
                missing[0].key,
                missing[0].index,
                missing[0].shard
            ));
        }
        // Children after parents: no child record is processed before every record of its
        // parents was first processed.
        let mut last_first_of_shard: BTreeMap<&ShardId, usize> = BTreeMap::new();
        for p in &self.puts {
            if let Some(i) = first.get(&(p.key.clone(), p.index)) {
                let e = last_first_of_shard.entry(&p.shard).or_insert(0);
                *e = (*e).max(*i);
            }
        }
        for (child, parents) in lineage {
            let Some(child_first) = first_of_shard.get(child) else {
                continue;
            };
            for parent in parents {
                if let Some(parent_last) = last_first_of_shard.get(parent)
                    && child_first < parent_last
                {
                    violation(format!(
                        "{child} processed (call {child_first}) before its parent {parent} finished (call {parent_last})"
                    ));
                }
            }
        }
        // No lease is deleted while its shard had records put and not yet processed: its
        // checkpoint would be gone with them.
        for d in &self.deletions {
            let done: BTreeSet<(&str, u64)> = self.processed[..d.processed]
                .iter()
                .flat_map(|p| p.records.iter().map(|(k, i, _)| (k.as_str(), *i)))
                .collect();
            let unread = self.puts[..d.puts]
                .iter()
                .filter(|p| {
                    p.shard == d.shard
                        && !done.contains(&(p.key.as_str(), p.index))
                        && !lost.contains(&(p.key.as_str(), p.index))
                })
                .count();
            if unread > 0 {
                violation(format!(
                    "lease of {} deleted with {unread} of its records not yet processed",
                    d.shard
                ));
            }
        }
        // Checkpoints never go backwards.
        let mut last: BTreeMap<&str, &ExtendedSequenceNumber> = BTreeMap::new();
        for (key, c) in checkpoints {
            if let Some(prev) = last.insert(key, c)
                && c < prev
            {
                violation(format!("checkpoint of {key} went back from {prev} to {c}"));
            }
        }
        s
    }
}

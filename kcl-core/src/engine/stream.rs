//! One stream's shards, records and lineage inside the in-memory engine. Synchronous: the engine
//! holds its lock around these calls and never across an await.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::watch;
use tokio::time::Instant;

use super::quota::{QuotaLimits, ShardQuota};
use crate::kinesis::{KinesisError, ShardFilter};
use crate::model::{
    ChildShard, HashKeyRange, Record, SequenceNumber, SequenceNumberRange, Shard, ShardId,
    StreamIdentity,
};

/// Default retention of a new stream (Kinesis: 24 hours).
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A record to append, already validated and routed by hash key.
pub(crate) struct NewRecord {
    pub(crate) partition_key: ByteString,
    pub(crate) explicit_hash_key: Option<ByteString>,
    pub(crate) hash_key: u128,
    pub(crate) data: Bytes,
}

pub(crate) struct ShardState {
    pub(crate) shard: Shard,
    pub(crate) created_at: SystemTime,
    pub(crate) closed_at: Option<SystemTime>,
    pub(crate) children: Vec<u64>,
    records: VecDeque<Record>,
    /// Absolute offset of `records[0]`; offsets never change once assigned.
    first_offset: u64,
    last_trimmed: Option<SequenceNumber>,
    quota: Option<ShardQuota>,
}

impl ShardState {
    pub(crate) fn end_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }

    pub(crate) fn first_offset(&self) -> u64 {
        self.first_offset
    }

    pub(crate) fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    fn record_at(&self, offset: u64) -> Option<&Record> {
        offset
            .checked_sub(self.first_offset)
            .and_then(|i| self.records.get(i as usize))
    }

    /// First offset whose record has a sequence number ≥ `seq` (or > with `after`).
    pub(crate) fn offset_of(&self, seq: &SequenceNumber, after: bool) -> u64 {
        let i = self.records.partition_point(|r| {
            if after {
                r.sequence_number <= *seq
            } else {
                r.sequence_number < *seq
            }
        });
        self.first_offset + i as u64
    }

    pub(crate) fn offset_at_time(&self, t: SystemTime) -> u64 {
        self.first_offset
            + self
                .records
                .partition_point(|r| r.approximate_arrival_timestamp < t) as u64
    }

    /// Whether `seq` lies in the shard's sequence-number range.
    pub(crate) fn covers(&self, seq: &SequenceNumber) -> bool {
        let r = &self.shard.sequence_number_range;
        *seq >= r.start && r.end.as_ref().is_none_or(|end| seq <= end)
    }

    /// Reads from `offset` (clamped to the trim horizon) at most `limit` records and `max_bytes`
    /// of data (always at least one record). Returns the records and the next offset.
    pub(crate) fn read(&self, offset: u64, limit: usize, max_bytes: usize) -> (Vec<Record>, u64) {
        let start = offset.max(self.first_offset);
        let from = (start - self.first_offset) as usize;
        let available = self.records.len().saturating_sub(from).min(limit);
        let mut out = Vec::with_capacity(available);
        let mut bytes = 0usize;
        for r in self.records.range(from..from + available) {
            bytes += r.data.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(r.clone());
        }
        let next = start + out.len() as u64;
        (out, next)
    }

    /// The sequence number just before `offset`: the continuation point of a subscription.
    pub(crate) fn sequence_before(&self, offset: u64) -> SequenceNumber {
        if let Some(r) = offset.checked_sub(1).and_then(|o| self.record_at(o)) {
            return r.sequence_number.clone();
        }
        self.last_trimmed
            .clone()
            .unwrap_or_else(|| self.shard.sequence_number_range.start.clone())
    }

    /// Whether reading from `offset` would pass over trimmed records.
    pub(crate) fn is_trimmed(&self, offset: u64) -> bool {
        offset < self.first_offset
    }

    /// Whether reading at (or after) `seq` would pass over trimmed records.
    pub(crate) fn is_trimmed_at(&self, seq: &SequenceNumber, after: bool) -> bool {
        self.last_trimmed
            .as_ref()
            .is_some_and(|t| if after { seq < t } else { seq <= t })
    }

    /// Milliseconds between `now` and the arrival of the first record at or after `offset`;
    /// 0 when there is none.
    pub(crate) fn millis_behind(&self, offset: u64, now: SystemTime) -> u64 {
        self.record_at(offset.max(self.first_offset))
            .and_then(|r| now.duration_since(r.approximate_arrival_timestamp).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    pub(crate) fn quota(&mut self, limits: &QuotaLimits, now: Instant) -> &mut ShardQuota {
        self.quota
            .get_or_insert_with(|| ShardQuota::new(limits, now))
    }

    fn trim(&mut self, horizon: SystemTime) {
        while self
            .records
            .front()
            .is_some_and(|r| r.approximate_arrival_timestamp < horizon)
        {
            let r = self.records.pop_front().expect("front exists");
            self.last_trimmed = Some(r.sequence_number);
            self.first_offset += 1;
        }
    }
}

/// What a read of a trimmed position gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrimmedReads {
    /// Records from the oldest one still retained, silently (Kinesis).
    #[default]
    FromOldest,
    /// [`KinesisError::TrimmedData`] (DynamoDB Streams' `TrimmedDataAccessException`), from
    /// GetShardIterator at a trimmed sequence number and GetRecords of an overtaken iterator.
    Fail,
}

pub(crate) struct StreamState {
    pub(crate) identity: StreamIdentity,
    pub(crate) nonce: u64,
    pub(crate) created_at: SystemTime,
    pub(crate) retention: Duration,
    pub(crate) trimmed_reads: TrimmedReads,
    pub(crate) shards: BTreeMap<u64, ShardState>,
    next_shard_index: u64,
    next_counter: u128,
    /// Bumped on every append and reshard so push subscriptions wake up.
    pub(crate) changes: watch::Sender<u64>,
}

impl StreamState {
    pub(crate) fn new(
        identity: StreamIdentity,
        nonce: u64,
        shard_count: u32,
        now: SystemTime,
    ) -> Self {
        let mut s = Self {
            identity,
            nonce,
            created_at: now,
            retention: DEFAULT_RETENTION,
            trimmed_reads: TrimmedReads::FromOldest,
            shards: BTreeMap::new(),
            next_shard_index: 0,
            next_counter: 0,
            changes: watch::Sender::new(0),
        };
        for range in HashKeyRange::split_evenly(shard_count) {
            s.add_shard(range, None, None, now);
        }
        s
    }

    /// A 56-digit sequence number, like AWS's: `49`, 24 digits of stream nonce, 30 of counter.
    fn next_sequence(&mut self) -> SequenceNumber {
        let counter = self.next_counter;
        self.next_counter += 1;
        let digits = format!("49{:024}{:030}", self.nonce, counter);
        SequenceNumber::new(&digits).expect("formatted digits are a sequence number")
    }

    fn add_shard(
        &mut self,
        range: HashKeyRange,
        parent: Option<ShardId>,
        adjacent_parent: Option<ShardId>,
        now: SystemTime,
    ) -> u64 {
        let index = self.next_shard_index;
        self.next_shard_index += 1;
        // The start consumes a counter value so that every record's number is above it.
        let start = self.next_sequence();
        let shard = Shard {
            id: ShardId::from_index(index),
            parent,
            adjacent_parent,
            hash_key_range: range,
            sequence_number_range: SequenceNumberRange { start, end: None },
        };
        self.shards.insert(
            index,
            ShardState {
                shard,
                created_at: now,
                closed_at: None,
                children: Vec::new(),
                records: VecDeque::new(),
                first_offset: 0,
                last_trimmed: None,
                quota: None,
            },
        );
        index
    }

    fn close(&mut self, index: u64, children: Vec<u64>, now: SystemTime) {
        let end = self.next_sequence();
        let s = self.shards.get_mut(&index).expect("closing a known shard");
        s.shard.sequence_number_range.end = Some(end);
        s.closed_at = Some(now);
        s.children = children;
    }

    /// Parses an id of this engine (`shardId-` + index) and finds the shard.
    pub(crate) fn index_of(&self, id: &ShardId) -> Result<u64, KinesisError> {
        let not_found = || {
            KinesisError::not_found(format!(
                "shard {id} not found in stream {}",
                self.identity.name
            ))
        };
        let index: u64 = id
            .as_str()
            .strip_prefix("shardId-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(not_found)?;
        if self.shards.contains_key(&index) && ShardId::from_index(index) == *id {
            Ok(index)
        } else {
            Err(not_found())
        }
    }

    pub(crate) fn shard(&self, index: u64) -> Result<&ShardState, KinesisError> {
        self.shards.get(&index).ok_or_else(|| {
            KinesisError::not_found(format!(
                "shard {} of stream {} no longer exists",
                ShardId::from_index(index),
                self.identity.name
            ))
        })
    }

    pub(crate) fn shard_mut(&mut self, index: u64) -> Result<&mut ShardState, KinesisError> {
        let name = self.identity.name.clone();
        self.shards.get_mut(&index).ok_or_else(|| {
            KinesisError::not_found(format!(
                "shard {} of stream {name} no longer exists",
                ShardId::from_index(index)
            ))
        })
    }

    fn open_shard_for(&self, hash_key: u128) -> u64 {
        self.shards
            .iter()
            .find(|(_, s)| s.is_open() && s.shard.hash_key_range.contains(hash_key))
            .map(|(i, _)| *i)
            .expect("open shards always cover the whole hash-key space")
    }

    /// Routes and appends one record, enforcing the write quota when `limits` is set.
    pub(crate) fn append(
        &mut self,
        rec: NewRecord,
        arrival: SystemTime,
        limits: Option<&QuotaLimits>,
        now: Instant,
    ) -> Result<(ShardId, SequenceNumber), KinesisError> {
        let index = self.open_shard_for(rec.hash_key);
        if let Some(limits) = limits {
            let bytes = rec.data.len() + rec.partition_key.len();
            let shard = self
                .shards
                .get_mut(&index)
                .expect("routed to a known shard");
            if !shard.quota(limits, now).admit_write(bytes, now) {
                return Err(KinesisError::throughput_exceeded(format!(
                    "write rate of {} exceeded",
                    shard.shard.id
                )));
            }
        }
        let sequence_number = self.next_sequence();
        let shard = self
            .shards
            .get_mut(&index)
            .expect("routed to a known shard");
        shard.records.push_back(Record {
            data: rec.data,
            partition_key: rec.partition_key,
            sequence_number: sequence_number.clone(),
            sub_sequence_number: 0,
            explicit_hash_key: rec.explicit_hash_key,
            approximate_arrival_timestamp: arrival,
            aggregated: false,
        });
        Ok((shard.shard.id.clone(), sequence_number))
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn open_index(&self, id: &ShardId) -> Result<u64, KinesisError> {
        let index = self.index_of(id)?;
        if !self.shards[&index].is_open() {
            return Err(KinesisError::invalid(format!("shard {id} is closed")));
        }
        Ok(index)
    }

    /// SplitShard: closes the shard and opens two children meeting at `new_start`.
    pub(crate) fn split(
        &mut self,
        id: &ShardId,
        new_start: u128,
        now: SystemTime,
    ) -> Result<[ShardId; 2], KinesisError> {
        let index = self.open_index(id)?;
        let range = self.shards[&index].shard.hash_key_range;
        if new_start <= range.start || new_start > range.end {
            return Err(KinesisError::invalid(format!(
                "new starting hash key {new_start} must lie in ({}, {}] of shard {id}",
                range.start, range.end
            )));
        }
        let low = self.add_shard(
            HashKeyRange {
                start: range.start,
                end: new_start - 1,
            },
            Some(id.clone()),
            None,
            now,
        );
        let high = self.add_shard(
            HashKeyRange {
                start: new_start,
                end: range.end,
            },
            Some(id.clone()),
            None,
            now,
        );
        self.close(index, vec![low, high], now);
        Ok([ShardId::from_index(low), ShardId::from_index(high)])
    }

    /// A DynamoDB Streams rotation: closes an open shard and opens one child with its range.
    pub(crate) fn rotate(
        &mut self,
        id: &ShardId,
        now: SystemTime,
    ) -> Result<ShardId, KinesisError> {
        let index = self.open_index(id)?;
        let range = self.shards[&index].shard.hash_key_range;
        let child = self.add_shard(range, Some(id.clone()), None, now);
        self.close(index, vec![child], now);
        Ok(ShardId::from_index(child))
    }

    /// A disabled DynamoDB stream: every open shard closes, with no children.
    pub(crate) fn close_all(&mut self, now: SystemTime) {
        let open: Vec<u64> = self
            .shards
            .iter()
            .filter(|(_, s)| s.is_open())
            .map(|(i, _)| *i)
            .collect();
        for index in open {
            self.close(index, Vec::new(), now);
        }
    }

    /// MergeShards: closes two adjacent open shards and opens their child.
    pub(crate) fn merge(
        &mut self,
        id: &ShardId,
        adjacent: &ShardId,
        now: SystemTime,
    ) -> Result<ShardId, KinesisError> {
        let a = self.open_index(id)?;
        let b = self.open_index(adjacent)?;
        let (ra, rb) = (
            self.shards[&a].shard.hash_key_range,
            self.shards[&b].shard.hash_key_range,
        );
        let range = if ra.is_followed_by(&rb) {
            HashKeyRange {
                start: ra.start,
                end: rb.end,
            }
        } else if rb.is_followed_by(&ra) {
            HashKeyRange {
                start: rb.start,
                end: ra.end,
            }
        } else {
            return Err(KinesisError::invalid(format!(
                "shards {id} and {adjacent} are not adjacent"
            )));
        };
        let child = self.add_shard(range, Some(id.clone()), Some(adjacent.clone()), now);
        self.close(a, vec![child], now);
        self.close(b, vec![child], now);
        Ok(ShardId::from_index(child))
    }

    /// UpdateShardCount with uniform scaling: splits at every target boundary inside an open
    /// shard, then merges the pieces of each target range pairwise, so every new shard has one
    /// parent (split) or two (merge) as on Kinesis.
    pub(crate) fn update_shard_count(
        &mut self,
        target: u32,
        now: SystemTime,
    ) -> Result<(), KinesisError> {
        let open = self.open_shards().count() as u32;
        if target == 0 || target > open.saturating_mul(2) || target.saturating_mul(2) < open {
            return Err(KinesisError::invalid(format!(
                "target shard count {target} must be between half and double the {open} open shards"
            )));
        }
        let targets = HashKeyRange::split_evenly(target);
        for t in &targets[1..] {
            let covering = self
                .open_shards()
                .find(|s| {
                    s.shard.hash_key_range.start < t.start
                        && s.shard.hash_key_range.contains(t.start)
                })
                .map(|s| s.shard.id.clone());
            if let Some(id) = covering {
                self.split(&id, t.start, now)?;
            }
        }
        for t in &targets {
            loop {
                let mut pieces: Vec<(HashKeyRange, ShardId)> = self
                    .open_shards()
                    .filter(|s| t.contains(s.shard.hash_key_range.start))
                    .map(|s| (s.shard.hash_key_range, s.shard.id.clone()))
                    .collect();
                if pieces.len() < 2 {
                    break;
                }
                pieces.sort();
                self.merge(&pieces[0].1, &pieces[1].1, now)?;
            }
        }
        Ok(())
    }

    pub(crate) fn open_shards(&self) -> impl Iterator<Item = &ShardState> {
        self.shards.values().filter(|s| s.is_open())
    }

    pub(crate) fn child_shards(&self, index: u64) -> Vec<ChildShard> {
        let Some(s) = self.shards.get(&index) else {
            return Vec::new();
        };
        s.children
            .iter()
            .filter_map(|c| self.shards.get(c))
            .map(|c| ChildShard {
                id: c.shard.id.clone(),
                parents: c.shard.parents().cloned().collect(),
                hash_key_range: c.shard.hash_key_range,
            })
            .collect()
    }

    /// Drops records older than the retention period, and closed shards whose records have all
    /// expired (they then vanish from ListShards, as on Kinesis).
    pub(crate) fn trim(&mut self, now: SystemTime) {
        let Some(horizon) = now.checked_sub(self.retention) else {
            return;
        };
        for s in self.shards.values_mut() {
            s.trim(horizon);
        }
        self.shards
            .retain(|_, s| s.closed_at.is_none_or(|closed| closed >= horizon));
    }

    /// The shards `filter` selects, in index order.
    pub(crate) fn list(&self, filter: Option<&ShardFilter>, now: SystemTime) -> Vec<Shard> {
        let horizon = now
            .checked_sub(self.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .max(self.created_at);
        let open_at =
            |s: &ShardState, t: SystemTime| s.created_at <= t && s.closed_at.is_none_or(|c| c > t);
        self.shards
            .iter()
            .filter(|(index, s)| match filter {
                None | Some(ShardFilter::FromTrimHorizon) => true,
                Some(ShardFilter::AtLatest) => s.is_open(),
                Some(ShardFilter::AfterShardId(id)) => {
                    let after = id
                        .as_str()
                        .strip_prefix("shardId-")
                        .and_then(|n| n.parse::<u64>().ok());
                    after.is_none_or(|a| **index > a)
                }
                Some(ShardFilter::AtTrimHorizon) => open_at(s, horizon),
                Some(ShardFilter::AtTimestamp(t)) => open_at(s, (*t).max(self.created_at)),
                Some(ShardFilter::FromTimestamp(t)) => s.closed_at.is_none_or(|c| c > *t),
            })
            .map(|(_, s)| s.shard.clone())
            .collect()
    }
}

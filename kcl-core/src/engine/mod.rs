//! An in-memory Kinesis engine: streams, shards, resharding, quotas, faults and push
//! subscriptions inside the process.
//!
//! It is a product feature for users' tests: a whole worker fleet can run against it with no AWS
//! account and no emulator, under `tokio::time::pause()`, and reach states no emulator can
//! (throttling, shard end over a subscription, expired iterators on demand).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use bytes::Bytes;
//! use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
//! use kcl_core::kinesis::KinesisDataPlane;
//! use kcl_core::model::StartingPosition;
//!
//! let kinesis = InMemoryKinesis::new();
//! let stream = kinesis.create_stream("orders", 2)?;
//! let put = kinesis.put_record("orders", PutRecordEntry::new("customer-1", Bytes::from("hello"))).await?;
//! let it = kinesis.get_shard_iterator(&stream, &put.shard_id, &StartingPosition::TrimHorizon).await?;
//! let out = kinesis.get_records(&it, 100).await?;
//! assert_eq!(out.records[0].data, "hello");
//! # Ok::<(), kcl_core::kinesis::KinesisError>(())
//! # }).unwrap();
//! ```
//!
//! Semantics follow Kinesis: records routed by MD5 of the partition key (or the explicit hash
//! key), 56-digit sequence numbers increasing per shard, iterators expiring after 5 minutes,
//! GetRecords capped at 10,000 records and 10 MiB, a drained closed shard answering with no next
//! iterator and its children, SplitShard / MergeShards / UpdateShardCount lineage, retention
//! trimming. Time comes from `tokio::time`, so paused-clock tests see arrival times, iterator
//! expiry and quotas move with virtual time. Resharding is instantaneous (no `UPDATING` state).

mod iterator;
mod quota;
mod stream;
mod subscription;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::time::Instant;

pub use quota::QuotaLimits;
pub use stream::TrimmedReads;
pub use subscription::{Consumer, ConsumerStatus, ShardSubscription, SubscriptionEvent};

use self::iterator::IteratorToken;
use self::stream::{NewRecord, StreamState};
use self::subscription::ConsumerRegistry;
use crate::fault::{FaultAction, FaultInjector};
use crate::kinesis::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    MAX_GET_RECORDS_BYTES, MAX_GET_RECORDS_LIMIT, MAX_LIST_SHARDS_RESULTS, ShardIterator,
    StreamSummary,
};
use crate::model::{SequenceNumber, ShardId, StartingPosition, StreamIdentity};
use crate::routing;

/// Largest record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most entries in one PutRecords call.
pub const MAX_PUT_RECORDS_ENTRIES: usize = 500;
/// Most bytes in one PutRecords call.
pub const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;

/// Operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KinesisOperation {
    /// ListShards.
    ListShards,
    /// GetShardIterator.
    GetShardIterator,
    /// GetRecords.
    GetRecords,
    /// PutRecord and each PutRecords call.
    Put,
    /// SubscribeToShard.
    SubscribeToShard,
    /// Each event of a push subscription (a fault ends the subscription with the error).
    SubscriptionEvent,
    /// RegisterStreamConsumer and DescribeStreamConsumer.
    Consumers,
    /// DescribeStreamSummary through the data-plane trait.
    DescribeStream,
}

/// Settings of an [`InMemoryKinesis`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Region used in ARNs.
    pub region: String,
    /// Account id used in ARNs.
    pub account_id: String,
    /// Lifetime of a shard iterator (Kinesis: 5 minutes).
    pub iterator_ttl: Duration,
    /// Lifetime of a push subscription (Kinesis: 5 minutes).
    pub subscription_ttl: Duration,
    /// How long an idle subscription waits before sending an empty event (keeps
    /// MillisBehindLatest and the continuation sequence number fresh).
    pub subscription_heartbeat: Duration,
    /// How long a registered consumer stays `CREATING` before it is `ACTIVE`.
    pub consumer_activation_delay: Duration,
    /// Quotas to enforce; `None` (the default) disables quota emulation.
    pub quotas: Option<QuotaLimits>,
    /// Seed of the fault injector's random choices.
    pub fault_seed: u64,
}

impl EngineConfig {
    /// Sets [`region`](Self::region).
    pub fn with_region(mut self, region: String) -> Self {
        self.region = region;
        self
    }

    /// Sets [`account_id`](Self::account_id).
    pub fn with_account_id(mut self, account_id: String) -> Self {
        self.account_id = account_id;
        self
    }

    /// Sets [`iterator_ttl`](Self::iterator_ttl).
    pub fn with_iterator_ttl(mut self, iterator_ttl: Duration) -> Self {
        self.iterator_ttl = iterator_ttl;
        self
    }

    /// Sets [`subscription_ttl`](Self::subscription_ttl).
    pub fn with_subscription_ttl(mut self, subscription_ttl: Duration) -> Self {
        self.subscription_ttl = subscription_ttl;
        self
    }

    /// Sets [`subscription_heartbeat`](Self::subscription_heartbeat).
    pub fn with_subscription_heartbeat(mut self, subscription_heartbeat: Duration) -> Self {
        self.subscription_heartbeat = subscription_heartbeat;
        self
    }

    /// Sets [`consumer_activation_delay`](Self::consumer_activation_delay).
    pub fn with_consumer_activation_delay(mut self, consumer_activation_delay: Duration) -> Self {
        self.consumer_activation_delay = consumer_activation_delay;
        self
    }

    /// Sets [`quotas`](Self::quotas).
    pub fn with_quotas(mut self, quotas: Option<QuotaLimits>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Sets [`fault_seed`](Self::fault_seed).
    pub fn with_fault_seed(mut self, fault_seed: u64) -> Self {
        self.fault_seed = fault_seed;
        self
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            iterator_ttl: Duration::from_secs(300),
            subscription_ttl: Duration::from_secs(300),
            subscription_heartbeat: Duration::from_secs(5),
            consumer_activation_delay: Duration::ZERO,
            quotas: None,
            fault_seed: 0,
        }
    }
}

/// A record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordEntry {
    /// Partition key: 1 to 256 Unicode characters.
    pub partition_key: ByteString,
    /// Decimal 128-bit hash key that overrides the partition key's hash.
    pub explicit_hash_key: Option<ByteString>,
    /// The payload.
    pub data: Bytes,
}

impl PutRecordEntry {
    /// A record routed by its partition key.
    pub fn new(partition_key: impl AsRef<str>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: ByteString::from(partition_key.as_ref()),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by an explicit hash key instead.
    pub fn with_explicit_hash_key(mut self, key: impl AsRef<str>) -> Self {
        self.explicit_hash_key = Some(ByteString::from(key.as_ref()));
        self
    }
}

/// Where a put record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordOutput {
    /// The shard.
    pub shard_id: ShardId,
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
}

/// A stream as DescribeStreamSummary reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// Name and ARN.
    pub identity: StreamIdentity,
    /// Creation time, in seconds since the epoch (part of multi-stream lease keys).
    pub creation_epoch_seconds: u64,
    /// Retention period.
    pub retention: Duration,
    /// Number of open shards.
    pub open_shard_count: usize,
}

use crate::clock::WallClock as Clock;

struct ListCursor {
    stream_nonce: u64,
    remaining: Vec<crate::model::Shard>,
    issued: Duration,
}

#[derive(Default)]
struct State {
    streams: BTreeMap<u64, StreamState>,
    names: HashMap<Arc<str>, u64>,
    next_nonce: u64,
    list_cursors: HashMap<String, ListCursor>,
    next_cursor: u64,
    consumers: ConsumerRegistry,
    /// Shards the next listings leave out, and how many more times (an incomplete listing).
    /// (stream name, shard) → listings still to miss it.
    listing_gaps: BTreeMap<(String, crate::model::ShardId), u64>,
}

impl State {
    fn stream_mut(&mut self, name: &str) -> Result<&mut StreamState, KinesisError> {
        let nonce = *self
            .names
            .get(name)
            .ok_or_else(|| KinesisError::not_found(format!("stream {name} not found")))?;
        Ok(self
            .streams
            .get_mut(&nonce)
            .expect("names index only live streams"))
    }

    fn stream_by_identity(
        &mut self,
        id: &StreamIdentity,
    ) -> Result<&mut StreamState, KinesisError> {
        let s = self.stream_mut(&id.name)?;
        match &id.arn {
            Some(arn) if s.identity.arn.as_deref() != Some(&**arn) => {
                Err(KinesisError::not_found(format!("stream {arn} not found")))
            }
            _ => Ok(s),
        }
    }

    fn stream_by_nonce(&mut self, nonce: u64) -> Result<&mut StreamState, KinesisError> {
        self.streams
            .get_mut(&nonce)
            .ok_or_else(|| KinesisError::not_found("the stream of this iterator was deleted"))
    }
}

struct Inner {
    id: u64,
    config: EngineConfig,
    clock: Clock,
    state: Mutex<State>,
    faults: FaultInjector<KinesisOperation, KinesisError>,
}

/// The in-memory Kinesis engine. Cheap to clone; clones share the same streams.
#[derive(Clone)]
pub struct InMemoryKinesis {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InMemoryKinesis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryKinesis")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryKinesis {
    fn default() -> Self {
        Self::new()
    }
}

static ENGINE_IDS: AtomicU64 = AtomicU64::new(1);

impl InMemoryKinesis {
    /// An engine with the default configuration (no quota emulation, no faults).
    pub fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    /// An engine with the given configuration.
    pub fn with_config(config: EngineConfig) -> Self {
        let faults = FaultInjector::new(config.fault_seed);
        Self {
            inner: Arc::new(Inner {
                id: ENGINE_IDS.fetch_add(1, Ordering::Relaxed),
                config,
                clock: Clock::start(),
                state: Mutex::new(State::default()),
                faults,
            }),
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The fault injector: schedule failures, throttles and delays per operation.
    pub fn faults(&self) -> &FaultInjector<KinesisOperation, KinesisError> {
        &self.inner.faults
    }

    /// The stream's shards as an operator sees them, filtered as ListShards filters: no
    /// faults, no listing gaps, no quota.
    pub fn shards(
        &self,
        name: &str,
        filter: Option<&crate::kinesis::ShardFilter>,
    ) -> Result<Vec<crate::model::Shard>, KinesisError> {
        let now = self.now();
        let mut state = self.lock();
        let s = state.stream_mut(name)?;
        s.trim(now);
        Ok(s.list(filter, now))
    }

    /// Ends every listing gap set by [`miss_in_next_listings`](Self::miss_in_next_listings).
    pub fn clear_listing_gaps(&self) {
        self.lock().listing_gaps.clear();
    }

    /// Leaves `shard` of `stream` out of the next `n` ListShards listings, as a listing that misses a shard
    /// would (the shard is still there and readable).
    pub fn miss_in_next_listings(&self, stream: &str, shard: &crate::model::ShardId, n: u64) {
        self.lock()
            .listing_gaps
            .insert((stream.to_string(), shard.clone()), n);
    }

    /// Throttles the next `n` calls of `op` with `ProvisionedThroughputExceeded`.
    pub fn throttle_next(&self, op: KinesisOperation, n: u64) {
        self.faults().next_calls(
            op,
            n,
            FaultAction::Fail(KinesisError::throughput_exceeded("injected throttle")),
        );
    }

    /// The engine's current wall-clock time (virtual under a paused tokio clock).
    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    fn arn_of(&self, name: &str) -> String {
        let c = &self.inner.config;
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            c.region, c.account_id
        )
    }

    /// CreateStream with `shard_count` shards splitting the hash-key space evenly.
    pub fn create_stream(
        &self,
        name: &str,
        shard_count: u32,
    ) -> Result<StreamIdentity, KinesisError> {
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid_name {
            return Err(KinesisError::invalid(format!(
                "invalid stream name {name:?}"
            )));
        }
        if shard_count == 0 || shard_count > 100_000 {
            return Err(KinesisError::invalid(format!(
                "shard count {shard_count} must be in 1..=100000"
            )));
        }
        let mut state = self.inner.state.lock();
        if state.names.contains_key(name) {
            return Err(KinesisError::in_use(format!(
                "stream {name} already exists"
            )));
        }
        state.next_nonce += 1;
        let nonce = state.next_nonce;
        let identity = StreamIdentity {
            name: Arc::from(name),
            arn: Some(Arc::from(self.arn_of(name))),
        };
        let stream = StreamState::new(identity.clone(), nonce, shard_count, self.now());
        state.names.insert(identity.name.clone(), nonce);
        state.streams.insert(nonce, stream);
        Ok(identity)
    }

    /// DeleteStream: the stream and its records are gone at once; readers get ResourceNotFound.
    pub fn delete_stream(&self, name: &str) -> Result<(), KinesisError> {
        let mut state = self.inner.state.lock();
        let nonce = state
            .names
            .remove(name)
            .ok_or_else(|| KinesisError::not_found(format!("stream {name} not found")))?;
        if let Some(s) = state.streams.remove(&nonce) {
            s.notify();
        }
        Ok(())
    }

    /// DescribeStreamSummary.
    pub fn describe_stream(&self, name: &str) -> Result<StreamDescription, KinesisError> {
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(name)?;
        Ok(StreamDescription {
            identity: s.identity.clone(),
            creation_epoch_seconds: s
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            retention: s.retention,
            open_shard_count: s.open_shards().count(),
        })
    }

    /// Sets the retention period; records older than it are trimmed.
    pub fn set_retention_period(
        &self,
        name: &str,
        retention: Duration,
    ) -> Result<(), KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(name)?;
        s.retention = retention;
        s.trim(now);
        Ok(())
    }

    /// What reads of trimmed positions get (default: records from the oldest retained, as
    /// Kinesis answers; [`TrimmedReads::Fail`] as DynamoDB Streams does).
    pub fn set_trimmed_reads(&self, name: &str, reads: TrimmedReads) -> Result<(), KinesisError> {
        let mut state = self.inner.state.lock();
        state.stream_mut(name)?.trimmed_reads = reads;
        Ok(())
    }

    fn validate(entry: &PutRecordEntry) -> Result<NewRecord, KinesisError> {
        let chars = entry.partition_key.chars().count();
        if !(1..=256).contains(&chars) {
            return Err(KinesisError::invalid(format!(
                "partition key has {chars} characters, not 1 to 256"
            )));
        }
        let size = entry.data.len() + entry.partition_key.len();
        if size > MAX_RECORD_BYTES {
            return Err(KinesisError::invalid(format!(
                "record of {size} bytes exceeds 1 MiB"
            )));
        }
        let hash_key =
            routing::effective_hash_key(&entry.partition_key, entry.explicit_hash_key.as_deref())
                .ok_or_else(|| {
                KinesisError::invalid("explicit hash key is not a decimal in 0..2^128")
            })?;
        Ok(NewRecord {
            partition_key: entry.partition_key.clone(),
            explicit_hash_key: entry.explicit_hash_key.clone(),
            hash_key,
            data: entry.data.clone(),
        })
    }

    /// PutRecord.
    pub async fn put_record(
        &self,
        stream: &str,
        entry: PutRecordEntry,
    ) -> Result<PutRecordOutput, KinesisError> {
        let after = self.inner.faults.apply(KinesisOperation::Put).await?;
        let rec = Self::validate(&entry)?;
        let (arrival, now) = (self.now(), Instant::now());
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        let (shard_id, sequence_number) =
            s.append(rec, arrival, self.inner.config.quotas.as_ref(), now)?;
        s.notify();
        after.finish(PutRecordOutput {
            shard_id,
            sequence_number,
        })
    }

    /// PutRecords: up to 500 records and 5 MiB. Invalid input fails the whole call; a throttled
    /// record fails alone and the others are written (check every entry, as with Kinesis).
    pub async fn put_records(
        &self,
        stream: &str,
        entries: &[PutRecordEntry],
    ) -> Result<Vec<Result<PutRecordOutput, KinesisError>>, KinesisError> {
        let after = self.inner.faults.apply(KinesisOperation::Put).await?;
        if entries.is_empty() || entries.len() > MAX_PUT_RECORDS_ENTRIES {
            return Err(KinesisError::invalid(format!(
                "{} entries, not 1 to 500",
                entries.len()
            )));
        }
        let total: usize = entries
            .iter()
            .map(|e| e.data.len() + e.partition_key.len())
            .sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(KinesisError::invalid(format!(
                "{total} bytes exceed the 5 MiB PutRecords limit"
            )));
        }
        let recs = entries
            .iter()
            .map(Self::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let (arrival, now) = (self.now(), Instant::now());
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        let limits = self.inner.config.quotas.as_ref();
        let out = recs
            .into_iter()
            .map(|r| {
                s.append(r, arrival, limits, now)
                    .map(|(shard_id, sequence_number)| PutRecordOutput {
                        shard_id,
                        sequence_number,
                    })
            })
            .collect();
        s.notify();
        after.finish(out)
    }

    /// SplitShard at `new_starting_hash_key`; returns the two children.
    pub fn split_shard(
        &self,
        stream: &str,
        shard: &ShardId,
        new_starting_hash_key: u128,
    ) -> Result<[ShardId; 2], KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        let children = s.split(shard, new_starting_hash_key, now)?;
        s.notify();
        Ok(children)
    }

    /// Splits a shard in the middle of its hash-key range.
    pub fn split_shard_evenly(
        &self,
        stream: &str,
        shard: &ShardId,
    ) -> Result<[ShardId; 2], KinesisError> {
        let mid = {
            let mut state = self.inner.state.lock();
            let s = state.stream_mut(stream)?;
            let r = s.shard(s.index_of(shard)?)?.shard.hash_key_range;
            r.start + (r.end - r.start) / 2 + 1
        };
        self.split_shard(stream, shard, mid)
    }

    /// Rotates an open shard as DynamoDB Streams does every few hours: closes it and opens one
    /// child with the same range; returns the child.
    pub fn rotate_shard(&self, stream: &str, shard: &ShardId) -> Result<ShardId, KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        let child = s.rotate(shard, now)?;
        s.notify();
        Ok(child)
    }

    /// Disables a stream as DynamoDB Streams does when a table's stream is turned off: every
    /// open shard closes with no children (readers drain them to their end).
    pub fn disable_stream(&self, stream: &str) -> Result<(), KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        s.close_all(now);
        s.notify();
        Ok(())
    }

    /// MergeShards of two adjacent open shards; returns the child.
    pub fn merge_shards(
        &self,
        stream: &str,
        shard: &ShardId,
        adjacent: &ShardId,
    ) -> Result<ShardId, KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        let child = s.merge(shard, adjacent, now)?;
        s.notify();
        Ok(child)
    }

    /// UpdateShardCount with uniform scaling (between half and double the open shards).
    pub fn update_shard_count(&self, stream: &str, target: u32) -> Result<(), KinesisError> {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let s = state.stream_mut(stream)?;
        s.update_shard_count(target, now)?;
        s.notify();
        Ok(())
    }

    /// Resolves a starting position to an offset in a shard.
    fn offset_for(
        s: &StreamState,
        index: u64,
        position: &StartingPosition,
    ) -> Result<u64, KinesisError> {
        let shard = s.shard(index)?;
        let check = |seq: &SequenceNumber| {
            if shard.covers(seq) {
                Ok(())
            } else {
                Err(KinesisError::invalid(format!(
                    "sequence number {seq} is not in shard {}",
                    shard.shard.id
                )))
            }
        };
        Ok(match position {
            StartingPosition::TrimHorizon => shard.first_offset(),
            StartingPosition::Latest => shard.end_offset(),
            StartingPosition::AtTimestamp(t) => shard.offset_at_time(*t),
            StartingPosition::AtSequenceNumber(seq) => {
                check(seq)?;
                shard.offset_of(seq, false)
            }
            StartingPosition::AfterSequenceNumber(seq) => {
                check(seq)?;
                shard.offset_of(seq, true)
            }
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.inner.state.lock()
    }
}

#[async_trait]
impl KinesisDataPlane for InMemoryKinesis {
    fn capabilities(&self) -> crate::kinesis::SourceCapabilities {
        crate::kinesis::SourceCapabilities::KINESIS
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<StreamSummary, KinesisError> {
        let after = self
            .inner
            .faults
            .apply(KinesisOperation::DescribeStream)
            .await?;
        let mut state = self.lock();
        let s = state.stream_by_identity(stream)?;
        let summary = StreamSummary {
            identity: s.identity.clone(),
            creation_epoch_seconds: s
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        after.finish(summary)
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, KinesisError> {
        let after = self
            .inner
            .faults
            .apply(KinesisOperation::ListShards)
            .await?;
        let now = self.now();
        let elapsed = self.inner.clock.elapsed();
        let mut state = self.lock();
        let (mut cursor, max) = match request {
            ListShardsRequest::First {
                stream,
                filter,
                max_results,
            } => {
                let s = state.stream_by_identity(&stream)?;
                s.trim(now);
                let mut remaining = s.list(filter.as_ref(), now);
                let stream_nonce = s.nonce;
                if !state.listing_gaps.is_empty() {
                    let name = stream.name.to_string();
                    let gaps = &mut state.listing_gaps;
                    remaining.retain(|shard| {
                        match gaps.get_mut(&(name.clone(), shard.id.clone())) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                false
                            }
                            _ => true,
                        }
                    });
                    gaps.retain(|_, n| *n > 0);
                }
                (
                    ListCursor {
                        stream_nonce,
                        remaining,
                        issued: elapsed,
                    },
                    max_results,
                )
            }
            ListShardsRequest::Next { token, max_results } => {
                let cursor = state.list_cursors.remove(&token).ok_or_else(|| {
                    KinesisError::invalid(format!("unknown or used ListShards token {token:?}"))
                })?;
                if elapsed.saturating_sub(cursor.issued) > Duration::from_secs(300) {
                    return Err(KinesisError::expired_iterator("ListShards token expired"));
                }
                state.stream_by_nonce(cursor.stream_nonce)?;
                (cursor, max_results)
            }
        };
        let max = max.unwrap_or(1000);
        if max == 0 || max > MAX_LIST_SHARDS_RESULTS {
            return Err(KinesisError::invalid(format!(
                "max results {max} must be in 1..=10000"
            )));
        }
        let take = (max as usize).min(cursor.remaining.len());
        let shards: Vec<_> = cursor.remaining.drain(..take).collect();
        state
            .list_cursors
            .retain(|_, c| elapsed.saturating_sub(c.issued) <= Duration::from_secs(300));
        let next_token = (!cursor.remaining.is_empty()).then(|| {
            state.next_cursor += 1;
            let token = format!("list-{}-{}", self.inner.id, state.next_cursor);
            state.list_cursors.insert(token.clone(), cursor);
            token
        });
        after.finish(ListShardsPage { shards, next_token })
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        let after = self
            .inner
            .faults
            .apply(KinesisOperation::GetShardIterator)
            .await?;
        let now = self.now();
        let mut state = self.lock();
        let s = state.stream_by_identity(stream)?;
        s.trim(now);
        let index = s.index_of(shard)?;
        let offset = Self::offset_for(s, index, position)?;
        let trimmed = match position {
            StartingPosition::AtSequenceNumber(seq) => s.shard(index)?.is_trimmed_at(seq, false),
            StartingPosition::AfterSequenceNumber(seq) => s.shard(index)?.is_trimmed_at(seq, true),
            _ => false,
        };
        if s.trimmed_reads == TrimmedReads::Fail && trimmed {
            return Err(KinesisError::trimmed(format!(
                "{position:?} of shard {shard} is older than the trim horizon"
            )));
        }
        after.finish(
            IteratorToken {
                engine: self.inner.id,
                stream_nonce: s.nonce,
                shard: index,
                offset,
                issued: self.inner.clock.elapsed(),
            }
            .encode(),
        )
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        let after = self
            .inner
            .faults
            .apply(KinesisOperation::GetRecords)
            .await?;
        if !(1..=MAX_GET_RECORDS_LIMIT).contains(&limit) {
            return Err(KinesisError::invalid(format!(
                "limit {limit} must be in 1..=10000"
            )));
        }
        let token = IteratorToken::decode(iterator)?;
        if token.engine != self.inner.id {
            return Err(KinesisError::invalid(
                "shard iterator was issued by another engine",
            ));
        }
        let elapsed = self.inner.clock.elapsed();
        if elapsed.saturating_sub(token.issued) > self.inner.config.iterator_ttl {
            return Err(KinesisError::expired_iterator(format!(
                "iterator issued {:?} ago",
                elapsed.saturating_sub(token.issued)
            )));
        }
        let (now, instant) = (self.now(), Instant::now());
        let mut state = self.lock();
        let s = state.stream_by_nonce(token.stream_nonce)?;
        s.trim(now);
        let fail_trimmed = s.trimmed_reads == TrimmedReads::Fail;
        let shard = s.shard_mut(token.shard)?;
        if fail_trimmed && shard.is_trimmed(token.offset) {
            return Err(KinesisError::trimmed(format!(
                "the iterator's position in shard {} was trimmed",
                shard.shard.id
            )));
        }
        if let Some(limits) = self.inner.config.quotas.as_ref() {
            shard
                .quota(limits, instant)
                .admit_read(instant)
                .map_err(KinesisError::throughput_exceeded)?;
        }
        let (records, next) = shard.read(token.offset, limit as usize, MAX_GET_RECORDS_BYTES);
        if let Some(limits) = self.inner.config.quotas.as_ref() {
            let bytes = records.iter().map(|r| r.data.len()).sum();
            shard.quota(limits, instant).charge_read(bytes);
        }
        let drained = !shard.is_open() && next >= shard.end_offset();
        let millis_behind_latest = Some(shard.millis_behind(next, now));
        let (next_iterator, child_shards) = if drained {
            (None, s.child_shards(token.shard))
        } else {
            (
                Some(
                    IteratorToken {
                        offset: next,
                        issued: elapsed,
                        ..token
                    }
                    .encode(),
                ),
                Vec::new(),
            )
        };
        after.finish(GetRecordsOutput {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests;

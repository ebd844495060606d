//! The Kinesis data plane that shard consumers read from, as a backend trait.
//!
//! The trait mirrors ListShards, GetShardIterator and GetRecords closely enough that an
//! `aws-sdk-kinesis` implementation is a thin mapping, while exposing none of the SDK's types.
//! kcl-core ships the in-memory implementation ([`crate::engine::InMemoryKinesis`]);
//! [`DeadlineKinesis`] puts a deadline on every call of any implementation (the scheduler
//! builder wraps its data plane in one).

mod deadline;
mod drain;
mod error;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;

pub use deadline::DeadlineKinesis;
pub use drain::drain_stream;
pub use error::{KinesisError, ThrottleKind};

use crate::model::{ChildShard, Record, Shard, ShardId, StartingPosition, StreamIdentity};

/// Largest `limit` GetRecords accepts.
pub const MAX_GET_RECORDS_LIMIT: u32 = 10_000;
/// Most bytes of record data one GetRecords call returns.
pub const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Largest page ListShards returns.
pub const MAX_LIST_SHARDS_RESULTS: u32 = 10_000;

/// Which shards ListShards returns (Kinesis `ShardFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardFilter {
    /// Shards whose index comes after this shard id's.
    AfterShardId(ShardId),
    /// Shards that were open at the trim horizon (the roots of the retained lineage).
    AtTrimHorizon,
    /// Every retained shard.
    FromTrimHorizon,
    /// Shards open now.
    AtLatest,
    /// Shards open at this time.
    AtTimestamp(SystemTime),
    /// Shards open at or after this time.
    FromTimestamp(SystemTime),
}

/// One ListShards call: the first page, or a follow-up that sends only the token (Kinesis
/// rejects a stream name together with a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListShardsRequest {
    /// The first page.
    First {
        /// The stream.
        stream: StreamIdentity,
        /// Optional filter.
        filter: Option<ShardFilter>,
        /// Page size (default 1,000, at most 10,000).
        max_results: Option<u32>,
    },
    /// A later page.
    Next {
        /// `next_token` of the previous page.
        token: String,
        /// Page size.
        max_results: Option<u32>,
    },
}

/// One page of shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListShardsPage {
    /// The shards of this page.
    pub shards: Vec<Shard>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// An opaque shard iterator. Valid for 5 minutes after it was issued.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ShardIterator(pub String);

impl fmt::Debug for ShardIterator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Real iterators are ~200 bytes of base64; a prefix is enough to tell them apart in logs.
        let shown: String = self.0.chars().take(24).collect();
        write!(f, "ShardIterator({shown}…)")
    }
}

/// What GetRecords returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecordsOutput {
    /// Kinesis records in sequence order, as stored (KPL aggregates not yet unpacked).
    pub records: Vec<Record>,
    /// Where to read next; `None` once a closed shard is drained.
    pub next_iterator: Option<ShardIterator>,
    /// How far behind the tip of the shard this response is, in milliseconds.
    pub millis_behind_latest: Option<u64>,
    /// The children of a drained closed shard (empty otherwise).
    pub child_shards: Vec<ChildShard>,
}

/// What DescribeStreamSummary says about a stream that multi-stream lease keys need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Name and ARN (the ARN carries the account id).
    pub identity: StreamIdentity,
    /// Creation time, seconds since the epoch.
    pub creation_epoch_seconds: u64,
}

/// Which service a data plane reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// Kinesis Data Streams.
    Kinesis,
    /// DynamoDB Streams: no hash-key ranges, no `AT_TIMESTAMP`, lag approximated from record
    /// creation times, children found at shard end by a `CHILD_SHARDS` query.
    DynamoDbStreams,
}

/// What a data plane's source supports, so the scheduler refuses what it cannot do at build time
/// and switches off what does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceCapabilities {
    /// The service.
    pub kind: SourceKind,
    /// `AT_TIMESTAMP` starting positions.
    pub at_timestamp: bool,
    /// Shards have hash-key ranges that tile the key space (KPL hash checks, listing holes).
    pub hash_key_ranges: bool,
    /// `MillisBehindLatest` comes from the service; otherwise it is approximated from the last
    /// record's creation time.
    pub exact_lag: bool,
}

impl SourceCapabilities {
    /// Kinesis Data Streams: everything.
    pub const KINESIS: Self = Self {
        kind: SourceKind::Kinesis,
        at_timestamp: true,
        hash_key_ranges: true,
        exact_lag: true,
    };

    /// DynamoDB Streams.
    pub const DYNAMODB_STREAMS: Self = Self {
        kind: SourceKind::DynamoDbStreams,
        at_timestamp: false,
        hash_key_ranges: false,
        exact_lag: false,
    };
}

/// The Kinesis read calls a shard consumer makes.
///
/// Implementations must be cheap to share (`Arc<dyn KinesisDataPlane>`) and safe to call from
/// many shard consumers at once.
///
/// # Contract
/// - `list_shards` pages through the stream's shards in shard-index order; follow-up requests
///   carry only the token. An unknown stream is `ResourceNotFound`.
/// - `get_shard_iterator` supports all five [`StartingPosition`]s; a sequence number outside the
///   shard's range is `InvalidArgument`; an unknown shard is `ResourceNotFound`.
/// - `get_records` returns at most `limit` (1..=10,000) records and at most 10 MiB, in sequence
///   order, and a next iterator while the shard is open or not yet drained. Once a closed shard is
///   drained it returns no next iterator and the shard's children. An iterator older than 5
///   minutes is `ExpiredIterator`. Empty responses are normal even when records lie ahead.
/// - `describe_stream` returns the stream's ARN and creation time; an unknown stream is
///   `ResourceNotFound`.
/// - Quota errors are `Throttled` and retryable; no call has an effect when it fails.
/// - A source without [`SourceCapabilities::at_timestamp`] answers `AT_TIMESTAMP` positions
///   and filters with `InvalidArgument`; one that reports trimming answers a trimmed position
///   with `TrimmedData`.
#[async_trait]
pub trait KinesisDataPlane: Send + Sync + fmt::Debug + 'static {
    /// What the source supports (no I/O). Wrappers forward their inner data plane's.
    fn capabilities(&self) -> SourceCapabilities;

    /// DescribeStreamSummary: the stream's ARN and creation time.
    async fn describe_stream(&self, stream: &StreamIdentity)
    -> Result<StreamSummary, KinesisError>;

    /// One ListShards call.
    async fn list_shards(&self, request: ListShardsRequest)
    -> Result<ListShardsPage, KinesisError>;

    /// GetShardIterator.
    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError>;

    /// GetRecords with `limit` in 1..=10,000.
    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError>;

    /// Lists every shard the filter selects, following pagination.
    async fn list_all_shards(
        &self,
        stream: &StreamIdentity,
        filter: Option<ShardFilter>,
    ) -> Result<Vec<Shard>, KinesisError> {
        let mut page = self
            .list_shards(ListShardsRequest::First {
                stream: stream.clone(),
                filter,
                max_results: None,
            })
            .await?;
        let mut shards = std::mem::take(&mut page.shards);
        while let Some(token) = page.next_token.take() {
            page = self
                .list_shards(ListShardsRequest::Next {
                    token,
                    max_results: None,
                })
                .await?;
            shards.append(&mut page.shards);
        }
        Ok(shards)
    }
}

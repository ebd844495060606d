//! The in-memory engine as DynamoDB Streams, for tests and the fleet simulation: the same
//! shards and records, answered the way DynamoDB Streams answers.
//!
//! - no hash-key ranges (every shard `[0, 1]`, as the Java adapter writes), no `AT_TIMESTAMP`,
//!   listings of at most 100 shards a page and no filter but "after shard";
//! - GetRecords returns no children: at a shard's end they are looked up as the real data plane
//!   does with a `CHILD_SHARDS` query; no `MillisBehindLatest` (approximated from the last
//!   record's arrival); at most 1,000 records a call;
//! - trimmed positions fail ([`TrimmedReads::Fail`]) and retention is 24 hours;
//! - shards rotate ([`InMemoryKinesis::rotate_shard`]) and a stream can be disabled
//!   ([`InMemoryKinesis::disable_stream`]);
//! - injected faults: empty pages before the end of an open shard, and inconsistent listings
//!   (a closed parent listed open beside its child) — [`DynamoDbStreamsFaults`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::engine::{InMemoryKinesis, TrimmedReads};
use crate::kinesis::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    ShardFilter, ShardIterator, SourceCapabilities, StreamSummary,
};
use crate::model::{ChildShard, HashKeyRange, ShardId, StartingPosition, StreamIdentity};

/// The range every shard is given (the Java adapter's).
const NO_RANGE: HashKeyRange = HashKeyRange { start: 0, end: 1 };

/// DynamoDB Streams' retention.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Faults only DynamoDB Streams shows, by probability per call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct DynamoDbStreamsFaults {
    /// GetRecords answers no records (and the same position) although records lie ahead.
    pub empty_page: f64,
    /// A listing shows a closed shard that has a child as still open.
    pub inconsistent_listing: f64,
}

impl DynamoDbStreamsFaults {
    /// Sets [`empty_page`](Self::empty_page).
    pub fn with_empty_page(mut self, p: f64) -> Self {
        self.empty_page = p;
        self
    }

    /// Sets [`inconsistent_listing`](Self::inconsistent_listing).
    pub fn with_inconsistent_listing(mut self, p: f64) -> Self {
        self.inconsistent_listing = p;
        self
    }
}

#[derive(Debug)]
struct Faults {
    config: DynamoDbStreamsFaults,
    rng: SmallRng,
    injected: u64,
    /// DescribeStream calls made: listing pages, and child-shard queries at shard ends.
    pages: u64,
    child_queries: u64,
}

impl Faults {
    fn roll(&mut self, p: f64) -> bool {
        let hit = p > 0.0 && self.rng.random_bool(p.min(1.0));
        self.injected += u64::from(hit);
        hit
    }
}

/// [`InMemoryKinesis`] answering as DynamoDB Streams (see the module docs). Clones share the
/// engine and the fault state.
#[derive(Debug, Clone)]
pub struct InMemoryDynamoDbStreams {
    engine: InMemoryKinesis,
    faults: Arc<Mutex<Faults>>,
}

impl InMemoryDynamoDbStreams {
    /// DynamoDB Streams over `engine`, with faults drawn from `seed`.
    pub fn new(engine: InMemoryKinesis, faults: DynamoDbStreamsFaults, seed: u64) -> Self {
        Self {
            engine,
            faults: Arc::new(Mutex::new(Faults {
                config: faults,
                rng: SmallRng::seed_from_u64(seed),
                injected: 0,
                pages: 0,
                child_queries: 0,
            })),
        }
    }

    /// The engine underneath (to put records, rotate shards, disable the stream, move time).
    pub fn engine(&self) -> &InMemoryKinesis {
        &self.engine
    }

    /// Creates a table's stream: `shards` open shards, 24-hour retention, trimmed reads fail.
    pub fn create_stream(&self, name: &str, shards: u32) -> Result<StreamIdentity, KinesisError> {
        let identity = self.engine.create_stream(name, shards)?;
        self.engine.set_retention_period(name, RETENTION)?;
        self.engine.set_trimmed_reads(name, TrimmedReads::Fail)?;
        Ok(identity)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.faults.lock().injected
    }

    /// DescribeStream calls so far, as DynamoDB Streams would count them: listing pages, and
    /// `CHILD_SHARDS` queries at shard ends.
    pub fn describe_calls(&self) -> (u64, u64) {
        let f = self.faults.lock();
        (f.pages, f.child_queries)
    }

    fn roll(&self, p: impl Fn(&DynamoDbStreamsFaults) -> f64) -> bool {
        let mut f = self.faults.lock();
        let p = p(&f.config);
        f.roll(p)
    }

    /// The children of an ended shard, as a `CHILD_SHARDS` query finds them.
    async fn children(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
    ) -> Result<Vec<ChildShard>, KinesisError> {
        self.faults.lock().child_queries += 1;
        Ok(self
            .engine
            .list_all_shards(stream, None)
            .await?
            .into_iter()
            .filter(|s| s.parent.as_ref() == Some(shard))
            .map(|s| ChildShard {
                id: s.id,
                parents: vec![shard.clone()],
                hash_key_range: NO_RANGE,
            })
            .collect())
    }
}

/// Our iterator: the engine's, with the stream and shard (GetRecords names neither).
fn encode(stream: &StreamIdentity, shard: &ShardId, inner: &ShardIterator) -> ShardIterator {
    ShardIterator(format!("ddbmem|{}|{shard}|{}", stream.name, inner.0))
}

fn decode(it: &ShardIterator) -> Result<(StreamIdentity, ShardId, ShardIterator), KinesisError> {
    let invalid = || KinesisError::invalid("not a shard iterator of this data plane");
    let rest = it.0.strip_prefix("ddbmem|").ok_or_else(invalid)?;
    let mut parts = rest.splitn(3, '|');
    let (Some(stream), Some(shard), Some(inner)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok((
        StreamIdentity::from_name(stream),
        ShardId::new(shard),
        ShardIterator(inner.to_string()),
    ))
}

#[async_trait]
impl KinesisDataPlane for InMemoryDynamoDbStreams {
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::DYNAMODB_STREAMS
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<StreamSummary, KinesisError> {
        KinesisDataPlane::describe_stream(&self.engine, stream).await
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, KinesisError> {
        let request = match request {
            ListShardsRequest::First {
                stream,
                filter,
                max_results,
            } => {
                if let Some(f) = &filter
                    && !matches!(f, ShardFilter::AfterShardId(_))
                {
                    return Err(KinesisError::invalid(format!(
                        "DynamoDB Streams lists shards without filter {f:?}"
                    )));
                }
                ListShardsRequest::First {
                    stream,
                    filter,
                    max_results: Some(max_results.unwrap_or(100).clamp(1, 100)),
                }
            }
            ListShardsRequest::Next { token, max_results } => ListShardsRequest::Next {
                token,
                max_results: Some(max_results.unwrap_or(100).clamp(1, 100)),
            },
        };
        self.faults.lock().pages += 1;
        let mut page = KinesisDataPlane::list_shards(&self.engine, request).await?;
        let parents: Vec<ShardId> = page
            .shards
            .iter()
            .filter_map(|s| s.parent.clone())
            .collect();
        for shard in &mut page.shards {
            shard.hash_key_range = NO_RANGE;
            if !shard.is_open()
                && parents.contains(&shard.id)
                && self.roll(|f| f.inconsistent_listing)
            {
                shard.sequence_number_range.end = None;
            }
        }
        Ok(page)
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        if matches!(position, StartingPosition::AtTimestamp(_)) {
            return Err(KinesisError::invalid(
                "DynamoDB Streams has no AT_TIMESTAMP position",
            ));
        }
        let inner =
            KinesisDataPlane::get_shard_iterator(&self.engine, stream, shard, position).await?;
        Ok(encode(stream, shard, &inner))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        let (stream, shard, inner) = decode(iterator)?;
        if self.roll(|f| f.empty_page) {
            return Ok(GetRecordsOutput {
                records: Vec::new(),
                next_iterator: Some(iterator.clone()),
                millis_behind_latest: None,
                child_shards: Vec::new(),
            });
        }
        let out = KinesisDataPlane::get_records(&self.engine, &inner, limit.clamp(1, 1000)).await?;
        let millis_behind_latest = out.records.last().map(|r| {
            self.engine
                .now()
                .duration_since(r.approximate_arrival_timestamp)
                .map_or(0, |d| d.as_millis() as u64)
        });
        let (next_iterator, child_shards) = match &out.next_iterator {
            Some(next) => (Some(encode(&stream, &shard, next)), Vec::new()),
            None => (None, self.children(&stream, &shard).await?),
        };
        Ok(GetRecordsOutput {
            records: out.records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

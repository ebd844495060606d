//! `AwsKinesis`: ListShards, GetShardIterator and GetRecords over aws-sdk-kinesis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{self as sdk, ShardIteratorType};
use bytes::Bytes;

pub use crate::sdk_error::map_err;

use kcl_core::kinesis::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    ShardFilter, ShardIterator, StreamSummary,
};
use kcl_core::model::{
    ChildShard, HashKeyRange, Record, SequenceNumber, SequenceNumberRange, Shard, ShardId,
    StartingPosition, StreamIdentity,
};

/// Kinesis over the AWS SDK.
///
/// Streams known by ARN are named by `StreamARN`, as the KCL does (needed for streams of other
/// accounts). Some Kinesis-compatible services take no ARN parameters and answer
/// `InvalidArgumentException`: a call refused that way is sent once more by stream name, and
/// when that works, this data plane names streams from then on (with one warning).
#[derive(Debug, Clone)]
pub struct AwsKinesis {
    client: Client,
    arns_refused: Arc<AtomicBool>,
}

impl AwsKinesis {
    /// A data plane with a client for `config` (region, endpoint, credentials).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self::from_client(Client::new(config))
    }

    /// A data plane over an existing client.
    pub fn from_client(client: Client) -> Self {
        Self {
            client,
            arns_refused: Arc::default(),
        }
    }

    /// The ARN to name `stream` by, unless the endpoint refuses ARNs.
    fn arn_of<'a>(&self, stream: &'a StreamIdentity) -> Option<&'a str> {
        stream
            .arn
            .as_deref()
            .filter(|_| !self.arns_refused.load(Ordering::Relaxed))
    }

    /// Sends a call that names `stream` (`send(Some(arn))` or `send(None)` for its name); on an
    /// `InvalidArgument` answer to the ARN form, sends it once more by name and, if that
    /// works, names streams from then on.
    async fn by_stream<T, F, Fut>(
        &self,
        stream: &StreamIdentity,
        send: F,
    ) -> Result<T, KinesisError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<T, KinesisError>>,
    {
        let Some(arn) = self.arn_of(stream) else {
            return send(None).await;
        };
        match send(Some(arn.to_string())).await {
            Err(KinesisError::InvalidArgument { message, .. }) => {
                let by_name = send(None).await;
                if by_name.is_ok() && !self.arns_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(stream = %stream.name, refusal = %message, "the Kinesis endpoint refuses StreamARN parameters; naming streams by name from now on");
                }
                by_name
            }
            other => other,
        }
    }
}

fn sequence(s: &str) -> Result<SequenceNumber, KinesisError> {
    SequenceNumber::new(s).map_err(|e| {
        KinesisError::unavailable(format!("Kinesis returned a bad sequence number: {e}"))
    })
}

fn hash_range(r: Option<&sdk::HashKeyRange>) -> Result<HashKeyRange, KinesisError> {
    let r = r.ok_or_else(|| KinesisError::unavailable("shard without hash key range"))?;
    let parse = |v: &str| {
        kcl_core::routing::parse_explicit_hash_key(v).ok_or_else(|| {
            KinesisError::unavailable(format!("Kinesis returned a bad hash key {v:?}"))
        })
    };
    Ok(HashKeyRange {
        start: parse(r.starting_hash_key())?,
        end: parse(r.ending_hash_key())?,
    })
}

fn shard(s: &sdk::Shard) -> Result<Shard, KinesisError> {
    let range = s
        .sequence_number_range()
        .ok_or_else(|| KinesisError::unavailable("shard without sequence number range"))?;
    Ok(Shard {
        id: ShardId::new(s.shard_id()),
        parent: s.parent_shard_id().map(ShardId::new),
        adjacent_parent: s.adjacent_parent_shard_id().map(ShardId::new),
        hash_key_range: hash_range(s.hash_key_range())?,
        sequence_number_range: SequenceNumberRange {
            start: sequence(range.starting_sequence_number())?,
            end: range.ending_sequence_number().map(sequence).transpose()?,
        },
    })
}

/// A child shard as the SDK describes it.
pub fn child(c: &sdk::ChildShard) -> Result<ChildShard, KinesisError> {
    Ok(ChildShard {
        id: ShardId::new(c.shard_id()),
        parents: c.parent_shards().iter().map(ShardId::new).collect(),
        hash_key_range: hash_range(c.hash_key_range())?,
    })
}

fn filter(f: &ShardFilter) -> sdk::ShardFilter {
    use sdk::ShardFilterType as T;
    let b = sdk::ShardFilter::builder();
    let b = match f {
        ShardFilter::AfterShardId(id) => b.r#type(T::AfterShardId).shard_id(id.as_str()),
        ShardFilter::AtTrimHorizon => b.r#type(T::AtTrimHorizon),
        ShardFilter::FromTrimHorizon => b.r#type(T::FromTrimHorizon),
        ShardFilter::AtLatest => b.r#type(T::AtLatest),
        ShardFilter::AtTimestamp(t) => b.r#type(T::AtTimestamp).timestamp(DateTime::from(*t)),
        ShardFilter::FromTimestamp(t) => b.r#type(T::FromTimestamp).timestamp(DateTime::from(*t)),
    };
    b.build().expect("the filter type is always set")
}

/// A Kinesis record as the SDK returns it; the data buffer is moved, not copied.
pub fn record(r: sdk::Record) -> Result<Record, KinesisError> {
    Ok(Record {
        sequence_number: sequence(&r.sequence_number)?,
        approximate_arrival_timestamp: r
            .approximate_arrival_timestamp
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, crate::system_time),
        data: Bytes::from(r.data.into_inner()),
        // Required by the API; newer SDK models make it optional. An absent key reads as empty
        // rather than failing the whole batch (the record is still delivered).
        partition_key: r.partition_key.unwrap_or_default().into(),
        sub_sequence_number: 0,
        explicit_hash_key: None,
        aggregated: false,
    })
}

/// The SDK's starting position for SubscribeToShard.
pub fn starting_position(p: &StartingPosition) -> sdk::StartingPosition {
    let b = sdk::StartingPosition::builder();
    let b = match p {
        StartingPosition::AtSequenceNumber(s) => b
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(s.to_string()),
        StartingPosition::AfterSequenceNumber(s) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(s.to_string()),
        StartingPosition::AtTimestamp(t) => b
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*t)),
        StartingPosition::TrimHorizon => b.r#type(ShardIteratorType::TrimHorizon),
        StartingPosition::Latest => b.r#type(ShardIteratorType::Latest),
    };
    b.build().expect("the position type is always set")
}

/// GetShardIterator's position parameters.
fn with_position(
    call: aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder,
    position: &StartingPosition,
) -> aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder {
    match position {
        StartingPosition::AtSequenceNumber(s) => call
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(s.to_string()),
        StartingPosition::AfterSequenceNumber(s) => call
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(s.to_string()),
        StartingPosition::AtTimestamp(t) => call
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*t)),
        StartingPosition::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
        StartingPosition::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
    }
}

#[async_trait]
impl KinesisDataPlane for AwsKinesis {
    fn capabilities(&self) -> kcl_core::kinesis::SourceCapabilities {
        kcl_core::kinesis::SourceCapabilities::KINESIS
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<StreamSummary, KinesisError> {
        let out = self
            .by_stream(stream, |arn| {
                let call = self.client.describe_stream_summary();
                let call = match arn {
                    Some(arn) => call.stream_arn(arn),
                    None => call.stream_name(stream.name.as_ref()),
                };
                async move { call.send().await.map_err(map_err) }
            })
            .await?;
        let d = out.stream_description_summary().ok_or_else(|| {
            KinesisError::invalid("DescribeStreamSummary returned no description")
        })?;
        Ok(StreamSummary {
            identity: StreamIdentity::from_arn(d.stream_arn()),
            creation_epoch_seconds: u64::try_from(d.stream_creation_timestamp().secs())
                .unwrap_or(0),
        })
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, KinesisError> {
        let out = match request {
            ListShardsRequest::First {
                stream,
                filter: f,
                max_results,
            } => {
                self.by_stream(&stream, |arn| {
                    let call = self.client.list_shards();
                    let call = match arn {
                        Some(arn) => call.stream_arn(arn),
                        None => call.stream_name(stream.name.as_ref()),
                    };
                    let call = call
                        .set_shard_filter(f.as_ref().map(filter))
                        .set_max_results(max_results.map(|m| m as i32));
                    async move { call.send().await.map_err(map_err) }
                })
                .await?
            }
            // Follow-ups send only the token: Kinesis rejects a stream name with it.
            ListShardsRequest::Next { token, max_results } => self
                .client
                .list_shards()
                .next_token(token)
                .set_max_results(max_results.map(|m| m as i32))
                .send()
                .await
                .map_err(map_err)?,
        };
        Ok(ListShardsPage {
            shards: out.shards().iter().map(shard).collect::<Result<_, _>>()?,
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        let out = self
            .by_stream(stream, |arn| {
                let call = self.client.get_shard_iterator().shard_id(shard.as_str());
                let call = match arn {
                    Some(arn) => call.stream_arn(arn),
                    None => call.stream_name(stream.name.as_ref()),
                };
                let call = with_position(call, position);
                async move { call.send().await.map_err(map_err) }
            })
            .await?;
        out.shard_iterator()
            .map(|i| ShardIterator(i.to_string()))
            .ok_or_else(|| KinesisError::unavailable("GetShardIterator returned no iterator"))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator.0.clone())
            .limit(limit as i32)
            .send()
            .await
            .map_err(map_err)?;
        let millis_behind_latest = out.millis_behind_latest().map(|m| m.max(0) as u64);
        let next_iterator = out
            .next_shard_iterator()
            .map(|i| ShardIterator(i.to_string()));
        let child_shards = out
            .child_shards()
            .iter()
            .map(child)
            .collect::<Result<_, _>>()?;
        let records = out
            .records
            .into_iter()
            .map(record)
            .collect::<Result<_, KinesisError>>()?;
        Ok(GetRecordsOutput {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

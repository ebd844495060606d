//! `DynamoDbStreams`: DescribeStream, GetShardIterator and GetRecords of DynamoDB Streams behind
//! kcl-core's data-plane seam.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{self as sdk, ShardFilterType, ShardIteratorType};
use bytes::Bytes;
use kcl_aws::sdk_error::map_err;
use kcl_core::kinesis::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    ShardFilter, ShardIterator, SourceCapabilities, StreamSummary,
};
use kcl_core::model::{
    ChildShard, HashKeyRange, Record, SequenceNumber, SequenceNumberRange, Shard, ShardId,
    StartingPosition, StreamIdentity,
};
use serde_dynamo::Item;

use crate::record::{ChangeKind, ChangeRecord, StreamRecord, UserIdentity};

/// Most shards one DescribeStream call returns.
pub const MAX_DESCRIBE_LIMIT: u32 = 100;

/// The hash-key range every shard is given: DynamoDB Streams has none, and the Java adapter
/// writes `[0, 1]` in its leases, so leases stay the same whichever side writes them.
pub const ADAPTER_HASH_RANGE: HashKeyRange = HashKeyRange { start: 0, end: 1 };

/// The creation epoch in multi-stream lease keys (`account:stream:1:shardId`), as the Java
/// adapter writes it whatever the stream's creation time.
pub const ADAPTER_CREATION_EPOCH: u64 = 1;

/// Most records one GetRecords call returns.
pub const MAX_GET_RECORDS_LIMIT: u32 = 1000;

/// Settings of the DynamoDB Streams data plane. Start from `DynamoDbStreamsConfig::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamoDbStreamsConfig {
    /// DescribeStream calls (CHILD_SHARDS) made at a shard's end until its children show, with
    /// [`child_shard_backoff`](Self::child_shard_backoff) doubling in between. The whole search
    /// is part of the GetRecords call that found the end, so it stays within that call's
    /// deadline; children that show later are found by shard sync. Default 5 (about 1.5 s of
    /// waiting at most).
    pub child_shard_attempts: u32,
    /// The first wait between child-shard queries. Default 100 ms.
    pub child_shard_backoff: Duration,
}

impl Default for DynamoDbStreamsConfig {
    fn default() -> Self {
        Self {
            child_shard_attempts: 5,
            child_shard_backoff: Duration::from_millis(100),
        }
    }
}

impl DynamoDbStreamsConfig {
    /// Sets [`child_shard_attempts`](Self::child_shard_attempts).
    pub fn with_child_shard_attempts(mut self, attempts: u32) -> Self {
        self.child_shard_attempts = attempts;
        self
    }

    /// Sets [`child_shard_backoff`](Self::child_shard_backoff).
    pub fn with_child_shard_backoff(mut self, backoff: Duration) -> Self {
        self.child_shard_backoff = backoff;
        self
    }
}

/// DynamoDB Streams over the AWS SDK, as a [`KinesisDataPlane`].
///
/// Streams are named by their ARN ([`crate::stream`] makes the identity). What differs from
/// Kinesis, and how it is bridged:
/// - shards are listed with DescribeStream (≤ 100 per page, `ExclusiveStartShardId`); they have
///   no hash-key ranges, so each is given the Java adapter's `[0, 1]` ([`ADAPTER_HASH_RANGE`])
///   and the scheduler switches hash checks off ([`SourceCapabilities::DYNAMODB_STREAMS`]);
/// - GetRecords returns no children: at a shard's end this data plane asks DescribeStream for
///   them (`ShardFilter` CHILD_SHARDS) and returns them as Kinesis would;
/// - there is no `MillisBehindLatest`: it is approximated from the last record's creation time
///   (to the second at worst);
/// - `AT_TIMESTAMP` does not exist (`InvalidArgument`; the scheduler refuses it when built);
/// - a trimmed position is `TrimmedDataAccessException`, mapped to
///   [`KinesisError::TrimmedData`], so nothing trimmed is passed over silently.
///
/// Each record's data is the stream record as JSON in the Java adapter's shape
/// ([`ChangeRecord`]), its partition key the sequence number (as the adapter sets it).
#[derive(Debug, Clone)]
pub struct DynamoDbStreams {
    client: Client,
    config: DynamoDbStreamsConfig,
}

impl DynamoDbStreams {
    /// A data plane with a client for `config` (region, endpoint, credentials).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self::from_client(Client::new(config))
    }

    /// A data plane over an existing client.
    pub fn from_client(client: Client) -> Self {
        Self {
            client,
            config: DynamoDbStreamsConfig::default(),
        }
    }

    /// The same data plane with other settings.
    pub fn with_config(mut self, config: DynamoDbStreamsConfig) -> Self {
        self.config = config;
        self
    }

    /// The children of `shard`, asked of DescribeStream until they show (bounded).
    async fn children(&self, arn: &str, shard: &ShardId) -> Result<Vec<ChildShard>, KinesisError> {
        let mut wait = self.config.child_shard_backoff;
        for attempt in 1..=self.config.child_shard_attempts {
            let filter = sdk::ShardFilter::builder()
                .r#type(ShardFilterType::ChildShards)
                .shard_id(shard.as_str())
                .build();
            let out = self
                .client
                .describe_stream()
                .stream_arn(arn)
                .shard_filter(filter)
                .send()
                .await
                .map_err(map_err)?;
            // Some emulators answer with the shard itself: keep only its children.
            let children: Vec<ChildShard> = out
                .stream_description()
                .map(|d| d.shards())
                .unwrap_or_default()
                .iter()
                .filter(|s| s.parent_shard_id() == Some(shard.as_str()))
                .map(|s| ChildShard {
                    id: ShardId::new(s.shard_id().unwrap_or_default()),
                    parents: vec![shard.clone()],
                    hash_key_range: ADAPTER_HASH_RANGE,
                })
                .collect();
            if !children.is_empty() {
                return Ok(children);
            }
            if attempt < self.config.child_shard_attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::debug!(shard_id = %shard, "no children of the ended shard yet; shard sync will find them");
        Ok(Vec::new())
    }
}

/// The stream ARN, which every DynamoDB Streams call needs.
fn arn(stream: &StreamIdentity) -> Result<&str, KinesisError> {
    stream.arn.as_deref().ok_or_else(|| {
        KinesisError::invalid(format!(
            "DynamoDB Streams names streams by ARN; {} has none",
            stream.name
        ))
    })
}

/// Our iterator: the shard and stream ARN travel with DynamoDB's own, because GetRecords names
/// neither and a shard's end needs both to find its children.
fn encode_iterator(shard: &ShardId, arn: &str, iterator: &str) -> ShardIterator {
    ShardIterator(format!("ddbs1|{shard}|{arn}|{iterator}"))
}

fn decode_iterator(it: &ShardIterator) -> Result<(ShardId, &str, &str), KinesisError> {
    let invalid = || KinesisError::invalid("not a shard iterator of this data plane");
    let rest = it.0.strip_prefix("ddbs1|").ok_or_else(invalid)?;
    let mut parts = rest.splitn(3, '|');
    let (Some(shard), Some(arn), Some(iterator)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok((ShardId::new(shard), arn, iterator))
}

/// A listing's continuation token: the stream and the last shard listed.
fn encode_token(arn: &str, last: &str) -> String {
    format!("{arn}|{last}")
}

fn decode_token(token: &str) -> Result<(&str, &str), KinesisError> {
    token
        .rsplit_once('|')
        .ok_or_else(|| KinesisError::invalid("not a listing token of this data plane"))
}

fn sequence(s: &str) -> Result<SequenceNumber, KinesisError> {
    SequenceNumber::new(s).map_err(|e| {
        KinesisError::unavailable(format!(
            "DynamoDB Streams returned a bad sequence number: {e}"
        ))
    })
}

fn shard(s: &sdk::Shard) -> Result<Shard, KinesisError> {
    let id = s
        .shard_id()
        .ok_or_else(|| KinesisError::unavailable("DescribeStream returned a shard without id"))?;
    let range = s
        .sequence_number_range()
        .ok_or_else(|| KinesisError::unavailable("shard without sequence number range"))?;
    let start = range
        .starting_sequence_number()
        .ok_or_else(|| KinesisError::unavailable("shard without starting sequence number"))?;
    Ok(Shard {
        id: ShardId::new(id),
        parent: s.parent_shard_id().map(ShardId::new),
        adjacent_parent: None,
        hash_key_range: ADAPTER_HASH_RANGE,
        sequence_number_range: SequenceNumberRange {
            start: sequence(start)?,
            end: range.ending_sequence_number().map(sequence).transpose()?,
        },
    })
}

fn item(map: Option<std::collections::HashMap<String, sdk::AttributeValue>>) -> Option<Item> {
    map.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, serde_dynamo::AttributeValue::from(v)))
            .collect::<std::collections::HashMap<_, _>>()
            .into()
    })
}

/// A stream record as kcl-rs delivers it: data = the adapter's JSON, partition key = sequence
/// number, arrival = creation time. Taken by value: its attribute values move into the change.
fn record(r: sdk::Record) -> Result<Record, KinesisError> {
    let d = r
        .dynamodb
        .ok_or_else(|| KinesisError::unavailable("stream record without its dynamodb part"))?;
    let seq_text = d
        .sequence_number
        .ok_or_else(|| KinesisError::unavailable("stream record without sequence number"))?;
    let sequence_number = sequence(&seq_text)?;
    let kind = match r.event_name {
        Some(sdk::OperationType::Insert) => ChangeKind::Insert,
        Some(sdk::OperationType::Modify) => ChangeKind::Modify,
        Some(sdk::OperationType::Remove) => ChangeKind::Remove,
        other => {
            return Err(KinesisError::unavailable(format!(
                "stream record {seq_text} with unknown event name {other:?}"
            )));
        }
    };
    // Milliseconds, as the adapter writes them.
    let created = d.approximate_creation_date_time.as_ref().map(|t| {
        let ms = kcl_aws::system_time(t)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    });
    let change = ChangeRecord {
        event_id: r.event_id,
        kind,
        event_version: r.event_version,
        event_source: r.event_source,
        aws_region: r.aws_region,
        user_identity: r.user_identity.map(|u| UserIdentity {
            principal_id: u.principal_id,
            kind: u.r#type,
        }),
        dynamodb: StreamRecord {
            approximate_creation: created,
            keys: item(d.keys).unwrap_or_default(),
            new_image: item(d.new_image),
            old_image: item(d.old_image),
            sequence_number: sequence_number.clone(),
            size_bytes: d.size_bytes.map(|b| b.max(0) as u64),
            stream_view_type: d.stream_view_type.map(|v| v.as_str().to_string()),
        },
    };
    Ok(Record {
        data: Bytes::from(change.to_json()),
        partition_key: seq_text.into(),
        sequence_number,
        sub_sequence_number: 0,
        explicit_hash_key: None,
        approximate_arrival_timestamp: created.unwrap_or(SystemTime::UNIX_EPOCH),
        aggregated: false,
    })
}

#[async_trait]
impl KinesisDataPlane for DynamoDbStreams {
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::DYNAMODB_STREAMS
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<StreamSummary, KinesisError> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(arn(stream)?)
            .limit(1)
            .send()
            .await
            .map_err(map_err)?;
        let d = out
            .stream_description()
            .ok_or_else(|| KinesisError::unavailable("DescribeStream returned no description"))?;
        if d.stream_arn().is_none() {
            return Err(KinesisError::unavailable("DescribeStream named no stream"));
        }
        Ok(StreamSummary {
            identity: stream.clone(),
            // The Java adapter's multi-stream lease keys carry 1, not the creation time.
            creation_epoch_seconds: ADAPTER_CREATION_EPOCH,
        })
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, KinesisError> {
        let (stream_arn, after, max) = match &request {
            ListShardsRequest::First {
                stream,
                filter,
                max_results,
            } => {
                let after = match filter {
                    None => None,
                    Some(ShardFilter::AfterShardId(id)) => Some(id.as_str()),
                    Some(other) => {
                        return Err(KinesisError::invalid(format!(
                            "DynamoDB Streams lists shards without filter {other:?}"
                        )));
                    }
                };
                (arn(stream)?, after, *max_results)
            }
            ListShardsRequest::Next { token, max_results } => {
                let (arn, last) = decode_token(token)?;
                (arn, Some(last), *max_results)
            }
        };
        let limit = max
            .unwrap_or(MAX_DESCRIBE_LIMIT)
            .clamp(1, MAX_DESCRIBE_LIMIT);
        let out = self
            .client
            .describe_stream()
            .stream_arn(stream_arn)
            .limit(limit as i32)
            .set_exclusive_start_shard_id(after.map(str::to_string))
            .send()
            .await
            .map_err(map_err)?;
        let d = out
            .stream_description()
            .ok_or_else(|| KinesisError::unavailable("DescribeStream returned no description"))?;
        Ok(ListShardsPage {
            shards: d.shards().iter().map(shard).collect::<Result<_, _>>()?,
            next_token: d
                .last_evaluated_shard_id()
                .map(|last| encode_token(stream_arn, last)),
        })
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        let stream_arn = arn(stream)?;
        let call = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard.as_str());
        let call = match position {
            StartingPosition::TrimHorizon => {
                call.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartingPosition::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
            StartingPosition::AtSequenceNumber(s) => call
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(s.to_string()),
            StartingPosition::AfterSequenceNumber(s) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(s.to_string()),
            StartingPosition::AtTimestamp(_) => {
                return Err(KinesisError::invalid(
                    "DynamoDB Streams has no AT_TIMESTAMP position",
                ));
            }
        };
        let out = call.send().await.map_err(map_err)?;
        let iterator = out
            .shard_iterator()
            .ok_or_else(|| KinesisError::unavailable("GetShardIterator returned no iterator"))?;
        Ok(encode_iterator(shard, stream_arn, iterator))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        let (shard, stream_arn, inner) = decode_iterator(iterator)?;
        let out = self
            .client
            .get_records()
            .shard_iterator(inner)
            .limit(limit.clamp(1, MAX_GET_RECORDS_LIMIT) as i32)
            .send()
            .await
            .map_err(map_err)?;
        let next = out.next_shard_iterator.clone();
        let records = out
            .records
            .unwrap_or_default()
            .into_iter()
            .map(record)
            .collect::<Result<Vec<_>, _>>()?;
        // Approximate: how old the last record read is (creation times, to the second at worst).
        let millis_behind_latest = records.last().map(|r| {
            SystemTime::now()
                .duration_since(r.approximate_arrival_timestamp)
                .map_or(0, |d| d.as_millis() as u64)
        });
        let (next_iterator, child_shards) = match next {
            Some(next) => (Some(encode_iterator(&shard, stream_arn, &next)), Vec::new()),
            // No next iterator: the shard is closed and read to its end.
            None => (None, self.children(stream_arn, &shard).await?),
        };
        Ok(GetRecordsOutput {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_and_tokens_round_trip() {
        let shard = ShardId::new("shardId-00000001541626099285-f35f62ef");
        let arn =
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-08T01:23:03.546";
        let real = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/x|1|AAAA==";
        let it = encode_iterator(&shard, arn, real);
        assert_eq!(decode_iterator(&it).unwrap(), (shard.clone(), arn, real));
        assert!(decode_iterator(&ShardIterator("AAAA".into())).is_err());
        assert!(decode_iterator(&ShardIterator("ddbs1|only".into())).is_err());
        let token = encode_token(arn, shard.as_str());
        assert_eq!(decode_token(&token).unwrap(), (arn, shard.as_str()));
    }
}

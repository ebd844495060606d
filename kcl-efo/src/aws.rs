//! Fan-out over aws-sdk-kinesis (SubscribeToShard's HTTP/2 event stream).

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput;
use aws_sdk_kinesis::types::{ConsumerStatus, SubscribeToShardEventStream};
use kcl_aws::kinesis::{child, map_err, record, starting_position};
use kcl_core::kinesis::KinesisError;
use kcl_core::model::{SequenceNumber, ShardId, StartingPosition, StreamIdentity};

use crate::client::{ConsumerDescription, ConsumerState, FanOutClient, FanOutEvent, Subscription};

/// [`FanOutClient`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsFanOut {
    client: Client,
}

impl AwsFanOut {
    /// Fan-out with a client for `config`.
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// Fan-out over an existing client.
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    async fn stream_arn(&self, stream: &StreamIdentity) -> Result<String, KinesisError> {
        if let Some(arn) = &stream.arn {
            return Ok(arn.to_string());
        }
        let out = self
            .client
            .describe_stream_summary()
            .stream_name(stream.name.as_ref())
            .send()
            .await
            .map_err(map_err)?;
        out.stream_description_summary()
            .map(|s| s.stream_arn().to_string())
            .ok_or_else(|| KinesisError::unavailable("DescribeStreamSummary returned no ARN"))
    }
}

/// Our description of a consumer the SDK reported (two SDK types carry the same three fields).
fn description(name: &str, arn: &str, status: &ConsumerStatus) -> ConsumerDescription {
    let state = match status {
        ConsumerStatus::Active => ConsumerState::Active,
        ConsumerStatus::Deleting => ConsumerState::Deleting,
        _ => ConsumerState::Creating,
    };
    ConsumerDescription {
        name: name.to_string(),
        arn: arn.to_string(),
        state,
    }
}

#[async_trait]
impl FanOutClient for AwsFanOut {
    async fn register_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        let arn = self.stream_arn(stream).await?;
        let out = self
            .client
            .register_stream_consumer()
            .stream_arn(arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(map_err)?;
        let c = out.consumer().ok_or_else(|| {
            KinesisError::unavailable("RegisterStreamConsumer returned no consumer")
        })?;
        Ok(description(
            c.consumer_name(),
            c.consumer_arn(),
            c.consumer_status(),
        ))
    }

    async fn describe_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        let arn = self.stream_arn(stream).await?;
        let out = self
            .client
            .describe_stream_consumer()
            .stream_arn(arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(map_err)?;
        let c = out.consumer_description().ok_or_else(|| {
            KinesisError::unavailable("DescribeStreamConsumer returned no consumer")
        })?;
        Ok(description(
            c.consumer_name(),
            c.consumer_arn(),
            c.consumer_status(),
        ))
    }

    async fn deregister_consumer(&self, consumer_arn: &str) -> Result<(), KinesisError> {
        self.client
            .deregister_stream_consumer()
            .consumer_arn(consumer_arn)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard.as_str())
            .starting_position(starting_position(position))
            .send()
            .await
            .map_err(map_err)?;
        Ok(Box::new(AwsSubscription(out)))
    }
}

struct AwsSubscription(SubscribeToShardOutput);

#[async_trait]
impl Subscription for AwsSubscription {
    async fn next_event(&mut self) -> Option<Result<FanOutEvent, KinesisError>> {
        loop {
            return match self.0.event_stream.recv().await {
                Ok(None) => None,
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => Some(convert(e)),
                // Events of kinds this SDK does not know: skip them.
                Ok(Some(_)) => continue,
                Err(e) => Some(Err(
                    KinesisError::unavailable("subscription stream failed").with_source(e)
                )),
            };
        }
    }
}

fn convert(e: aws_sdk_kinesis::types::SubscribeToShardEvent) -> Result<FanOutEvent, KinesisError> {
    let continuation = match e.continuation_sequence_number() {
        "" => None,
        c => Some(SequenceNumber::new(c).map_err(|err| {
            KinesisError::unavailable("bad continuation sequence number").with_source(err)
        })?),
    };
    let child_shards = e
        .child_shards()
        .iter()
        .map(child)
        .collect::<Result<_, _>>()?;
    let millis_behind_latest = e.millis_behind_latest().max(0) as u64;
    let records = e
        .records
        .into_iter()
        .map(record)
        .collect::<Result<_, _>>()?;
    Ok(FanOutEvent {
        records,
        continuation_sequence_number: continuation,
        millis_behind_latest,
        child_shards,
    })
}

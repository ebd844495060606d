//! Fan-out on kcl-core's in-memory engine.

use async_trait::async_trait;
use kcl_core::engine::{ConsumerStatus, InMemoryKinesis, ShardSubscription};
use kcl_core::kinesis::KinesisError;
use kcl_core::model::{ShardId, StartingPosition, StreamIdentity};

use crate::client::{ConsumerDescription, ConsumerState, FanOutClient, FanOutEvent, Subscription};

/// [`FanOutClient`] over an [`InMemoryKinesis`].
#[derive(Debug, Clone)]
pub struct InMemoryFanOut(pub InMemoryKinesis);

fn describe(c: kcl_core::engine::Consumer) -> ConsumerDescription {
    let state = match c.status {
        ConsumerStatus::Creating => ConsumerState::Creating,
        _ => ConsumerState::Active,
    };
    ConsumerDescription {
        name: c.name,
        arn: c.arn,
        state,
    }
}

#[async_trait]
impl FanOutClient for InMemoryFanOut {
    async fn register_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        self.0
            .register_stream_consumer(&stream.name, name)
            .await
            .map(describe)
    }

    async fn describe_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        self.0
            .list_stream_consumers(&stream.name)?
            .into_iter()
            .find(|c| c.name == name)
            .map(describe)
            .ok_or_else(|| KinesisError::not_found(format!("consumer {name} not found")))
    }

    async fn deregister_consumer(&self, consumer_arn: &str) -> Result<(), KinesisError> {
        self.0.deregister_stream_consumer(consumer_arn)
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        Ok(Box::new(
            self.0
                .subscribe_to_shard(consumer_arn, shard, position)
                .await?,
        ))
    }
}

#[async_trait]
impl Subscription for ShardSubscription {
    async fn next_event(&mut self) -> Option<Result<FanOutEvent, KinesisError>> {
        let event = ShardSubscription::next_event(self).await?;
        Some(event.map(|e| FanOutEvent {
            records: e.records,
            continuation_sequence_number: e.continuation_sequence_number,
            millis_behind_latest: e.millis_behind_latest,
            child_shards: e.child_shards,
        }))
    }
}

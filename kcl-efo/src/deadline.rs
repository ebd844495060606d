//! Deadlines on every fan-out call: the SDK sets only a connect timeout, so a hung
//! RegisterStreamConsumer or SubscribeToShard would hold its shard's consumer forever.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kcl_core::kinesis::KinesisError;
use kcl_core::model::{ShardId, StartingPosition, StreamIdentity};

use crate::client::{ConsumerDescription, FanOutClient, FanOutEvent, Subscription};

/// A [`FanOutClient`] whose control calls fail with [`KinesisError::TimedOut`] after
/// `call_timeout`, and whose subscriptions end with it when no event comes for
/// `event_timeout` (Kinesis sends one at least every 5 seconds on a live subscription).
#[derive(Debug)]
pub(crate) struct DeadlineFanOut {
    pub(crate) inner: Arc<dyn FanOutClient>,
    pub(crate) call_timeout: Duration,
    pub(crate) event_timeout: Duration,
}

async fn within<T>(
    operation: &'static str,
    after: Duration,
    call: impl Future<Output = Result<T, KinesisError>>,
) -> Result<T, KinesisError> {
    tokio::time::timeout(after, call)
        .await
        .unwrap_or(Err(KinesisError::TimedOut { operation, after }))
}

#[async_trait]
impl FanOutClient for DeadlineFanOut {
    async fn register_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        let call = self.inner.register_consumer(stream, name);
        within("RegisterStreamConsumer", self.call_timeout, call).await
    }

    async fn describe_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError> {
        let call = self.inner.describe_consumer(stream, name);
        within("DescribeStreamConsumer", self.call_timeout, call).await
    }

    async fn deregister_consumer(&self, consumer_arn: &str) -> Result<(), KinesisError> {
        let call = self.inner.deregister_consumer(consumer_arn);
        within("DeregisterStreamConsumer", self.call_timeout, call).await
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        let call = self.inner.subscribe(consumer_arn, shard, position);
        let inner = within("SubscribeToShard", self.call_timeout, call).await?;
        Ok(Box::new(DeadlineSubscription {
            inner,
            event_timeout: self.event_timeout,
        }))
    }
}

struct DeadlineSubscription {
    inner: Box<dyn Subscription>,
    event_timeout: Duration,
}

impl fmt::Debug for DeadlineSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineSubscription")
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for DeadlineSubscription {
    async fn next_event(&mut self) -> Option<Result<FanOutEvent, KinesisError>> {
        match tokio::time::timeout(self.event_timeout, self.inner.next_event()).await {
            Ok(event) => event,
            Err(_) => Some(Err(KinesisError::TimedOut {
                operation: "SubscribeToShard event",
                after: self.event_timeout,
            })),
        }
    }
}

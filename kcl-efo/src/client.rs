//! The subscription seam: what fan-out retrieval needs from Kinesis, with an in-memory and an
//! aws-sdk-kinesis implementation, so tests drive expiry, errors and shard end deterministically.

use std::fmt;

use async_trait::async_trait;
use kcl_core::kinesis::KinesisError;
use kcl_core::model::{
    ChildShard, Record, SequenceNumber, ShardId, StartingPosition, StreamIdentity,
};

/// Status of a registered stream consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Registered, not usable yet.
    Creating,
    /// Usable.
    Active,
    /// Being deregistered.
    Deleting,
}

/// A registered stream consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDescription {
    /// Its name.
    pub name: String,
    /// Its ARN (what subscriptions name).
    pub arn: String,
    /// Its state.
    pub state: ConsumerState,
}

/// One SubscribeToShard event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutEvent {
    /// Kinesis records (KPL aggregates not unpacked).
    pub records: Vec<Record>,
    /// Resubscribe after this to continue with no gap and no duplicate; `None` at shard end.
    pub continuation_sequence_number: Option<SequenceNumber>,
    /// How far behind the tip of the shard.
    pub millis_behind_latest: u64,
    /// The shard's children, at its end.
    pub child_shards: Vec<ChildShard>,
}

/// A live subscription.
///
/// # Contract
///
/// Events come in shard order; each event's `continuation_sequence_number` is where a new
/// subscription resumes with no gap and no repeat (`None` only at the shard's end, with
/// `child_shards`). After `None` or an error, nothing more comes. Dropping it ends the
/// subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the subscription ended normally (after ≈ 5 minutes).
    async fn next_event(&mut self) -> Option<Result<FanOutEvent, KinesisError>>;
}

/// Stream-consumer registration and SubscribeToShard.
///
/// # Contract
///
/// Errors are typed as [`KinesisError`] the way Kinesis answers (`ResourceInUse` for a taken
/// consumer name, `ResourceNotFound`, `Throttled` — with `LimitExceeded` for a subscription
/// opened again too soon); calls may hang (the fan-out retrieval puts its own deadlines around
/// them). Held to this by the tests of [`AwsFanOut`](crate::AwsFanOut) on kinesis-local and
/// of [`InMemoryFanOut`](crate::InMemoryFanOut), and by the fan-out fleet simulation.
#[async_trait]
pub trait FanOutClient: Send + Sync + fmt::Debug + 'static {
    /// RegisterStreamConsumer; `ResourceInUse` when the name is taken.
    async fn register_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError>;

    /// DescribeStreamConsumer by stream and name.
    async fn describe_consumer(
        &self,
        stream: &StreamIdentity,
        name: &str,
    ) -> Result<ConsumerDescription, KinesisError>;

    /// DeregisterStreamConsumer.
    async fn deregister_consumer(&self, consumer_arn: &str) -> Result<(), KinesisError>;

    /// SubscribeToShard.
    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<Box<dyn Subscription>, KinesisError>;
}

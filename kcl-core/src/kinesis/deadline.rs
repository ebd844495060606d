//! A Kinesis data plane whose every call answers within a deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    ShardIterator, StreamSummary,
};
use crate::model::{ShardId, StartingPosition, StreamIdentity};

/// Wraps a [`KinesisDataPlane`] so that each call fails with [`KinesisError::TimedOut`]
/// (retryable) once `timeout` passes. None of these calls changes the stream, so a timed-out
/// call is safe to repeat.
#[derive(Debug, Clone)]
pub struct DeadlineKinesis {
    inner: Arc<dyn KinesisDataPlane>,
    timeout: Duration,
}

impl DeadlineKinesis {
    /// Bounds every call of `inner` by `timeout`.
    pub fn new(inner: Arc<dyn KinesisDataPlane>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    async fn within<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, KinesisError>>,
    ) -> Result<T, KinesisError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(KinesisError::TimedOut {
                operation,
                after: self.timeout,
            }))
    }
}

#[async_trait]
impl KinesisDataPlane for DeadlineKinesis {
    fn capabilities(&self) -> super::SourceCapabilities {
        self.inner.capabilities()
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<StreamSummary, KinesisError> {
        self.within("DescribeStreamSummary", self.inner.describe_stream(stream))
            .await
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, KinesisError> {
        self.within("ListShards", self.inner.list_shards(request))
            .await
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        self.within(
            "GetShardIterator",
            self.inner.get_shard_iterator(stream, shard, position),
        )
        .await
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        self.within("GetRecords", self.inner.get_records(iterator, limit))
            .await
    }
}

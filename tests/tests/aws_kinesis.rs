//! The aws-sdk-kinesis data plane against kinesis-local: ListShards paging (follow-ups carry only
//! the token) and filters, every iterator type, GetRecords, ChildShards at the end of a split
//! shard, and error mapping.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_core::kinesis::{
    KinesisDataPlane, KinesisError, ListShardsRequest, ShardFilter, ShardIterator,
};
use kcl_core::model::{ShardId, StartingPosition, StreamIdentity};
use kcl_tests::{create_stream, emulator, emulator_config, unique, wait_active};

async fn setup(shards: i32) -> Option<(aws_sdk_kinesis::Client, AwsKinesis, StreamIdentity)> {
    let endpoint = emulator("KCL_KINESIS_ENDPOINT")?;
    let config = emulator_config(&endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let name = unique("s");
    create_stream(&client, &name, shards).await;
    Some((
        client,
        AwsKinesis::new(&config),
        StreamIdentity::from_name(&name),
    ))
}

#[tokio::test]
async fn lists_shards_in_pages_and_with_filters() {
    let Some((_client, kinesis, stream)) = setup(12).await else {
        return;
    };
    let first = kinesis
        .list_shards(ListShardsRequest::First {
            stream: stream.clone(),
            filter: None,
            max_results: Some(5),
        })
        .await
        .unwrap();
    assert_eq!(first.shards.len(), 5);
    let second = kinesis
        .list_shards(ListShardsRequest::Next {
            token: first.next_token.clone().unwrap(),
            max_results: Some(5),
        })
        .await
        .unwrap();
    assert_eq!(second.shards.len(), 5);
    assert_ne!(first.shards[0].id, second.shards[0].id);
    let all = kinesis.list_all_shards(&stream, None).await.unwrap();
    assert_eq!(all.len(), 12);
    let open = kinesis
        .list_all_shards(&stream, Some(ShardFilter::AtLatest))
        .await
        .unwrap();
    assert_eq!(open.len(), 12);
    assert_eq!(all[0].hash_key_range.start, 0);
    assert_eq!(all[11].hash_key_range.end, u128::MAX);
    let missing = kinesis
        .list_all_shards(&StreamIdentity::from_name("no-such-stream"), None)
        .await;
    assert!(
        matches!(missing, Err(KinesisError::ResourceNotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn reads_with_every_iterator_type_and_sees_child_shards_at_the_end() {
    let Some((client, kinesis, stream)) = setup(1).await else {
        return;
    };
    let shard = ShardId::new("shardId-000000000000");
    let mut seqs = Vec::new();
    for i in 0..5 {
        let out = client
            .put_record()
            .stream_name(stream.name.as_ref())
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("v{i}")))
            .send()
            .await
            .unwrap();
        seqs.push(kcl_core::model::SequenceNumber::new(out.sequence_number()).unwrap());
    }
    let read = |p: StartingPosition| {
        let (kinesis, stream, shard) = (kinesis.clone(), stream.clone(), shard.clone());
        async move {
            let it = kinesis
                .get_shard_iterator(&stream, &shard, &p)
                .await
                .unwrap();
            kinesis.get_records(&it, 100).await.unwrap()
        }
    };
    let all = read(StartingPosition::TrimHorizon).await;
    assert_eq!(all.records.len(), 5);
    assert_eq!(all.records[2].data, "v2");
    assert_eq!(&*all.records[2].partition_key, "k2");
    assert_eq!(
        all.records
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect::<Vec<_>>(),
        seqs
    );
    assert_eq!(
        read(StartingPosition::AtSequenceNumber(seqs[3].clone()))
            .await
            .records
            .len(),
        2
    );
    assert_eq!(
        read(StartingPosition::AfterSequenceNumber(seqs[3].clone()))
            .await
            .records
            .len(),
        1
    );
    assert_eq!(read(StartingPosition::Latest).await.records.len(), 0);
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(
        read(StartingPosition::AtTimestamp(past))
            .await
            .records
            .len(),
        5
    );

    // Split the shard: the drained parent ends with no next iterator and its children.
    let it = kinesis
        .get_shard_iterator(&stream, &shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    client
        .split_shard()
        .stream_name(stream.name.as_ref())
        .shard_to_split(shard.as_str())
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&client, &stream.name).await;
    let mut next = Some(it);
    let mut children = Vec::new();
    for _ in 0..20 {
        let Some(it) = next.take() else { break };
        let out = kinesis.get_records(&it, 100).await.unwrap();
        children = out.child_shards;
        next = out.next_iterator;
    }
    assert!(
        next.is_none(),
        "a drained closed shard has no next iterator"
    );
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| c.parents == vec![shard.clone()]));

    let missing = kinesis
        .get_shard_iterator(
            &stream,
            &ShardId::new("shardId-000000000099"),
            &StartingPosition::Latest,
        )
        .await;
    assert!(
        matches!(missing, Err(KinesisError::ResourceNotFound { .. })),
        "{missing:?}"
    );
    let gone = kinesis
        .list_all_shards(&StreamIdentity::from_name("no-such-stream"), None)
        .await;
    assert!(
        matches!(gone, Err(KinesisError::ResourceNotFound { .. })),
        "{gone:?}"
    );
    // kinesis-local answers a garbage iterator with a 500 and no error code (AWS: 400
    // InvalidArgumentException); either way it is an error, never records.
    assert!(
        kinesis
            .get_records(&ShardIterator("not-an-iterator".into()), 10)
            .await
            .is_err()
    );
}

/// A Kinesis-compatible service without ARN parameters (issue 26 item 9): StreamARN calls
/// answer InvalidArgumentException. The data plane sends a refused call once more by name and
/// names streams from then on, instead of failing (the scheduler retried that every second,
/// for ever, and never consumed).
#[tokio::test]
async fn a_service_that_refuses_stream_arns_is_called_by_stream_name() {
    let Some(endpoint) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    let config = emulator_config(&endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let name = unique("arnless");
    create_stream(&client, &name, 2).await;
    let arn = client
        .describe_stream_summary()
        .stream_name(&name)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    let refusing = arnless::RefuseStreamArn::default();
    let refused = refusing.refused.clone();
    let conf = aws_sdk_kinesis::config::Builder::from(&config)
        .interceptor(refusing)
        .build();
    let kinesis = AwsKinesis::from_client(aws_sdk_kinesis::Client::from_conf(conf));
    let stream = StreamIdentity::from_arn(&arn);
    let shards = kinesis.list_all_shards(&stream, None).await.unwrap();
    assert_eq!(shards.len(), 2);
    kinesis
        .get_shard_iterator(&stream, &shards[0].id, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    let summary = kinesis.describe_stream(&stream).await.unwrap();
    assert_eq!(&*summary.identity.name, name.as_str());
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one refusal, then stream names"
    );
}

mod arnless {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::describe_stream_summary::{
        DescribeStreamSummaryError, DescribeStreamSummaryInput,
    };
    use aws_sdk_kinesis::operation::get_shard_iterator::{
        GetShardIteratorError, GetShardIteratorInput,
    };
    use aws_sdk_kinesis::operation::list_shards::{ListShardsError, ListShardsInput};
    use aws_sdk_kinesis::types::error::InvalidArgumentException;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::{
        BeforeSerializationInterceptorContextRef, Error, FinalizerInterceptorContextMut,
    };
    use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
    use aws_smithy_types::config_bag::{Storable, StoreReplace};

    /// Answers every call that names a stream by ARN with InvalidArgumentException, as a
    /// Kinesis-compatible service without ARN parameters does.
    #[derive(Debug, Default)]
    pub(super) struct RefuseStreamArn {
        pub(super) refused: Arc<AtomicUsize>,
    }

    /// Which operation named a stream by ARN, remembered from serialization to completion.
    #[derive(Debug, Clone, Copy)]
    enum ArnSent {
        ListShards,
        GetShardIterator,
        DescribeStreamSummary,
    }

    impl Storable for ArnSent {
        type Storer = StoreReplace<Self>;
    }

    fn invalid() -> InvalidArgumentException {
        let message = "1 validation error detected: unknown parameter StreamARN";
        InvalidArgumentException::builder()
            .message(message)
            .meta(
                ErrorMetadata::builder()
                    .code("InvalidArgumentException")
                    .message(message)
                    .build(),
            )
            .build()
    }

    impl Intercept for RefuseStreamArn {
        fn name(&self) -> &'static str {
            "RefuseStreamArn"
        }

        fn read_before_serialization(
            &self,
            context: &BeforeSerializationInterceptorContextRef<'_>,
            _runtime_components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let input = context.input();
            let sent = if input
                .downcast_ref::<ListShardsInput>()
                .is_some_and(|i| i.stream_arn().is_some())
            {
                Some(ArnSent::ListShards)
            } else if input
                .downcast_ref::<GetShardIteratorInput>()
                .is_some_and(|i| i.stream_arn().is_some())
            {
                Some(ArnSent::GetShardIterator)
            } else if input
                .downcast_ref::<DescribeStreamSummaryInput>()
                .is_some_and(|i| i.stream_arn().is_some())
            {
                Some(ArnSent::DescribeStreamSummary)
            } else {
                None
            };
            if let Some(sent) = sent {
                cfg.interceptor_state().store_put(sent);
            }
            Ok(())
        }

        fn modify_before_completion(
            &self,
            context: &mut FinalizerInterceptorContextMut<'_>,
            _runtime_components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(sent) = cfg.load::<ArnSent>().copied() else {
                return Ok(());
            };
            let Some(result) = context.output_or_error_mut() else {
                return Ok(());
            };
            self.refused.fetch_add(1, Ordering::Relaxed);
            let error = match sent {
                ArnSent::ListShards => {
                    Error::erase(ListShardsError::InvalidArgumentException(invalid()))
                }
                ArnSent::GetShardIterator => {
                    Error::erase(GetShardIteratorError::InvalidArgumentException(invalid()))
                }
                ArnSent::DescribeStreamSummary => Error::erase(
                    DescribeStreamSummaryError::InvalidArgumentException(invalid()),
                ),
            };
            *result = Err(OrchestratorError::operation(error));
            Ok(())
        }
    }
}

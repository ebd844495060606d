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

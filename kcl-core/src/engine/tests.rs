use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::kinesis::ShardFilter;
use crate::model::HashKeyRange;

fn entry(pk: &str, data: &str) -> PutRecordEntry {
    PutRecordEntry::new(pk, Bytes::copy_from_slice(data.as_bytes()))
}

async fn put_n(k: &InMemoryKinesis, stream: &str, n: usize) -> Vec<PutRecordOutput> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            k.put_record(stream, entry(&format!("key-{i}"), &format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    out
}

async fn read_all(
    k: &InMemoryKinesis,
    stream: &StreamIdentity,
    shard: &ShardId,
) -> GetRecordsOutput {
    let it = k
        .get_shard_iterator(stream, shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    k.get_records(&it, 10_000).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn routes_by_md5_and_numbers_like_aws() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 4).unwrap();
    let shards = k.list_all_shards(&stream, None).await.unwrap();
    assert_eq!(shards.len(), 4);
    let puts = put_n(&k, "s", 200).await;
    for (i, p) in puts.iter().enumerate() {
        let hash = routing::partition_key_hash(&format!("key-{i}"));
        let shard = shards.iter().find(|s| s.id == p.shard_id).unwrap();
        assert!(shard.hash_key_range.contains(hash));
        assert_eq!(p.sequence_number.digit_count(), 56);
    }
    for shard in &shards {
        let recs = read_all(&k, &stream, &shard.id).await.records;
        assert!(
            recs.windows(2)
                .all(|w| w[0].sequence_number < w[1].sequence_number)
        );
        assert!(
            recs.iter()
                .all(|r| r.sequence_number > shard.sequence_number_range.start)
        );
    }
    let ehk = k
        .put_record(
            "s",
            entry("x", "y").with_explicit_hash_key(u128::MAX.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(ehk.shard_id, shards[3].id);
}

#[tokio::test(start_paused = true)]
async fn rejects_invalid_puts() {
    let k = InMemoryKinesis::new();
    k.create_stream("s", 1).unwrap();
    let invalid = |r: Result<PutRecordOutput, KinesisError>| {
        matches!(r, Err(KinesisError::InvalidArgument { .. }))
    };
    assert!(invalid(k.put_record("s", entry("", "x")).await));
    assert!(invalid(
        k.put_record("s", entry(&"k".repeat(257), "x")).await
    ));
    assert!(
        k.put_record("s", entry(&"é".repeat(256), "x"))
            .await
            .is_ok()
    );
    assert!(invalid(
        k.put_record("s", PutRecordEntry::new("k", vec![0u8; MAX_RECORD_BYTES]))
            .await
    ));
    assert!(invalid(
        k.put_record("s", entry("k", "x").with_explicit_hash_key("nope"))
            .await
    ));
    assert!(matches!(
        k.put_record("missing", entry("k", "x")).await,
        Err(KinesisError::ResourceNotFound { .. })
    ));
    let many: Vec<_> = (0..501).map(|i| entry(&i.to_string(), "x")).collect();
    assert!(matches!(
        k.put_records("s", &many).await,
        Err(KinesisError::InvalidArgument { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn all_five_iterator_types() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let shard = ShardId::from_index(0);
    let before = k.now();
    tokio::time::advance(Duration::from_secs(1)).await;
    let puts = put_n(&k, "s", 5).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let mid = k.now();
    let later = put_n(&k, "s", 3).await;
    let read = |p: StartingPosition| {
        let (k, stream, shard) = (k.clone(), stream.clone(), shard.clone());
        async move {
            let it = k.get_shard_iterator(&stream, &shard, &p).await.unwrap();
            k.get_records(&it, 100).await.unwrap().records.len()
        }
    };
    assert_eq!(read(StartingPosition::TrimHorizon).await, 8);
    assert_eq!(read(StartingPosition::Latest).await, 0);
    assert_eq!(
        read(StartingPosition::AtSequenceNumber(
            puts[2].sequence_number.clone()
        ))
        .await,
        6
    );
    assert_eq!(
        read(StartingPosition::AfterSequenceNumber(
            puts[2].sequence_number.clone()
        ))
        .await,
        5
    );
    assert_eq!(
        read(StartingPosition::AfterSequenceNumber(
            later[2].sequence_number.clone()
        ))
        .await,
        0
    );
    assert_eq!(read(StartingPosition::AtTimestamp(before)).await, 8);
    assert_eq!(read(StartingPosition::AtTimestamp(mid)).await, 3);
    // A sequence number of another shard's range is rejected.
    let err = k
        .get_shard_iterator(
            &stream,
            &shard,
            &StartingPosition::AtSequenceNumber(SequenceNumber::new("5").unwrap()),
        )
        .await;
    assert!(matches!(err, Err(KinesisError::InvalidArgument { .. })));
    let missing = k
        .get_shard_iterator(&stream, &ShardId::from_index(9), &StartingPosition::Latest)
        .await;
    assert!(matches!(
        missing,
        Err(KinesisError::ResourceNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn iterators_expire_after_five_minutes_and_latest_sees_new_records() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let it = k
        .get_shard_iterator(&stream, &ShardId::from_index(0), &StartingPosition::Latest)
        .await
        .unwrap();
    put_n(&k, "s", 2).await;
    let out = k.get_records(&it, 10).await.unwrap();
    assert_eq!(out.records.len(), 2);
    assert_eq!(out.millis_behind_latest, Some(0));
    tokio::time::advance(Duration::from_secs(301)).await;
    assert!(matches!(
        k.get_records(&it, 10).await,
        Err(KinesisError::ExpiredIterator { .. })
    ));
    // The iterator returned by the call is fresh; its own clock starts when it was issued.
    let next = out.next_iterator.unwrap();
    assert!(matches!(
        k.get_records(&next, 10).await,
        Err(KinesisError::ExpiredIterator { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn get_records_limits_and_millis_behind() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let big = Bytes::from(vec![7u8; 1000 * 1024]);
    for i in 0..12 {
        k.put_record("s", PutRecordEntry::new(i.to_string(), big.clone()))
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    let it = k
        .get_shard_iterator(
            &stream,
            &ShardId::from_index(0),
            &StartingPosition::TrimHorizon,
        )
        .await
        .unwrap();
    let out = k.get_records(&it, 10_000).await.unwrap();
    assert_eq!(out.records.len(), 10, "10 MiB cap");
    assert_eq!(out.millis_behind_latest, Some(2000));
    let out = k.get_records(&out.next_iterator.unwrap(), 1).await.unwrap();
    assert_eq!(out.records.len(), 1);
    assert!(matches!(
        k.get_records(&it, 0).await,
        Err(KinesisError::InvalidArgument { .. })
    ));
    assert!(matches!(
        k.get_records(&it, 10_001).await,
        Err(KinesisError::InvalidArgument { .. })
    ));
    assert!(matches!(
        k.get_records(&ShardIterator("garbage".into()), 1).await,
        Err(KinesisError::InvalidArgument { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn split_closes_parent_and_reports_children_at_its_end() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let parent = ShardId::from_index(0);
    put_n(&k, "s", 10).await;
    let it = k
        .get_shard_iterator(&stream, &parent, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    let [low, high] = k.split_shard_evenly("s", &parent).unwrap();
    put_n(&k, "s", 10).await;
    let out = k.get_records(&it, 4).await.unwrap();
    assert_eq!(out.records.len(), 4);
    assert!(out.next_iterator.is_some() && out.child_shards.is_empty());
    let out = k
        .get_records(&out.next_iterator.unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(out.records.len(), 6);
    assert_eq!(out.next_iterator, None);
    let children: Vec<_> = out.child_shards.iter().map(|c| c.id.clone()).collect();
    assert_eq!(children, vec![low.clone(), high.clone()]);
    assert!(
        out.child_shards
            .iter()
            .all(|c| c.parents == vec![parent.clone()])
    );
    let low_n = read_all(&k, &stream, &low).await.records.len();
    let high_n = read_all(&k, &stream, &high).await.records.len();
    assert_eq!(low_n + high_n, 10);
    let shards = k.list_all_shards(&stream, None).await.unwrap();
    assert!(!shards[0].is_open() && shards[1].is_open() && shards[2].is_open());
    let open = k
        .list_all_shards(&stream, Some(ShardFilter::AtLatest))
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    assert!(matches!(
        k.split_shard("s", &parent, 5),
        Err(KinesisError::InvalidArgument { .. })
    ));
    assert!(matches!(
        k.split_shard("s", &low, 0),
        Err(KinesisError::InvalidArgument { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn merge_needs_adjacent_shards_and_records_both_parents() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 3).unwrap();
    let [a, b, c] = [0, 1, 2].map(ShardId::from_index);
    assert!(matches!(
        k.merge_shards("s", &a, &c),
        Err(KinesisError::InvalidArgument { .. })
    ));
    let child = k.merge_shards("s", &b, &a).unwrap();
    let shards = k.list_all_shards(&stream, None).await.unwrap();
    let merged = shards.iter().find(|s| s.id == child).unwrap();
    assert_eq!(merged.parent, Some(b.clone()));
    assert_eq!(merged.adjacent_parent, Some(a.clone()));
    assert_eq!(merged.hash_key_range.start, 0);
    let out = read_all(&k, &stream, &a).await;
    assert_eq!(out.next_iterator, None);
    assert_eq!(out.child_shards[0].parents, vec![b, a]);
}

fn assert_lineage_valid(shards: &[crate::model::Shard]) {
    let mut open: Vec<HashKeyRange> = shards
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.hash_key_range)
        .collect();
    open.sort();
    assert_eq!(open.first().unwrap().start, 0);
    assert_eq!(open.last().unwrap().end, u128::MAX);
    assert!(
        open.windows(2).all(|w| w[0].is_followed_by(&w[1])),
        "open shards tile the hash space"
    );
    for s in shards {
        let parents: Vec<_> = s.parents().collect();
        assert!(parents.len() <= 2);
        for p in parents {
            let parent = shards.iter().find(|x| &x.id == p).expect("parent listed");
            assert!(!parent.is_open(), "a parent is closed");
            assert!(parent.id < s.id);
            let r = s.hash_key_range;
            let pr = parent.hash_key_range;
            assert!(
                pr.start <= r.end && r.start <= pr.end,
                "a child overlaps its parents"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn update_shard_count_scales_uniformly() {
    for (from, to) in [(4, 8), (4, 2), (3, 5), (5, 3), (1, 2), (6, 7)] {
        let k = InMemoryKinesis::new();
        let stream = k.create_stream("s", from).unwrap();
        k.update_shard_count("s", to).unwrap();
        let shards = k.list_all_shards(&stream, None).await.unwrap();
        assert_lineage_valid(&shards);
        let mut open: Vec<_> = shards
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.hash_key_range)
            .collect();
        open.sort();
        assert_eq!(open, HashKeyRange::split_evenly(to), "{from} -> {to}");
    }
    let k = InMemoryKinesis::new();
    k.create_stream("s", 4).unwrap();
    assert!(k.update_shard_count("s", 9).is_err());
    assert!(k.update_shard_count("s", 1).is_err());
}

#[tokio::test(start_paused = true)]
async fn retention_trims_records_and_expired_closed_shards() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    put_n(&k, "s", 3).await;
    k.split_shard_evenly("s", &ShardId::from_index(0)).unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    put_n(&k, "s", 2).await;
    k.set_retention_period("s", Duration::from_secs(1800))
        .unwrap();
    let shards = k.list_all_shards(&stream, None).await.unwrap();
    assert_eq!(shards.len(), 2, "the closed parent expired");
    let total: usize = [1, 2]
        .into_iter()
        .map(ShardId::from_index)
        .map(|s| {
            let (k, stream) = (k.clone(), stream.clone());
            async move { read_all(&k, &stream, &s).await.records.len() }
        })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(total, 2);
    let gone = k
        .get_shard_iterator(
            &stream,
            &ShardId::from_index(0),
            &StartingPosition::TrimHorizon,
        )
        .await;
    assert!(matches!(gone, Err(KinesisError::ResourceNotFound { .. })));
    let roots = k
        .list_all_shards(&stream, Some(ShardFilter::AtTrimHorizon))
        .await
        .unwrap();
    assert_eq!(roots.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn trimmed_positions_read_from_the_oldest_record_or_fail_as_chosen() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let shard = ShardId::from_index(0);
    let old = put_n(&k, "s", 3).await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    let new = put_n(&k, "s", 2).await;
    let overtaken = k
        .get_shard_iterator(&stream, &shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    k.set_retention_period("s", Duration::from_secs(1800))
        .unwrap();
    let at = |i: usize| StartingPosition::AtSequenceNumber(old[i].sequence_number.clone());
    let after = |i: usize| StartingPosition::AfterSequenceNumber(old[i].sequence_number.clone());

    // Kinesis: the oldest retained record comes back, without a word.
    let it = k.get_shard_iterator(&stream, &shard, &at(1)).await.unwrap();
    let first = k.get_records(&it, 10).await.unwrap().records;
    assert_eq!(first[0].sequence_number, new[0].sequence_number);
    let read = k.get_records(&overtaken, 10).await.unwrap().records;
    assert_eq!(
        read.len(),
        2,
        "an overtaken iterator reads on from the oldest"
    );

    // DynamoDB Streams: an error, for the position and for an overtaken iterator.
    k.set_trimmed_reads("s", TrimmedReads::Fail).unwrap();
    for position in [at(1), at(2), after(1)] {
        let e = k.get_shard_iterator(&stream, &shard, &position).await;
        assert!(
            matches!(e, Err(KinesisError::TrimmedData { .. })),
            "{position:?}: {e:?}"
        );
    }
    let e = k.get_records(&overtaken, 10).await;
    assert!(matches!(e, Err(KinesisError::TrimmedData { .. })), "{e:?}");
    // After the last trimmed record nothing is lost; the trim horizon always reads.
    let it = k
        .get_shard_iterator(&stream, &shard, &after(2))
        .await
        .unwrap();
    assert_eq!(k.get_records(&it, 10).await.unwrap().records.len(), 2);
    assert_eq!(read_all(&k, &stream, &shard).await.records.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn list_shards_pages_with_token_only() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 25).unwrap();
    let first = k
        .list_shards(ListShardsRequest::First {
            stream: stream.clone(),
            filter: None,
            max_results: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(first.shards.len(), 10);
    let token = first.next_token.unwrap();
    let second = k
        .list_shards(ListShardsRequest::Next {
            token: token.clone(),
            max_results: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(second.shards[0].id, ShardId::from_index(10));
    assert!(
        k.list_shards(ListShardsRequest::Next {
            token,
            max_results: None
        })
        .await
        .is_err(),
        "tokens are single use"
    );
    assert_eq!(k.list_all_shards(&stream, None).await.unwrap().len(), 25);
    let after = k
        .list_all_shards(
            &stream,
            Some(ShardFilter::AfterShardId(ShardId::from_index(20))),
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 4);
    let missing = k
        .list_all_shards(&StreamIdentity::from_name("nope"), None)
        .await;
    assert!(matches!(
        missing,
        Err(KinesisError::ResourceNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn quotas_throttle_reads_and_writes() {
    let k = InMemoryKinesis::with_config(EngineConfig {
        quotas: Some(QuotaLimits::default()),
        ..Default::default()
    });
    let stream = k.create_stream("s", 1).unwrap();
    let it = k
        .get_shard_iterator(&stream, &ShardId::from_index(0), &StartingPosition::Latest)
        .await
        .unwrap();
    for _ in 0..5 {
        k.get_records(&it, 10).await.unwrap();
    }
    let err = k.get_records(&it, 10).await.unwrap_err();
    assert!(err.is_throttle() && err.is_retryable());
    tokio::time::advance(Duration::from_millis(250)).await;
    k.get_records(&it, 10).await.unwrap();
    let entries: Vec<_> = (0..500).map(|i| entry(&i.to_string(), "x")).collect();
    let mut ok = 0;
    for _ in 0..3 {
        ok += k
            .put_records("s", &entries)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    assert_eq!(ok, 1000, "1,000 records per second per shard");
}

#[tokio::test(start_paused = true)]
async fn injected_faults_fail_without_effect() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    k.throttle_next(KinesisOperation::Put, 1);
    assert!(
        k.put_record("s", entry("a", "b"))
            .await
            .unwrap_err()
            .is_throttle()
    );
    k.faults().next_calls(
        KinesisOperation::GetRecords,
        1,
        FaultAction::Fail(KinesisError::unavailable("reset")),
    );
    let it = k
        .get_shard_iterator(
            &stream,
            &ShardId::from_index(0),
            &StartingPosition::TrimHorizon,
        )
        .await
        .unwrap();
    assert!(k.get_records(&it, 10).await.unwrap_err().is_retryable());
    k.faults().next_calls(
        KinesisOperation::GetRecords,
        1,
        FaultAction::Delay(Duration::from_secs(2)),
    );
    let t = tokio::time::Instant::now();
    assert_eq!(
        k.get_records(&it, 10).await.unwrap().records.len(),
        0,
        "the throttled put wrote nothing"
    );
    assert_eq!(t.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn subscription_pushes_records_and_rejects_a_second_one() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let shard = ShardId::from_index(0);
    let consumer = k.register_stream_consumer("s", "app").await.unwrap();
    assert_eq!(consumer.status, ConsumerStatus::Active);
    let mut sub = k
        .subscribe_to_shard(&consumer.arn, &shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    let again = k
        .subscribe_to_shard(&consumer.arn, &shard, &StartingPosition::TrimHorizon)
        .await;
    assert!(matches!(again, Err(KinesisError::ResourceInUse { .. })));
    let first = sub.next_event().await.unwrap().unwrap();
    assert!(first.records.is_empty());
    assert_eq!(
        first.continuation_sequence_number.as_ref(),
        Some(&sequence_start(&k, &stream).await)
    );
    let puts = put_n(&k, "s", 3).await;
    let ev = sub.next_event().await.unwrap().unwrap();
    assert_eq!(ev.records.len(), 3);
    assert_eq!(
        ev.continuation_sequence_number,
        Some(puts[2].sequence_number.clone())
    );
    // Idle: a heartbeat after 5 s of virtual time.
    let t = tokio::time::Instant::now();
    let hb = sub.next_event().await.unwrap().unwrap();
    assert!(hb.records.is_empty());
    assert_eq!(t.elapsed(), Duration::from_secs(5));
    // Lifetime: the subscription ends after 5 minutes and frees its slot.
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(sub.next_event().await.is_none());
    let resumed = StartingPosition::AfterSequenceNumber(puts[1].sequence_number.clone());
    let mut sub = k
        .subscribe_to_shard(&consumer.arn, &shard, &resumed)
        .await
        .unwrap();
    let ev = sub.next_event().await.unwrap().unwrap();
    assert_eq!(ev.records.len(), 1);
    assert_eq!(ev.records[0].sequence_number, puts[2].sequence_number);
}

async fn sequence_start(k: &InMemoryKinesis, stream: &StreamIdentity) -> SequenceNumber {
    k.list_all_shards(stream, None).await.unwrap()[0]
        .sequence_number_range
        .start
        .clone()
}

#[tokio::test(start_paused = true)]
async fn subscription_signals_shard_end_with_children() {
    let k = InMemoryKinesis::new();
    k.create_stream("s", 2).unwrap();
    let consumer = k.register_stream_consumer("s", "app").await.unwrap();
    let shard = ShardId::from_index(0);
    let mut sub = k
        .subscribe_to_shard(&consumer.arn, &shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    sub.next_event().await.unwrap().unwrap();
    let child = k
        .merge_shards("s", &shard, &ShardId::from_index(1))
        .unwrap();
    let end = sub.next_event().await.unwrap().unwrap();
    assert_eq!(end.continuation_sequence_number, None);
    assert_eq!(end.child_shards.len(), 1);
    assert_eq!(end.child_shards[0].id, child);
    assert!(sub.next_event().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn consumers_activate_after_the_configured_delay() {
    let k = InMemoryKinesis::with_config(EngineConfig {
        consumer_activation_delay: Duration::from_secs(3),
        ..Default::default()
    });
    k.create_stream("s", 1).unwrap();
    let c = k.register_stream_consumer("s", "app").await.unwrap();
    assert_eq!(c.status, ConsumerStatus::Creating);
    assert!(matches!(
        k.register_stream_consumer("s", "app").await,
        Err(KinesisError::ResourceInUse { .. })
    ));
    let early = k
        .subscribe_to_shard(&c.arn, &ShardId::from_index(0), &StartingPosition::Latest)
        .await;
    assert!(matches!(early, Err(KinesisError::ResourceInUse { .. })));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        k.describe_stream_consumer(&c.arn).await.unwrap().status,
        ConsumerStatus::Active
    );
    let mut sub = k
        .subscribe_to_shard(&c.arn, &ShardId::from_index(0), &StartingPosition::Latest)
        .await
        .unwrap();
    k.deregister_stream_consumer(&c.arn).unwrap();
    assert!(matches!(
        sub.next_event().await,
        Some(Err(KinesisError::ResourceNotFound { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn deleted_stream_is_not_found() {
    let k = InMemoryKinesis::new();
    let stream = k.create_stream("s", 1).unwrap();
    let it = k
        .get_shard_iterator(&stream, &ShardId::from_index(0), &StartingPosition::Latest)
        .await
        .unwrap();
    k.delete_stream("s").unwrap();
    assert!(matches!(
        k.get_records(&it, 1).await,
        Err(KinesisError::ResourceNotFound { .. })
    ));
    k.create_stream("s", 1).unwrap();
    assert!(
        matches!(
            k.get_records(&it, 1).await,
            Err(KinesisError::ResourceNotFound { .. })
        ),
        "a new stream of the same name is another stream"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of splits and merges keeps a valid lineage, and reading parents before
    /// children yields every record exactly once, in put order per partition key.
    #[test]
    fn reshards_keep_lineage_and_records(ops in prop::collection::vec((0u8..3, any::<u64>()), 1..12), shards in 1u32..5) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let k = InMemoryKinesis::new();
            let stream = k.create_stream("s", shards).unwrap();
            let mut expected: Vec<(String, u32)> = Vec::new();
            let mut counter = 0u32;
            for (op, pick) in ops {
                for _ in 0..5 {
                    let key = format!("k{}", counter % 7);
                    k.put_record("s", entry(&key, &counter.to_string())).await.unwrap();
                    expected.push((key, counter));
                    counter += 1;
                }
                let open: Vec<_> = k.list_all_shards(&stream, Some(ShardFilter::AtLatest)).await.unwrap();
                let s = &open[(pick as usize) % open.len()];
                match op {
                    0 => { k.split_shard_evenly("s", &s.id).unwrap(); }
                    1 => {
                        if let Some(n) = open.iter().find(|n| s.hash_key_range.is_followed_by(&n.hash_key_range)) {
                            k.merge_shards("s", &s.id, &n.id).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            let all = k.list_all_shards(&stream, None).await.unwrap();
            assert_lineage_valid(&all);
            // Read parents first (shard ids increase along lineage).
            let mut seen: Vec<(String, u32)> = Vec::new();
            for s in &all {
                for r in read_all(&k, &stream, &s.id).await.records {
                    seen.push((r.partition_key.to_string(), std::str::from_utf8(&r.data).unwrap().parse().unwrap()));
                }
            }
            assert_eq!(seen.len(), expected.len());
            for key in 0..7 {
                let k = format!("k{key}");
                let got: Vec<_> = seen.iter().filter(|(p, _)| *p == k).map(|(_, v)| *v).collect();
                let want: Vec<_> = expected.iter().filter(|(p, _)| *p == k).map(|(_, v)| *v).collect();
                assert_eq!(got, want);
            }
        });
    }

    #[test]
    fn every_key_routes_into_its_shard(keys in prop::collection::vec("\\PC{1,40}", 1..50), shards in 1u32..20) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async move {
            let k = InMemoryKinesis::new();
            let stream = k.create_stream("s", shards).unwrap();
            let all = k.list_all_shards(&stream, None).await.unwrap();
            for key in keys {
                let out = k.put_record("s", entry(&key, "x")).await.unwrap();
                let s = all.iter().find(|s| s.id == out.shard_id).unwrap();
                assert!(s.hash_key_range.contains(routing::partition_key_hash(&key)));
            }
        });
    }
}

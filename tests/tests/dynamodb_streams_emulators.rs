//! DynamoDB Streams on moto (issue 28 §9): the record shape of inserts, updates and deletes on a
//! real table's stream, the data plane's calls, and the scheduler end to end — two workers, a
//! graceful hand-off between them while changes are written, every change processed once in
//! order per item, the checkpoint at the last change. moto implements one never-rotating shard
//! per table (a CHILD_SHARDS query answers with the shard itself, there is no trimming); lineage,
//! rotation and trimming are tested on the in-memory engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::StreamViewType;
use kcl_core::kinesis::{KinesisDataPlane, KinesisError, SourceKind};
use kcl_core::lease::LeaseStore;
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, StartingPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder, SchedulerConfigError};
use kcl_dynamodb_streams::{ChangeKind, ChangeRecord, DynamoDbStreams};
use kcl_tests::{
    create_table, emulator, emulator_config, init_logging, lease_table, unique, write_change,
};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// A table `id` (S) with a NEW_AND_OLD_IMAGES stream; its stream identity.
async fn table_with_stream(client: &aws_sdk_dynamodb::Client, name: &str) -> StreamIdentity {
    let arn = create_table(client, name, Some(StreamViewType::NewAndOldImages))
        .await
        .expect("a stream ARN");
    kcl_dynamodb_streams::stream(&arn).expect("a stream ARN that parses")
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Item {
    id: String,
    version: u64,
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Key {
    id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_reads_a_table_s_changes_as_the_adapter_shapes_them() -> anyhow::Result<()> {
    init_logging();
    let Some(endpoint) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return Ok(());
    };
    let config = emulator_config(&endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("ddbs-shape");
    let stream = table_with_stream(&dynamodb, &table).await;
    for version in 0..5 {
        write_change(&dynamodb, &table, "a", version).await;
    }
    let plane = DynamoDbStreams::new(&config);
    assert_eq!(plane.capabilities().kind, SourceKind::DynamoDbStreams);
    let shards = plane.list_all_shards(&stream, None).await?;
    assert_eq!(shards.len(), 1, "moto: one shard per table");
    assert!(shards[0].is_open());

    let it = plane
        .get_shard_iterator(&stream, &shards[0].id, &StartingPosition::TrimHorizon)
        .await?;
    let out = plane.get_records(&it, 1000).await?;
    assert!(out.next_iterator.is_some(), "an open shard goes on");
    let changes: Vec<ChangeRecord> = out
        .records
        .iter()
        .map(ChangeRecord::from_record)
        .collect::<Result<_, _>>()?;
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    use ChangeKind::*;
    assert_eq!(kinds, [Insert, Modify, Modify, Modify, Remove]);
    for (record, change) in out.records.iter().zip(&changes) {
        // As the Java adapter: the sequence number is also the partition key.
        assert_eq!(record.sequence_number, change.dynamodb.sequence_number);
        assert_eq!(&*record.partition_key, record.sequence_number.to_string());
        assert_eq!(change.keys_as::<Key>()?, Key { id: "a".into() });
        assert_eq!(change.event_source.as_deref(), Some("aws:dynamodb"));
        assert!(change.dynamodb.approximate_creation.is_some());
    }
    assert!(
        out.records
            .windows(2)
            .all(|w| w[0].sequence_number < w[1].sequence_number)
    );
    let inserted: Item = changes[0]
        .new_image_as()?
        .expect("an insert has a new image");
    assert_eq!(
        inserted,
        Item {
            id: "a".into(),
            version: 0
        }
    );
    assert!(changes[0].old_image_as::<Item>()?.is_none());
    let updated: Item = changes[1]
        .old_image_as()?
        .expect("an update has an old image");
    assert_eq!(updated.version, 0);
    assert!(
        changes[4].new_image_as::<Item>()?.is_none(),
        "a delete has no new image"
    );
    // The JSON names are the adapter's.
    let json: serde_json::Value = serde_json::from_slice(&out.records[0].data)?;
    assert_eq!(json["eventName"], "INSERT");
    assert_eq!(json["dynamodb"]["NewImage"]["version"]["N"], "0");
    assert_eq!(json["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
    assert!(json["dynamodb"]["ApproximateCreationDateTime"].is_u64());

    // Positions: after a sequence number, and no AT_TIMESTAMP.
    let after = StartingPosition::AfterSequenceNumber(out.records[2].sequence_number.clone());
    let it = plane
        .get_shard_iterator(&stream, &shards[0].id, &after)
        .await?;
    assert_eq!(plane.get_records(&it, 1000).await?.records.len(), 2);
    let at_time = StartingPosition::AtTimestamp(std::time::SystemTime::now());
    let refused = plane
        .get_shard_iterator(&stream, &shards[0].id, &at_time)
        .await;
    assert!(matches!(refused, Err(KinesisError::InvalidArgument { .. })));
    Ok(())
}

#[tokio::test]
async fn at_timestamp_is_refused_when_the_scheduler_is_built() {
    let config = aws_sdk_dynamodbstreams_config();
    let stream = kcl_dynamodb_streams::stream(
        "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000",
    )
    .unwrap();
    let built = SchedulerBuilder::new(stream, "app")
        .kinesis(Arc::new(DynamoDbStreams::new(&config)))
        .lease_store(Arc::new(kcl_core::lease::InMemoryLeaseStore::new()))
        .initial_position(InitialPosition::AtTimestamp(std::time::SystemTime::now()))
        .processor_factory(|_: &ShardInfo| Changes::default())
        .build();
    assert!(matches!(
        built,
        Err(SchedulerConfigError::Unsupported {
            kind: SourceKind::DynamoDbStreams,
            ..
        })
    ));
}

/// An SDK configuration that is never used to send anything.
fn aws_sdk_dynamodbstreams_config() -> aws_types::SdkConfig {
    aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new("us-east-1"))
        .build()
}

/// Every change processed: (worker, item id, version or "deleted", sequence number).
type Ledger = Arc<Mutex<Vec<(String, String, Option<u64>, String)>>>;

#[derive(Default)]
struct Changes {
    worker: String,
    ledger: Ledger,
}

#[async_trait]
impl ShardRecordProcessor for Changes {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let mut seen = Vec::new();
        for r in input.records {
            let change = ChangeRecord::from_record(r)?;
            let key: Key = change.keys_as()?;
            let version = change.new_image_as::<Item>()?.map(|i| i.version);
            seen.push((
                self.worker.clone(),
                key.id,
                version,
                change.dynamodb.sequence_number.to_string(),
            ));
        }
        self.ledger.lock().extend(seen);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Issue 28 acceptance: 1,000 changes (inserts, updates, deletes) to a real table while two
/// workers consume its stream; the first stops gracefully halfway (a SIGTERM hand-off). Every
/// change is processed exactly once, in order per item, and the lease ends checkpointed at the
/// last change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_process_every_change_once_in_order_across_a_hand_off() -> anyhow::Result<()> {
    init_logging();
    let Some(endpoint) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return Ok(());
    };
    let config = emulator_config(&endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("ddbs-e2e");
    let stream = table_with_stream(&dynamodb, &table).await;
    let store: Arc<dyn LeaseStore> = Arc::new(lease_table(&endpoint, "ddbs-leases").await);
    let plane: Arc<dyn KinesisDataPlane> = Arc::new(DynamoDbStreams::new(&config));
    let ledger: Ledger = Arc::default();
    let start = |worker: &str| {
        let ledger = ledger.clone();
        let name = worker.to_string();
        let scheduler = SchedulerBuilder::new(stream.clone(), unique("ddbs-app"))
            .worker_id(worker)
            .lease_store(store.clone())
            .kinesis(plane.clone())
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(3))
            .shard_sync_interval(Duration::from_secs(2))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default()
                    .with_max_records(1000)
                    .with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |_: &ShardInfo| Changes {
                worker: name.clone(),
                ledger: ledger.clone(),
            })
            .build()
            .expect("a valid configuration");
        let stop = CancellationToken::new();
        let run = tokio::spawn(scheduler.run(stop.clone()));
        (stop, run)
    };
    let (stop_a, run_a) = start("a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stop_b, run_b) = start("b");

    // 1,000 changes over 40 items, in rounds; worker a stops gracefully halfway.
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..1000u64 {
        let id = format!("item-{}", n % 40);
        let version = sent.entry(id.clone()).or_insert(0);
        write_change(&dynamodb, &table, &id, *version).await;
        *version += 1;
        if n == 500 {
            stop_a.cancel();
        }
    }
    run_a.await??;
    let mut done = false;
    for _ in 0..120 {
        if ledger.lock().len() >= 1000 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_b.cancel();
    run_b.await??;
    assert!(
        done,
        "only {} of 1,000 changes processed",
        ledger.lock().len()
    );

    let ledger = ledger.lock().clone();
    assert_eq!(ledger.len(), 1000, "every change exactly once");
    let mut versions: BTreeMap<&str, Vec<Option<u64>>> = BTreeMap::new();
    for (_, id, version, _) in &ledger {
        versions.entry(id).or_default().push(*version);
    }
    for (id, seen) in &versions {
        let expected: Vec<Option<u64>> = (0..seen.len() as u64)
            .map(|v| (v % 5 != 4).then_some(v))
            .collect();
        assert_eq!(seen, &expected, "{id}: every change once, in order");
    }
    let workers: std::collections::BTreeSet<&str> =
        ledger.iter().map(|(w, ..)| w.as_str()).collect();
    assert_eq!(workers.len(), 2, "the shard moved from a to b: {workers:?}");
    let lease = store.list().await?.leases.pop().expect("one lease");
    let last = &ledger.last().expect("changes").3;
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: kcl_core::model::SequenceNumber::new(last)?,
            sub_sequence: 0
        },
        "checkpointed at the last change"
    );
    Ok(())
}

/// Issue 28 §5 and acceptance: a lease table written as the Java adapter writes it — single-
/// and multi-stream lease keys — is taken over in place: the dead Java owner's lease is taken
/// after the failover time, processing starts right after its checkpoint, and no other lease
/// is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_lease_table_is_taken_over_with_its_checkpoints() -> anyhow::Result<()> {
    init_logging();
    let Some(endpoint) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return Ok(());
    };
    let config = emulator_config(&endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let plane: Arc<dyn KinesisDataPlane> = Arc::new(DynamoDbStreams::new(&config));
    for multi in [false, true] {
        let table = unique("ddbs-takeover");
        let stream = table_with_stream(&dynamodb, &table).await;
        for version in 0..10 {
            write_change(
                &dynamodb,
                &table,
                &format!("item-{}", version % 2),
                version / 2,
            )
            .await;
        }
        let shard = plane.list_all_shards(&stream, None).await?.remove(0).id;
        let it = plane
            .get_shard_iterator(&stream, &shard, &StartingPosition::TrimHorizon)
            .await?;
        let written = plane.get_records(&it, 1000).await?.records;
        assert_eq!(written.len(), 10);
        // The Java fleet processed the first four changes.
        let checkpoint = written[3].sequence_number.to_string();
        let account = "123456789012";
        let stream_name = format!("{account}:{}:1", stream.name);
        let key = if multi {
            format!("{stream_name}:{shard}")
        } else {
            shard.to_string()
        };
        let leases = lease_table(&endpoint, "ddbs-adapter-leases").await;
        dynamodb
            .put_item()
            .table_name(leases.table())
            .set_item(Some(kcl_tests::adapter_lease_item(
                &key,
                &checkpoint,
                Some("java-adapter-worker-1"),
                None,
                multi.then_some((stream_name.as_str(), shard.as_str())),
            )))
            .send()
            .await?;
        let store: Arc<dyn LeaseStore> = Arc::new(leases);
        let ledger: Ledger = Arc::default();
        let factory_ledger = ledger.clone();
        let builder = if multi {
            let streams =
                kcl_core::scheduler::StreamSet::new(kcl_core::scheduler::RemovedStreamPolicy::Keep);
            streams.add(kcl_core::scheduler::StreamConfig::new(
                stream.clone(),
                InitialPosition::TrimHorizon,
            ));
            SchedulerBuilder::multi_stream(streams, "adapter-app")
        } else {
            SchedulerBuilder::new(stream.clone(), "adapter-app")
                .initial_position(InitialPosition::TrimHorizon)
        };
        let scheduler = builder
            .worker_id("rust-1")
            .lease_store(store.clone())
            .kinesis(plane.clone())
            .failover_time(Duration::from_secs(3))
            .shard_sync_interval(Duration::from_secs(1))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |_: &ShardInfo| Changes {
                worker: "rust-1".into(),
                ledger: factory_ledger.clone(),
            })
            .build()?;
        let stop = CancellationToken::new();
        let run = tokio::spawn(scheduler.run(stop.clone()));
        for _ in 0..60 {
            if ledger.lock().len() >= 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.cancel();
        run.await??;
        let seen: Vec<String> = ledger.lock().iter().map(|(.., seq)| seq.clone()).collect();
        let expected: Vec<String> = written[4..]
            .iter()
            .map(|r| r.sequence_number.to_string())
            .collect();
        assert_eq!(
            seen, expected,
            "multi = {multi}: resumed right after the Java checkpoint"
        );
        let table_now = store.list().await?.leases;
        assert_eq!(
            table_now.len(),
            1,
            "the adapter's lease was used, none created"
        );
        assert_eq!(table_now[0].key, key);
        assert_eq!(
            table_now[0].checkpoint.sequence().map(ToString::to_string),
            Some(written[9].sequence_number.to_string())
        );
        assert_eq!(
            table_now[0].hash_key_range,
            Some(kcl_dynamodb_streams::ADAPTER_HASH_RANGE),
            "the adapter's hash range kept"
        );
    }
    Ok(())
}

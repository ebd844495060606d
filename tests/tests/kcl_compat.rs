//! Java KCL lease-table compatibility on DynamoDB (moto): items written attribute by attribute in
//! the KCL's format are read, taken over and resumed from the right place; items we write use
//! the KCL's attribute names and types; a corrupt item is reported by key and does not stop a
//! worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use bytes::Bytes;
use kcl_core::aggregation::Aggregator;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{Lease, LeaseError, LeaseStore};
use kcl_core::model::{
    ExtendedSequenceNumber, HashKeyRange, InitialPosition, SequenceNumber, ShardId,
};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use kcl_tests::{emulator, emulator_config, unique};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

async fn setup() -> Option<(aws_sdk_dynamodb::Client, DynamoLeaseStore)> {
    let endpoint = emulator("KCL_DYNAMODB_ENDPOINT")?;
    let config = emulator_config(&endpoint).await;
    let store = DynamoLeaseStore::from_config(&config, unique("kcl-compat"));
    store
        .create_table_if_missing(&TableOptions::default().with_lease_owner_index(true))
        .await
        .unwrap();
    Some((aws_sdk_dynamodb::Client::new(&config), store))
}

fn s(v: &str) -> Av {
    Av::S(v.into())
}

fn n(v: u64) -> Av {
    Av::N(v.to_string())
}

/// An item exactly as the Java KCL writes it.
fn java_item(attrs: &[(&str, Av)]) -> HashMap<String, Av> {
    attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn put_raw(client: &aws_sdk_dynamodb::Client, table: &str, item: HashMap<String, Av>) {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn java_items_are_read_and_taken_over() {
    let Some((client, store)) = setup().await else {
        return;
    };
    let table = store.table().to_string();
    put_raw(
        &client,
        &table,
        java_item(&[
            ("leaseKey", s("shardId-000000000001")),
            ("leaseOwner", s("java-worker-1")),
            ("leaseCounter", n(17)),
            ("checkpoint", s(SEQ)),
            ("checkpointSubSequenceNumber", n(3)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("parentShardId", Av::Ss(vec!["shardId-000000000000".into()])),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("170141183460469231731687303715884105727"),
            ),
            (
                "pendingCheckpoint",
                s("49590338271490256608559692538361571095921575989136588999"),
            ),
            ("pendingCheckpointSubSequenceNumber", n(0)),
            (
                "pendingCheckpointState",
                Av::B(Blob::new(b"app-state".to_vec())),
            ),
        ]),
    )
    .await;
    put_raw(
        &client,
        &table,
        java_item(&[
            ("leaseKey", s("shardId-000000000000")),
            ("leaseCounter", n(120)),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n(0)),
            ("ownerSwitchesSinceCheckpoint", n(2)),
            (
                "childShardIds",
                Av::Ss(vec![
                    "shardId-000000000001".into(),
                    "shardId-000000000002".into(),
                ]),
            ),
            ("startingHashKey", s("0")),
            ("endingHashKey", s(&u128::MAX.to_string())),
        ]),
    )
    .await;
    put_raw(
        &client,
        &table,
        java_item(&[
            ("leaseKey", s("shardId-000000000002")),
            ("leaseCounter", n(0)),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n(0)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("parentShardId", Av::Ss(vec!["shardId-000000000000".into()])),
            ("checkpointOwner", s("java-worker-2")),
            ("throughputKBps", Av::N("12.5".into())),
        ]),
    )
    .await;
    put_raw(
        &client,
        &table,
        java_item(&[
            (
                "leaseKey",
                s("123456789012:orders:1700000000:shardId-000000000004"),
            ),
            ("leaseOwner", s("java-worker-1")),
            ("leaseCounter", n(5)),
            ("checkpoint", s("LATEST")),
            ("checkpointSubSequenceNumber", n(0)),
            ("ownerSwitchesSinceCheckpoint", n(1)),
            ("streamName", s("123456789012:orders:1700000000")),
            ("shardId", s("shardId-000000000004")),
        ]),
    )
    .await;

    let listing = store.list().await.unwrap();
    assert!(listing.malformed.is_empty(), "{:?}", listing.malformed);
    let by_key: HashMap<&str, &Lease> =
        listing.leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let one = by_key["shardId-000000000001"];
    assert_eq!(one.owner.as_deref(), Some("java-worker-1"));
    assert_eq!(one.counter, 17);
    assert_eq!(
        one.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: SequenceNumber::new(SEQ).unwrap(),
            sub_sequence: 3
        }
    );
    assert_eq!(one.parent_shard_ids, vec![ShardId::from_index(0)]);
    assert_eq!(
        one.hash_key_range,
        Some(HashKeyRange {
            start: 0,
            end: 170141183460469231731687303715884105727
        })
    );
    assert_eq!(
        one.pending_checkpoint_state.as_deref(),
        Some(&b"app-state"[..])
    );
    assert!(one.pending_checkpoint.is_some());
    let zero = by_key["shardId-000000000000"];
    assert!(zero.is_shard_end());
    assert_eq!(
        zero.child_shard_ids,
        vec![ShardId::from_index(1), ShardId::from_index(2)]
    );
    assert_eq!(zero.owner, None);
    let two = by_key["shardId-000000000002"];
    assert_eq!(two.checkpoint_owner.as_deref(), Some("java-worker-2"));
    assert_eq!(two.throughput_kbps, Some(12.5));
    let multi = by_key["123456789012:orders:1700000000:shardId-000000000004"];
    assert_eq!(multi.shard_id(), ShardId::from_index(4));
    assert_eq!(
        multi.multi_stream.as_ref().unwrap().stream_identifier,
        "123456789012:orders:1700000000"
    );

    // Take over from the Java worker: the checkpoint is kept, the owner switch counted.
    let taken = store.take(one, "rust-worker").await.unwrap();
    assert_eq!(
        (
            taken.owner.as_deref(),
            taken.counter,
            taken.owner_switches_since_checkpoint
        ),
        (Some("rust-worker"), 18, 1)
    );
    assert_eq!(taken.checkpoint, one.checkpoint);
}

#[tokio::test]
async fn items_we_write_use_the_kcl_names_and_types() {
    let Some((client, store)) = setup().await else {
        return;
    };
    let mut lease = Lease::new(&ShardId::from_index(9), ExtendedSequenceNumber::TrimHorizon);
    lease.parent_shard_ids = vec![ShardId::from_index(3), ShardId::from_index(4)];
    lease.hash_key_range = Some(HashKeyRange { start: 5, end: 6 });
    store.create_if_absent(&lease).await.unwrap();
    let lease = store.get(&lease.key).await.unwrap().unwrap();
    let lease = store.take(&lease, "rust-worker").await.unwrap();
    let lease = store
        .checkpoint(
            &lease,
            kcl_core::lease::CheckpointUpdate::Prepare {
                pending: ExtendedSequenceNumber::Sequence {
                    sequence: SequenceNumber::new(SEQ).unwrap(),
                    sub_sequence: 2,
                },
                state: Some(Bytes::from_static(b"st")),
            },
        )
        .await
        .unwrap();
    let lease = store.hand_off(&lease, "other-worker").await.unwrap();
    store
        .set_child_shards(&lease.key, &[ShardId::from_index(10)])
        .await
        .unwrap();
    let item = client
        .get_item()
        .table_name(store.table())
        .key("leaseKey", s(&lease.key))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    let kind = |name: &str| match item.get(name) {
        Some(Av::S(_)) => "S",
        Some(Av::N(_)) => "N",
        Some(Av::B(_)) => "B",
        Some(Av::Ss(_)) => "SS",
        Some(_) => "other",
        None => "absent",
    };
    for (name, expected) in [
        ("leaseKey", "S"),
        ("leaseOwner", "S"),
        ("leaseCounter", "N"),
        ("checkpoint", "S"),
        ("checkpointSubSequenceNumber", "N"),
        ("ownerSwitchesSinceCheckpoint", "N"),
        ("pendingCheckpoint", "S"),
        ("pendingCheckpointSubSequenceNumber", "N"),
        ("pendingCheckpointState", "B"),
        ("parentShardId", "SS"),
        ("childShardIds", "SS"),
        ("startingHashKey", "S"),
        ("endingHashKey", "S"),
        ("checkpointOwner", "S"),
    ] {
        assert_eq!(kind(name), expected, "attribute {name}");
    }
    assert_eq!(item["checkpoint"], s("TRIM_HORIZON"));
    assert_eq!(item["leaseOwner"], s("other-worker"));
    assert_eq!(item["checkpointOwner"], s("rust-worker"));
    assert_eq!(item["startingHashKey"], s("5"));
    let known: Vec<&str> = item.keys().map(String::as_str).collect();
    assert!(
        known
            .iter()
            .all(|k| k.chars().next().unwrap().is_ascii_lowercase()),
        "{known:?}"
    );
}

struct Collect(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl ShardRecordProcessor for Collect {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        self.0.lock().extend(
            input
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A Java fleet checkpointed inside a KPL aggregate (sub-record 3); a kcl-rs worker takes the
/// table over and resumes with sub-record 4. A corrupt item in the same table is reported with
/// its key and does not stop the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_inside_an_aggregate_and_survives_a_corrupt_item() {
    let Some((client, store)) = setup().await else {
        return;
    };
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("compat", 2).unwrap();
    let mut agg = Aggregator::new();
    for i in 0..10 {
        agg.add("key-a", None, Bytes::from(format!("r{i}")))
            .unwrap();
    }
    let a = agg.flush().unwrap();
    let put = kinesis
        .put_record("compat", PutRecordEntry::new("key-a", a.data))
        .await
        .unwrap();
    let other_shard = if put.shard_id == ShardId::from_index(0) {
        ShardId::from_index(1)
    } else {
        ShardId::from_index(0)
    };
    let ranges = HashKeyRange::split_evenly(2);
    let range = |id: &ShardId| ranges[if *id == ShardId::from_index(0) { 0 } else { 1 }];
    put_raw(
        &client,
        store.table(),
        java_item(&[
            ("leaseKey", s(put.shard_id.as_str())),
            ("leaseOwner", s("java-worker-gone")),
            ("leaseCounter", n(40)),
            ("checkpoint", s(&put.sequence_number.to_string())),
            ("checkpointSubSequenceNumber", n(3)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            (
                "startingHashKey",
                s(&range(&put.shard_id).start.to_string()),
            ),
            ("endingHashKey", s(&range(&put.shard_id).end.to_string())),
        ]),
    )
    .await;
    // The other shard's item is corrupt: a numeric checkpoint and a garbage counter.
    put_raw(
        &client,
        store.table(),
        java_item(&[
            ("leaseKey", s(other_shard.as_str())),
            ("leaseCounter", s("not-a-number")),
            ("checkpoint", n(5)),
        ]),
    )
    .await;
    let listing = store.list().await.unwrap();
    assert_eq!(listing.malformed.len(), 1);
    assert!(
        matches!(&listing.malformed[0], LeaseError::Malformed { key, .. } if *key == other_shard.to_string()),
        "{:?}",
        listing.malformed
    );
    assert!(
        listing.malformed[0]
            .to_string()
            .contains(other_shard.as_str())
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let collected = seen.clone();
    let scheduler = SchedulerBuilder::new(stream, "compat")
        .worker_id("rust-worker")
        .lease_store(Arc::new(store.clone()) as Arc<dyn LeaseStore>)
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(1))
        .retrieval(RetrievalMode::Polling(
            PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
        ))
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Collect(collected.clone()))
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    // The Java worker's lease expires (failover 1 s on this worker's clock), then it is taken.
    for _ in 0..100 {
        if seen.lock().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        *seen.lock(),
        (4..10).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
    let lease = store.get(put.shard_id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: put.sequence_number,
            sub_sequence: 9
        }
    );
}

/// Issue 14 §6: a KCL 3.5 table holds rows that are not leases (worker metrics, the leader
/// lock, migration state). They were warned about as malformed twice per taker cycle; now they
/// are skipped quietly and counted, and the leases we create carry `entityType = LEASE`.
#[tokio::test]
async fn kcl_3_5_rows_that_are_not_leases_are_skipped_quietly() {
    let Some((client, store)) = setup().await else {
        return;
    };
    let table = store.table().to_string();
    for (key, entity) in [
        ("worker-a", "WORKER_METRIC_STATS"),
        ("Leader", "LEADER"),
        ("Migration3.0", "CLIENT_VERSION"),
    ] {
        put_raw(
            &client,
            &table,
            java_item(&[("leaseKey", s(key)), ("entityType", s(entity))]),
        )
        .await;
    }
    let lease = Lease::new(&ShardId::from_index(1), ExtendedSequenceNumber::TrimHorizon);
    store.create_if_absent(&lease).await.unwrap();
    let listing = store.list().await.unwrap();
    assert_eq!(listing.leases.len(), 1);
    assert!(listing.malformed.is_empty(), "{:?}", listing.malformed);
    assert_eq!(listing.other_entities, 3);
    let raw = client
        .get_item()
        .table_name(&table)
        .key("leaseKey", s(&lease.key))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.item().unwrap().get("entityType"), Some(&s("LEASE")));
}

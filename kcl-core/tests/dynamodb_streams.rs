//! DynamoDB Streams in the in-memory engine's DynamoDB Streams mode (issue 28 §2): a disabled
//! stream drains cleanly — every shard read to its end, every lease at SHARD_END, nothing lost —
//! and the table's next stream (re-enabled: a new stream, new label) gets new leases in the same
//! table while the old stream's finished leases are cleaned up. Paused time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kcl_core::dynamodb_streams::{DynamoDbStreamsFaults, InMemoryDynamoDbStreams};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_core::{CancellationToken, async_trait};
use parking_lot::Mutex;

type Seen = Arc<Mutex<Vec<String>>>;

struct Collect(Seen);

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

async fn put(engine: &InMemoryKinesis, stream: &str, values: std::ops::Range<u32>) {
    for v in values {
        engine
            .put_record(
                stream,
                PutRecordEntry::new(
                    format!("item-{}", v % 7),
                    Bytes::from(format!("{stream}:{v}")),
                ),
            )
            .await
            .expect("put");
    }
}

fn scheduler(
    plane: &InMemoryDynamoDbStreams,
    stream: StreamIdentity,
    store: &Arc<InMemoryLeaseStore>,
    seen: &Seen,
) -> kcl_core::scheduler::Scheduler {
    let seen = seen.clone();
    SchedulerBuilder::new(stream, "orders-app")
        .worker_id("w")
        .lease_store(store.clone())
        .kinesis(Arc::new(plane.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .shard_sync_interval(Duration::from_secs(5))
        .processor_factory(move |_: &ShardInfo| Collect(seen.clone()))
        .build()
        .expect("a valid configuration")
}

#[tokio::test(start_paused = true)]
async fn a_disabled_stream_drains_and_the_next_stream_gets_new_leases() {
    let engine = InMemoryKinesis::new();
    let plane = InMemoryDynamoDbStreams::new(engine.clone(), DynamoDbStreamsFaults::default(), 7);
    let first = plane.create_stream("orders-1", 2).unwrap();
    let store = Arc::new(InMemoryLeaseStore::new());
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler(&plane, first.clone(), &store, &seen).run(stop.clone()));
    put(&engine, "orders-1", 0..50).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let open = engine.shards("orders-1", None).unwrap();
    engine.rotate_shard("orders-1", &open[0].id).unwrap();
    put(&engine, "orders-1", 50..100).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The table's stream is turned off: every shard closes with no children.
    engine.disable_stream("orders-1").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let leases = store.list().await.unwrap().leases;
    // The rotated parent's lease is cleaned up once its child started; the two shards open
    // when the stream was disabled keep theirs, at SHARD_END.
    let keys: BTreeSet<String> = leases.iter().map(|l| l.key.clone()).collect();
    let open_at_disable: BTreeSet<String> = engine
        .shards("orders-1", None)
        .unwrap()
        .iter()
        .filter(|s| s.id != open[0].id)
        .map(|s| s.id.to_string())
        .collect();
    assert!(
        keys.is_superset(&open_at_disable),
        "{keys:?} {open_at_disable:?}"
    );
    assert!(
        leases.iter().all(|l| l.is_shard_end()),
        "drained: every lease at SHARD_END: {leases:?}"
    );
    let expected: BTreeSet<String> = (0..100).map(|v| format!("orders-1:{v}")).collect();
    let got: BTreeSet<String> = seen.lock().iter().cloned().collect();
    assert_eq!(
        got, expected,
        "every change of the disabled stream processed"
    );
    assert_eq!(seen.lock().len(), 100, "once each");
    stop.cancel();
    run.await.unwrap().unwrap();

    // Re-enabled: a new stream (new label) for the same table and application.
    let second = plane.create_stream("orders-2", 1).unwrap();
    put(&engine, "orders-2", 0..20).await;
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler(&plane, second, &store, &seen).run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let new: Vec<String> = seen.lock()[100..].to_vec();
    assert_eq!(
        new,
        (0..20).map(|v| format!("orders-2:{v}")).collect::<Vec<_>>()
    );
    let leases = store.list().await.unwrap().leases;
    assert_eq!(
        leases.len(),
        1,
        "the new stream's lease; the old stream's finished leases cleaned up: {leases:?}"
    );
}

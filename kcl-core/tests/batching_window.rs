//! Issue 12 §3: a batching window groups user records (KPL aggregates unpacked) into calls of
//! at most N records / B bytes, accumulating across GetRecords calls for up to T; checkpoints at
//! each call's last sub-record resume exactly; the closed shard's last call carries shard end.
//! In-memory engine and lease store, paused time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kcl_core::aggregation::Aggregator;
use kcl_core::checkpoint::Checkpointer;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_core::shard::BatchingWindow;
use kcl_core::{CancellationToken, async_trait};
use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Calls {
    /// (shard, values, at shard end) per call.
    calls: Vec<(String, Vec<String>, bool)>,
}

struct Recording {
    shard: String,
    calls: Arc<Mutex<Calls>>,
}

#[async_trait]
impl ShardRecordProcessor for Recording {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let values = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        self.calls
            .lock()
            .calls
            .push((self.shard.clone(), values, input.is_at_shard_end));
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Puts `n` values starting at `from`, as aggregates of 5 user records each.
async fn put_aggregated(kinesis: &InMemoryKinesis, from: usize, n: usize) {
    let mut aggregator = Aggregator::new();
    for i in from..from + n {
        aggregator
            .add("key", None, Bytes::from(format!("{i:04}")))
            .unwrap();
        if aggregator.len() == 5 {
            let packed = aggregator.flush().unwrap();
            kinesis
                .put_record("s", PutRecordEntry::new(&packed.partition_key, packed.data))
                .await
                .unwrap();
        }
    }
    assert!(aggregator.is_empty(), "n must be a multiple of 5");
}

fn scheduler(
    kinesis: &InMemoryKinesis,
    store: &Arc<InMemoryLeaseStore>,
    stream: &StreamIdentity,
    calls: &Arc<Mutex<Calls>>,
    window: BatchingWindow,
) -> kcl_core::scheduler::Scheduler {
    let calls = calls.clone();
    // Two Kinesis records (10 user records) per GetRecords: calls must accumulate reads.
    let polling = PollingConfig::default()
        .with_max_records(2)
        .with_idle_time_between_reads(Duration::from_millis(200));
    SchedulerBuilder::new(stream.clone(), "app")
        .lease_store(store.clone())
        .kinesis(Arc::new(kinesis.clone()))
        .retrieval(RetrievalMode::Polling(polling))
        .initial_position(InitialPosition::TrimHorizon)
        .batching_window(window)
        .processor_factory(move |info: &ShardInfo| Recording {
            shard: info.shard_id.to_string(),
            calls: calls.clone(),
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_window_groups_records_across_reads_and_resumes_and_ends_exactly() {
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("s", 1).unwrap();
    let store = Arc::new(InMemoryLeaseStore::new());
    let calls = Arc::new(Mutex::new(Calls::default()));
    let window = BatchingWindow::new(25, 1 << 20, Duration::from_secs(2));

    // 60 user records in 12 aggregates, read 2 aggregates at a time.
    put_aggregated(&kinesis, 0, 60).await;
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler(&kinesis, &store, &stream, &calls, window).run(token.clone()));
    tokio::time::sleep(Duration::from_secs(15)).await;
    token.cancel();
    run.await.unwrap().unwrap();
    let first: Vec<_> = calls.lock().calls.drain(..).collect();
    let sizes: Vec<usize> = first.iter().map(|(_, v, _)| v.len()).collect();
    // 25 + 25 fill the window across reads; the last 10 wait the 2 s window.
    assert_eq!(sizes, [25, 25, 10], "{first:?}");
    let lease = store.get("shardId-000000000000").await.unwrap().unwrap();
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: lease.checkpoint.sequence().unwrap().clone(),
            sub_sequence: 4
        },
        "the checkpoint is the last sub-record of the last call"
    );

    // A checkpoint inside an aggregate (25 = aggregate 5, sub-record 0): restart mid-way by
    // rewriting it, then split the shard; the new run resumes at the next sub-record and the
    // last call of the closed shard carries shard end.
    put_aggregated(&kinesis, 60, 10).await;
    let mut lease = store.get("shardId-000000000000").await.unwrap().unwrap();
    store.delete(&lease).await.unwrap();
    lease.owner = None;
    lease.checkpoint = mid_aggregate(&kinesis, 5).await;
    store.create_if_absent(&lease).await.unwrap();
    kinesis
        .split_shard_evenly("s", &kcl_core::model::ShardId::new("shardId-000000000000"))
        .unwrap();
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler(&kinesis, &store, &stream, &calls, window).run(token.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    token.cancel();
    run.await.unwrap().unwrap();
    let second: Vec<_> = calls
        .lock()
        .calls
        .iter()
        .filter(|(s, _, _)| s == "shardId-000000000000")
        .cloned()
        .collect();
    let values: Vec<String> = second.iter().flat_map(|(_, v, _)| v.clone()).collect();
    let expected: Vec<String> = (26..70).map(|i| format!("{i:04}")).collect();
    assert_eq!(
        values, expected,
        "resumed after sub-record 0 of aggregate 5"
    );
    assert!(second.iter().all(|(_, v, _)| v.len() <= 25));
    let ends: Vec<bool> = second.iter().map(|(_, _, end)| *end).collect();
    assert_eq!(ends.iter().filter(|e| **e).count(), 1, "{second:?}");
    assert!(
        ends.last().copied().unwrap(),
        "shard end comes with the last call"
    );
    let lease = store.get("shardId-000000000000").await.unwrap().unwrap();
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::ShardEnd);
}

/// The position of sub-record 0 of the `n`-th aggregate (0-based) in the shard.
async fn mid_aggregate(kinesis: &InMemoryKinesis, n: usize) -> ExtendedSequenceNumber {
    use kcl_core::kinesis::KinesisDataPlane;
    use kcl_core::model::{ShardId, StartingPosition};
    let stream = kinesis.describe_stream("s").unwrap().identity;
    let it = kinesis
        .get_shard_iterator(
            &stream,
            &ShardId::new("shardId-000000000000"),
            &StartingPosition::TrimHorizon,
        )
        .await
        .unwrap();
    let out = kinesis.get_records(&it, 100).await.unwrap();
    ExtendedSequenceNumber::Sequence {
        sequence: out.records[n].sequence_number.clone(),
        sub_sequence: 0,
    }
}

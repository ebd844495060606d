//! How long shards go unprocessed when workers stop and start (issue 15 §2): a rolling restart
//! of a 4-worker fleet on the in-memory engine, under paused time, with a steady trickle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::*;
use crate::checkpoint::Checkpointer;
use crate::engine::{InMemoryKinesis, PutRecordEntry};
use crate::lease::InMemoryLeaseStore;
use crate::model::{InitialPosition, StreamIdentity};
use crate::processor::{ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
use crate::retrieval::PollingConfig;

/// One processed batch: shard, worker, when, and its records (key#value).
type Batch = (String, String, Instant, Vec<String>);

struct Timed {
    shard: String,
    worker: String,
    log: Arc<Mutex<Vec<Batch>>>,
}

#[async_trait]
impl ShardRecordProcessor for Timed {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if input.records.is_empty() {
            return Ok(());
        }
        let records = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        self.log.lock().push((
            self.shard.clone(),
            self.worker.clone(),
            Instant::now(),
            records,
        ));
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn worker(
    kinesis: &InMemoryKinesis,
    store: &Arc<InMemoryLeaseStore>,
    stream: &StreamIdentity,
    id: &str,
    log: &Arc<Mutex<Vec<Batch>>>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<RunReport, SchedulerError>>,
) {
    let (log, name) = (log.clone(), id.to_string());
    let scheduler = SchedulerBuilder::new(stream.clone(), "app")
        .worker_id(id)
        .lease_store(store.clone())
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .retrieval(RetrievalMode::Polling(PollingConfig {
            idle_time_between_reads: Duration::from_millis(200),
            ..Default::default()
        }))
        .processor_factory(move |info: &ShardInfo| Timed {
            shard: info.shard_id.to_string(),
            worker: name.clone(),
            log: log.clone(),
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(scheduler.run(stop)))
}

/// The longest time between two consecutive batches of one shard, with the shard, from `from`.
fn longest_gap(log: &[Batch], from: Instant) -> (Duration, String) {
    let mut last: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut worst = (Duration::ZERO, String::new());
    for (shard, _, at, _) in log.iter().filter(|b| b.2 >= from) {
        if let Some(prev) = last.insert(shard, *at)
            && *at - prev > worst.0
        {
            worst = (*at - prev, shard.clone());
        }
    }
    worst
}

#[tokio::test(start_paused = true)]
async fn a_rolling_restart_leaves_no_shard_idle_for_a_second() {
    crate::lease::coordinator_test_logging();
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("s", 8).unwrap();
    let store = Arc::new(InMemoryLeaseStore::new());
    let log: Arc<Mutex<Vec<Batch>>> = Arc::default();
    // A steady trickle: 32 keys every 100 ms, so every shard has records at every read.
    let producing = CancellationToken::new();
    let producer = {
        let (kinesis, producing) = (kinesis.clone(), producing.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !producing.is_cancelled() {
                for k in 0..32 {
                    let value = format!("k{k}#{sent}");
                    kinesis
                        .put_record(
                            "s",
                            PutRecordEntry::new(format!("k{k}"), Bytes::from(value)),
                        )
                        .await
                        .unwrap();
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };
    let ids = ["w0", "w1", "w2", "w3"];
    let mut running: Vec<_> = ids
        .iter()
        .map(|id| worker(&kinesis, &store, &stream, id, &log))
        .collect();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let owners = |store: &InMemoryLeaseStore| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for l in store.snapshot() {
            *counts.entry(l.owner.unwrap_or_default()).or_default() += 1;
        }
        counts
    };
    assert_eq!(
        owners(&store).values().max(),
        Some(&2),
        "{:?}",
        owners(&store)
    );
    let rolling = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let (stop, run) = running.remove(i);
        stop.cancel();
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.aborted, 0);
        assert!(
            store
                .snapshot()
                .iter()
                .all(|l| l.owner.as_deref() != Some(*id)),
            "{id} still owns leases after stopping"
        );
        // The replacement comes up a while later, as a new container would.
        tokio::time::sleep(Duration::from_secs(5)).await;
        running.insert(i, worker(&kinesis, &store, &stream, id, &log));
        tokio::time::sleep(Duration::from_secs(25)).await;
    }
    let (gap, shard) = longest_gap(&log.lock(), rolling);
    assert_eq!(
        owners(&store).values().max(),
        Some(&2),
        "{:?}",
        owners(&store)
    );
    producing.cancel();
    let sent = producer.await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (stop, run) in running {
        stop.cancel();
        run.await.unwrap().unwrap();
    }
    // Every record exactly once: planned hand-offs and graceful steals checkpoint before the
    // next owner starts.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, records) in log.lock().iter() {
        for r in records {
            *seen.entry(r.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len() as u64, 32 * sent, "records lost");
    assert!(seen.values().all(|n| *n == 1), "records processed twice");
    println!(
        "rolling restart of 4 workers: longest gap between batches of one shard {gap:?} ({shard})"
    );
    assert!(gap <= Duration::from_secs(1), "{shard} idle for {gap:?}");
}

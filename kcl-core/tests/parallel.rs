//! Per-key parallelism with a skewed key (90 % of the records): nothing deadlocks, every record
//! is handled once in order per key, other keys run beside the hot one (within the in-flight
//! bound), and the checkpoint reaches the end once the hot key's backlog drains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, Record};
use kcl_core::parallel::{ParallelConfig, RecordContext, RecordHandler, key_parallel};
use kcl_core::processor::ProcessorError;
use kcl_core::scheduler::SchedulerBuilder;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Records handled per key, with the virtual time each finished.
#[derive(Default)]
struct Log(Mutex<BTreeMap<String, Vec<(u64, Instant)>>>);

#[async_trait]
impl RecordHandler for Log {
    async fn handle(&self, _: &RecordContext, record: &Record) -> Result<(), ProcessorError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let value: u64 = std::str::from_utf8(&record.data)?.parse()?;
        self.0
            .lock()
            .entry(record.partition_key.to_string())
            .or_default()
            .push((value, Instant::now()));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hot_key_neither_deadlocks_nor_starves_the_others() {
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("skew", 1).unwrap();
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..2_000u64 {
        let key = if i % 10 == 0 {
            format!("cold-{}", i % 37)
        } else {
            "hot".to_string()
        };
        kinesis
            .put_record(
                "skew",
                PutRecordEntry::new(&key, Bytes::from(i.to_string())),
            )
            .await
            .unwrap();
        sent.entry(key).or_default().push(i);
    }
    let store = Arc::new(InMemoryLeaseStore::new());
    let log = Arc::new(Log::default());
    let config = ParallelConfig::new(4).with_max_in_flight_records(500);
    let scheduler = SchedulerBuilder::new(stream, "skew")
        .worker_id("w")
        .lease_store(store.clone() as Arc<dyn LeaseStore>)
        .kinesis(Arc::new(kinesis))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(key_parallel(log.clone(), config))
        .build()
        .unwrap();
    let start = Instant::now();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    // The hot key alone needs 1,800 × 5 ms = 9 s of virtual time.
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let log = log.0.lock();
    let handled: BTreeMap<String, Vec<u64>> = log
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|(x, _)| *x).collect()))
        .collect();
    assert_eq!(handled, sent, "every record once, in order per key");
    // Cold keys run beside the hot key rather than after it: each starts within the first
    // second. (They cannot run further ahead than the in-flight bound: that is what bounds memory.)
    let hot_done = log["hot"].last().unwrap().1 - start;
    let cold_first = log
        .iter()
        .filter(|(k, _)| k.starts_with("cold"))
        .map(|(_, v)| v[0].1 - start)
        .max()
        .unwrap();
    assert!(
        cold_first < Duration::from_secs(1),
        "a cold key first finished at {cold_first:?} (hot key done at {hot_done:?})"
    );
    // The checkpoint reached the last record (the watermark caught up once the hot key drained).
    let lease = &store.snapshot()[0];
    let last = lease.checkpoint.sequence().cloned().expect("checkpointed");
    assert!(
        lease.checkpoint.sub_sequence() == 0 && last.to_string().len() == 56,
        "{}",
        lease.checkpoint
    );
}

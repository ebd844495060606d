//! Per-key parallelism with a slow handler (5 ms per record, like a database call): records/s
//! per shard for P = 1, 8, 32, 128, and the checkpoint lag (records done but not yet behind the
//! committed checkpoint). Real time, one shard, 1,000 keys.
//!
//! `cargo bench -p kcl-core --bench parallel`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, Record, SequenceNumber};
use kcl_core::parallel::{ParallelConfig, RecordContext, RecordHandler, key_parallel};
use kcl_core::processor::ProcessorError;
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use tokio_util::sync::CancellationToken;

const WINDOW: Duration = Duration::from_secs(4);

struct SlowHandler(Arc<AtomicU64>);

#[async_trait]
impl RecordHandler for SlowHandler {
    async fn handle(&self, _: &RecordContext, _: &Record) -> Result<(), ProcessorError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn run(p: usize) -> (f64, f64, u64) {
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("par", 1).unwrap();
    let needed = (p as f64 * 200.0 * WINDOW.as_secs_f64() * 1.5) as usize + 1000;
    let mut sequences: Vec<SequenceNumber> = Vec::with_capacity(needed);
    for batch in 0..needed.div_ceil(500) {
        let entries: Vec<_> = (0..500)
            .map(|i| {
                PutRecordEntry::new(
                    format!("key-{}", (batch * 500 + i) % 1000),
                    Bytes::from_static(b"x"),
                )
            })
            .collect();
        for out in kinesis.put_records("par", &entries).await.unwrap() {
            sequences.push(out.unwrap().sequence_number);
        }
    }
    let store = Arc::new(InMemoryLeaseStore::new());
    let handled = Arc::new(AtomicU64::new(0));
    let scheduler = SchedulerBuilder::new(stream, "par")
        .worker_id("w")
        .lease_store(store.clone() as Arc<dyn LeaseStore>)
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .retrieval(RetrievalMode::Polling(
            PollingConfig::default().with_max_records(1000),
        ))
        .processor_factory(key_parallel(
            Arc::new(SlowHandler(handled.clone())),
            ParallelConfig::new(p),
        ))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    // Measure from the first handled record.
    while handled.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (start, base) = (Instant::now(), handled.load(Ordering::Relaxed));
    let (mut lag_sum, mut lag_max, mut samples) = (0u64, 0u64, 0u64);
    while start.elapsed() < WINDOW {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = handled.load(Ordering::Relaxed);
        let committed = store
            .snapshot()
            .first()
            .and_then(|l| l.checkpoint.sequence().cloned())
            .map_or(0, |s| sequences.partition_point(|x| *x <= s) as u64);
        let lag = done.saturating_sub(committed);
        lag_sum += lag;
        lag_max = lag_max.max(lag);
        samples += 1;
    }
    let rate = (handled.load(Ordering::Relaxed) - base) as f64 / start.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    (rate, lag_sum as f64 / samples as f64, lag_max)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "{:>5} {:>14} {:>12} {:>16} {:>16}",
        "P", "records/s", "vs P = 1", "avg lag (recs)", "max lag (recs)"
    );
    let mut base = None;
    for p in [1, 8, 32, 128] {
        let (rate, avg_lag, max_lag) = run(p).await;
        let b = *base.get_or_insert(rate);
        println!(
            "{p:>5} {rate:>14.0} {:>11.1}x {avg_lag:>16.0} {max_lag:>16}",
            rate / b
        );
    }
}

//! Scheduler throughput from the in-memory engine to a no-op processor (1 worker × 64 shards,
//! and 4 workers), and worker memory while holding 1,000 idle shard leases.
//!
//! `cargo bench -p kcl-core --bench scheduler` (see the README). Each measurement runs in its
//! own child process so one does not inflate the other's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, Lease, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, HashKeyRange, InitialPosition, ShardId};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 64;
const RECORDS_PER_SHARD: usize = 40_000;

struct NoOp(Arc<AtomicU64>);

#[async_trait]
impl ShardRecordProcessor for NoOp {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        self.0
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn scheduler(
    kinesis: &InMemoryKinesis,
    store: Arc<dyn LeaseStore>,
    worker: String,
    counter: Arc<AtomicU64>,
    polling: PollingConfig,
) -> kcl_core::scheduler::Scheduler {
    let stream = kinesis.describe_stream("bench").expect("stream").identity;
    SchedulerBuilder::new(stream, "bench")
        .worker_id(worker)
        .lease_store(store)
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .retrieval(RetrievalMode::Polling(polling))
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(NoOp(counter.clone()))
        })
        .build()
        .expect("valid config")
}

/// Leases for every shard, owned round-robin by `workers` (so each starts with its share).
fn preassigned(shards: u32, workers: usize) -> Arc<InMemoryLeaseStore> {
    let store = Arc::new(InMemoryLeaseStore::new());
    for (i, range) in HashKeyRange::split_evenly(shards).into_iter().enumerate() {
        let mut lease = Lease::new(
            &ShardId::from_index(i as u64),
            ExtendedSequenceNumber::TrimHorizon,
        );
        lease.owner = Some(format!("w{}", i % workers));
        lease.hash_key_range = Some(range);
        store.put_unconditionally(lease);
    }
    store
}

async fn throughput(workers: usize) {
    let kinesis = InMemoryKinesis::new();
    kinesis.create_stream("bench", SHARDS).unwrap();
    // 100-byte records, sliced from one buffer, keys spread over the shards.
    let total = SHARDS as usize * RECORDS_PER_SHARD;
    let buffer = Bytes::from(vec![7u8; 100 * 500]);
    let keys: Vec<String> = (0..4096).map(|k| format!("key-{k}")).collect();
    for batch in 0..total / 500 {
        let entries: Vec<PutRecordEntry> = (0..500)
            .map(|i| {
                PutRecordEntry::new(
                    &keys[(batch * 500 + i) % keys.len()],
                    buffer.slice(i * 100..(i + 1) * 100),
                )
            })
            .collect();
        kinesis.put_records("bench", &entries).await.unwrap();
    }
    let store = preassigned(SHARDS, workers);
    let counter = Arc::new(AtomicU64::new(0));
    let polling = PollingConfig::default().with_max_records(10_000);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let runs: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(
                scheduler(
                    &kinesis,
                    store.clone(),
                    format!("w{w}"),
                    counter.clone(),
                    polling.clone(),
                )
                .run(stop.clone()),
            )
        })
        .collect();
    let mut first = None;
    while counter.load(Ordering::Relaxed) < total as u64 {
        if first.is_none() && counter.load(Ordering::Relaxed) > 0 {
            first = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let steady = first.map(|f| f.elapsed()).unwrap_or(elapsed);
    stop.cancel();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    println!(
        "{workers} worker(s) x {SHARDS} shards: {total} records of 100 B in {:.2} s = {:.2} M records/s ({:.2} M/s from the first record on)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6,
        total as f64 / steady.as_secs_f64() / 1e6,
    );
}

async fn idle_rss() {
    const IDLE: u32 = 1_000;
    let kinesis = InMemoryKinesis::new();
    kinesis.create_stream("bench", IDLE).unwrap();
    let store = preassigned(IDLE, 1);
    let before = rss_kib();
    let counter = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        scheduler(
            &kinesis,
            store.clone(),
            "w0".into(),
            counter,
            PollingConfig::default(),
        )
        .run(stop.clone()),
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held = store
        .snapshot()
        .iter()
        .filter(|l| l.owner.as_deref() == Some("w0"))
        .count();
    let after = rss_kib();
    println!(
        "1 worker holding {held} idle shard leases: RSS {:.1} MiB (engine and store of this process before the worker: {:.1} MiB; worker's share {:.1} MiB)",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    stop.cancel();
    run.await.unwrap().unwrap();
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "throughput-1" => rt.block_on(throughput(1)),
        "throughput-4" => rt.block_on(throughput(4)),
        "idle-rss" => rt.block_on(idle_rss()),
        _ => {
            // Run each measurement in a fresh process.
            let exe = std::env::current_exe().unwrap();
            for m in ["idle-rss", "throughput-1", "throughput-4"] {
                let status = std::process::Command::new(&exe).arg(m).status().unwrap();
                assert!(status.success(), "{m} failed");
            }
        }
    }
}

//! DynamoDB Streams rotation hand-over and CPU per change record (issue 28, Benchmarks), on the
//! in-memory engine's DynamoDB Streams mode in virtual time.
//!
//! `cargo bench -p kcl-core --features testing --bench rotation -- [shards] [hours] [idle ms] [workers]`
//! (default 8 shards, 24 hours, and the DynamoDB Streams polling defaults: 1,000 ms between
//! reads). Two workers with default settings (but the idle time) consume a table's stream
//! whose shards each rotate every 4 hours (staggered); the producer writes one change per shard
//! every 100 ms in the two minutes around each rotation and one per minute otherwise. Printed:
//! per rotation, the gap from the parent's last record processed to the child's first, and the
//! child's first record's latency (arrival → processed), as p50 / p99 / max; and DescribeStream
//! calls. Then, separately, CPU per 100,000 change records: 500,000 changes (the adapter's JSON
//! of an order update, 560 bytes) waiting in 8 shards, consumed by two workers whose processor
//! parses each change's JSON (the consumption's CPU time only, the puts excluded).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::dynamodb_streams::{DynamoDbStreamsFaults, InMemoryDynamoDbStreams};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, ShardId};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::SchedulerBuilder;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Per shard: first and last processing instants, and the first record's latency.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    first: Option<Instant>,
    last: Option<Instant>,
    first_latency: Option<Duration>,
}

type Ledger = Arc<Mutex<BTreeMap<ShardId, Seen>>>;

struct Timed {
    shard: ShardId,
    ledger: Ledger,
    engine: InMemoryKinesis,
}

#[async_trait]
impl ShardRecordProcessor for Timed {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if let Some(first) = input.records.first() {
            let now = Instant::now();
            let mut ledger = self.ledger.lock();
            let seen = ledger.entry(self.shard.clone()).or_default();
            if seen.first.is_none() {
                seen.first = Some(now);
                seen.first_latency = self
                    .engine
                    .now()
                    .duration_since(first.approximate_arrival_timestamp)
                    .ok();
            }
            seen.last = Some(now);
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    // `KCL_BENCH_LOG=info` shows the workers' logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KCL_BENCH_LOG"))
        .try_init();
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let shards: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let hours: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(24);
    let idle: Option<u64> = args.next().and_then(|a| a.parse().ok()).filter(|i| *i > 0);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let wall = std::time::Instant::now();
    let (gaps, latencies, records, rotations, describe) =
        rt.block_on(run(shards, hours, idle, workers));
    let mut gaps = gaps;
    gaps.sort();
    let mut latencies = latencies;
    latencies.sort();
    println!(
        "{shards} shards, {workers} workers, {hours} h virtual, idle time between reads {} ms, {rotations} rotations, {records} change records, {:.1} s wall",
        idle.map_or("1000 (default)".to_string(), |i| i.to_string()),
        wall.elapsed().as_secs_f64()
    );
    let show = |name: &str, v: &[Duration]| {
        println!(
            "{name}: p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} rotations measured)",
            percentile(v, 0.5).as_secs_f64(),
            percentile(v, 0.99).as_secs_f64(),
            v.last().copied().unwrap_or_default().as_secs_f64(),
            v.len()
        )
    };
    println!(
        "DescribeStream calls: {} listing pages + {} child-shard queries = {:.0} per hour",
        describe.0,
        describe.1,
        (describe.0 + describe.1) as f64 / hours as f64
    );
    show("parent's last record processed -> child's first", &gaps);
    show("child's first record, arrival -> processed", &latencies);
    let (cpu, consumed) = rt.block_on(backlog(500_000));
    println!(
        "CPU: {:.2} s to consume {consumed} changes = {:.2} CPU-seconds per 100,000 change records (2 workers, in-memory engine and lease store, virtual time)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 100_000.0 / consumed.max(1) as f64
    );
}

/// Consumes `n` changes waiting in 8 shards with two workers; CPU time of the consumption.
async fn backlog(n: u64) -> (Duration, u64) {
    let engine = InMemoryKinesis::new();
    let streams = InMemoryDynamoDbStreams::new(engine.clone(), DynamoDbStreamsFaults::default(), 2);
    let stream = streams.create_stream("backlog", 8).expect("stream");
    // A change as the DynamoDB Streams data plane delivers it (the Java adapter's JSON).
    let data = Bytes::from_static(
        br#"{"eventID":"6e8b1c2f0d5a4b3c9e7f1a2b3c4d5e6f","eventName":"MODIFY","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1","dynamodb":{"ApproximateCreationDateTime":1767225600000,"Keys":{"id":{"S":"order-123456"}},"NewImage":{"id":{"S":"order-123456"},"status":{"S":"SHIPPED"},"total":{"N":"129.90"},"items":{"L":[{"S":"sku-1"},{"S":"sku-2"}]}},"OldImage":{"id":{"S":"order-123456"},"status":{"S":"PAID"},"total":{"N":"129.90"},"items":{"L":[{"S":"sku-1"},{"S":"sku-2"}]}},"SequenceNumber":"4421584500000000017450439091","SizeBytes":212,"StreamViewType":"NEW_AND_OLD_IMAGES"}}"#,
    );
    for i in 0..n {
        engine
            .put_record(
                "backlog",
                PutRecordEntry::new(format!("item-{i}"), data.clone()),
            )
            .await
            .expect("put");
    }
    let store: Arc<dyn LeaseStore> = Arc::new(InMemoryLeaseStore::new());
    let ledger: Ledger = Arc::default();
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu_before = cpu_time();
    let mut workers = Vec::new();
    for w in 0..2 {
        let counted = counted.clone();
        let ledger = ledger.clone();
        let engine = engine.clone();
        let scheduler = SchedulerBuilder::new(stream.clone(), "backlog")
            .worker_id(format!("worker-{w}"))
            .lease_store(store.clone())
            .kinesis(Arc::new(streams.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .processor_factory(move |info: &ShardInfo| Counted {
                inner: Timed {
                    shard: info.shard_id.clone(),
                    ledger: ledger.clone(),
                    engine: engine.clone(),
                },
                counted: counted.clone(),
            })
            .build()
            .expect("a valid configuration");
        let stop = CancellationToken::new();
        workers.push((stop.clone(), tokio::spawn(scheduler.run(stop))));
    }
    while counted.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    for (stop, run) in workers {
        stop.cancel();
        let _ = run.await;
    }
    (cpu, counted.load(std::sync::atomic::Ordering::Relaxed))
}

/// [`Timed`], counting records.
struct Counted {
    inner: Timed,
    counted: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait]
impl ShardRecordProcessor for Counted {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        // What a processor does first: read each change.
        for r in input.records {
            let change: serde_json::Value = serde_json::from_slice(&r.data)?;
            std::hint::black_box(change);
        }
        self.counted.fetch_add(
            input.records.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.inner.process_records(input).await
    }
}

async fn run(
    shards: u32,
    hours: u64,
    idle: Option<u64>,
    worker_count: usize,
) -> (Vec<Duration>, Vec<Duration>, u64, usize, (u64, u64)) {
    let mut polling = PollingConfig::dynamodb_streams();
    if let Some(ms) = idle {
        polling = polling.with_idle_time_between_reads(Duration::from_millis(ms));
    }
    let engine = InMemoryKinesis::new();
    let streams = InMemoryDynamoDbStreams::new(engine.clone(), DynamoDbStreamsFaults::default(), 1);
    let stream = streams.create_stream("table", shards).expect("stream");
    let store: Arc<dyn LeaseStore> = Arc::new(InMemoryLeaseStore::new());
    let ledger: Ledger = Arc::default();
    let mut workers = Vec::new();
    for w in 0..worker_count {
        let ledger = ledger.clone();
        let engine = engine.clone();
        let scheduler = SchedulerBuilder::new(stream.clone(), "rotation")
            .worker_id(format!("worker-{w}"))
            .lease_store(store.clone())
            .kinesis(Arc::new(streams.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .retrieval(polling.clone())
            .processor_factory(move |info: &ShardInfo| Timed {
                shard: info.shard_id.clone(),
                ledger: ledger.clone(),
                engine: engine.clone(),
            })
            .build()
            .expect("a valid configuration");
        let stop = CancellationToken::new();
        workers.push((stop.clone(), tokio::spawn(scheduler.run(stop))));
    }
    let period = Duration::from_secs(4 * 3600);
    let stagger = period / shards;
    let end = Duration::from_secs(hours * 3600);
    let step = Duration::from_millis(100);
    let start = Instant::now();
    // Open shard of each original lineage, and when it next rotates.
    let mut open: Vec<ShardId> = (0..u64::from(shards)).map(ShardId::from_index).collect();
    // A rotation's child has its parent's range: each lineage keeps its first shard's.
    let listed = engine.shards("table", None).expect("shards");
    let ranges: Vec<_> = open
        .iter()
        .map(|id| {
            listed
                .iter()
                .find(|s| s.id == *id)
                .expect("an open shard")
                .hash_key_range
        })
        .collect();
    // Rotations spread evenly over each 4-hour period, the first ones within the first.
    let mut next_rotation: Vec<Duration> = (0..shards).map(|i| stagger * (i + 1)).collect();
    let (mut records, mut rotations) = (0u64, 0usize);
    let mut elapsed = Duration::ZERO;
    while elapsed < end {
        for (lineage, shard) in open.iter_mut().enumerate() {
            // Within a minute of the last rotation or the next.
            let since_last = (next_rotation[lineage] + period).checked_sub(period * 2);
            let busy = next_rotation[lineage].abs_diff(elapsed) <= Duration::from_secs(60)
                || since_last
                    .is_some_and(|t| elapsed >= t && elapsed - t <= Duration::from_secs(60));
            if busy || elapsed.as_millis().is_multiple_of(60_000) {
                // One change on this lineage's open shard (the engine routes by key; the
                // lineage's key is pinned by an explicit hash key inside its range).
                let range = ranges[lineage];
                engine
                    .put_record(
                        "table",
                        PutRecordEntry::new(format!("item-{lineage}"), Bytes::from_static(b"{}"))
                            .with_explicit_hash_key(range.start.to_string()),
                    )
                    .await
                    .expect("put");
                records += 1;
            }
            if elapsed >= next_rotation[lineage] {
                *shard = engine.rotate_shard("table", shard).expect("rotate");
                next_rotation[lineage] += period;
                rotations += 1;
            }
        }
        tokio::time::sleep(step).await;
        elapsed = start.elapsed();
    }
    // Let the last records drain, then stop.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (stop, run) in workers {
        stop.cancel();
        let _ = run.await;
    }
    let ledger = ledger.lock().clone();
    let (mut gaps, mut latencies) = (Vec::new(), Vec::new());
    for shard in engine.shards("table", None).expect("shards") {
        let Some(parent) = shard.parent else { continue };
        let (Some(p), Some(c)) = (ledger.get(&parent), ledger.get(&shard.id)) else {
            continue;
        };
        if let (Some(last), Some(first)) = (p.last, c.first) {
            gaps.push(first.saturating_duration_since(last));
        }
        if let Some(l) = c.first_latency {
            latencies.push(l);
        }
    }
    (
        gaps,
        latencies,
        records,
        rotations,
        streams.describe_calls(),
    )
}

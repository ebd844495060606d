//! Read cadence on the in-memory engine with Kinesis's per-shard quotas on (5 GetRecords/s and
//! 2 MiB/s per shard for all applications together) and a 20 ms round trip, in virtual time:
//!
//! 1. one application on a shard trickling 100 records/s: GetRecords/s and throttled calls;
//! 2. five applications sharing that shard at default settings: the same, per application;
//! 3. catch-up: one application draining a 100,000-record backlog (1 KiB records over 4 shards)
//!    from TRIM_HORIZON: time and records/s, against the best the read quota allows.
//!
//! `cargo bench -p kcl-core --bench cadence` (see the README). Virtual time makes the figures
//! exact and repeatable; they measure the policy (when calls are made), not the CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{
    EngineConfig, InMemoryKinesis, KinesisOperation, PutRecordEntry, QuotaLimits,
};
use kcl_core::fault::FaultAction;
use kcl_core::kinesis::{
    GetRecordsOutput, KinesisDataPlane, KinesisError, ListShardsPage, ListShardsRequest,
    ShardIterator, StreamSummary,
};
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::{InitialPosition, ShardId, StartingPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use tokio_util::sync::CancellationToken;

/// Counts GetRecords calls and throttles of one application.
#[derive(Debug, Clone)]
struct Counting {
    inner: InMemoryKinesis,
    calls: Arc<AtomicU64>,
    throttles: Arc<AtomicU64>,
}

#[async_trait]
impl KinesisDataPlane for Counting {
    fn capabilities(&self) -> kcl_core::kinesis::SourceCapabilities {
        self.inner.capabilities()
    }
    async fn describe_stream(&self, s: &StreamIdentity) -> Result<StreamSummary, KinesisError> {
        KinesisDataPlane::describe_stream(&self.inner, s).await
    }
    async fn list_shards(&self, r: ListShardsRequest) -> Result<ListShardsPage, KinesisError> {
        KinesisDataPlane::list_shards(&self.inner, r).await
    }
    async fn get_shard_iterator(
        &self,
        s: &StreamIdentity,
        shard: &ShardId,
        p: &StartingPosition,
    ) -> Result<ShardIterator, KinesisError> {
        KinesisDataPlane::get_shard_iterator(&self.inner, s, shard, p).await
    }
    async fn get_records(
        &self,
        it: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, KinesisError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = KinesisDataPlane::get_records(&self.inner, it, limit).await;
        if matches!(&out, Err(e) if e.is_throttle()) {
            self.throttles.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

struct Count(Arc<AtomicU64>);

#[async_trait]
impl ShardRecordProcessor for Count {
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

fn engine() -> InMemoryKinesis {
    let kinesis = InMemoryKinesis::with_config(
        EngineConfig::default().with_quotas(Some(QuotaLimits::default())),
    );
    kinesis.faults().with_probability(
        KinesisOperation::GetRecords,
        1.0,
        FaultAction::Delay(Duration::from_millis(20)),
    );
    kinesis
}

struct App {
    counting: Counting,
    processed: Arc<AtomicU64>,
}

fn start(
    kinesis: &InMemoryKinesis,
    stream: &StreamIdentity,
    name: &str,
    stop: &CancellationToken,
) -> App {
    let counting = Counting {
        inner: kinesis.clone(),
        calls: Arc::default(),
        throttles: Arc::default(),
    };
    let processed = Arc::new(AtomicU64::new(0));
    let p = processed.clone();
    let scheduler = SchedulerBuilder::new(stream.clone(), name)
        .worker_id(format!("{name}-w"))
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(Arc::new(counting.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Count(p.clone()))
        })
        .build()
        .expect("scheduler");
    tokio::spawn(scheduler.run(stop.clone()));
    App {
        counting,
        processed,
    }
}

async fn trickle(apps: usize) {
    let kinesis = engine();
    let stream = kinesis.create_stream("s", 1).expect("stream");
    let stop = CancellationToken::new();
    let started: Vec<App> = (0..apps)
        .map(|a| start(&kinesis, &stream, &format!("app{a}"), &stop))
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for a in &started {
        a.counting.calls.store(0, Ordering::Relaxed);
        a.counting.throttles.store(0, Ordering::Relaxed);
    }
    let seconds = 60;
    for i in 0..seconds * 100 {
        kinesis
            .put_record(
                "s",
                PutRecordEntry::new(format!("k{i}"), Bytes::from_static(b"v")),
            )
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls: u64 = started
        .iter()
        .map(|a| a.counting.calls.load(Ordering::Relaxed))
        .sum();
    let throttles: u64 = started
        .iter()
        .map(|a| a.counting.throttles.load(Ordering::Relaxed))
        .sum();
    println!(
        "trickle, {apps} application(s): {:.2} GetRecords/s per application, {throttles} of {calls} calls throttled ({:.1} %)",
        calls as f64 / seconds as f64 / apps as f64,
        100.0 * throttles as f64 / calls.max(1) as f64
    );
    stop.cancel();
}

async fn catch_up() {
    let kinesis = engine();
    let shards = 4;
    let stream = kinesis.create_stream("s", shards).expect("stream");
    let total = 100_000u64;
    let payload = Bytes::from(vec![b'x'; 1024]);
    for i in 0..total {
        // Spread over the shards by key; a put over the write quota waits and goes again.
        while let Err(e) = kinesis
            .put_record("s", PutRecordEntry::new(format!("k{i}"), payload.clone()))
            .await
        {
            assert!(e.is_throttle(), "put: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stop = CancellationToken::new();
    let app = start(&kinesis, &stream, "catchup", &stop);
    let begin = tokio::time::Instant::now();
    let mut first = None;
    while app.processed.load(Ordering::Relaxed) < total {
        if first.is_none() && app.processed.load(Ordering::Relaxed) > 0 {
            first = Some(begin.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = first.unwrap_or_default();
    let drain = begin.elapsed() - first;
    let rate = total as f64 / drain.as_secs_f64();
    let (calls, throttles) = (
        app.counting.calls.load(Ordering::Relaxed),
        app.counting.throttles.load(Ordering::Relaxed),
    );
    // The read quota: 2 MiB/s per shard, and a first call that may take 10 MiB at once.
    let budget = (total as f64 * 1024.0 / f64::from(shards) - 10.0 * 1024.0 * 1024.0)
        / (2.0 * 1024.0 * 1024.0);
    println!(
        "catch-up, 100,000 × 1 KiB over {shards} shards: drained in {:.1} s after the first record ({:.1} s to it), {rate:.0} records/s (the read quota allows it in {budget:.1} s at best); {calls} GetRecords, {throttles} throttled",
        drain.as_secs_f64(),
        first.as_secs_f64(),
    );
    stop.cancel();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        trickle(1).await;
        trickle(5).await;
        catch_up().await;
    });
}

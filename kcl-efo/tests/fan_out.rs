//! Fan-out retrieval on the in-memory engine, under paused time: the scheduler runs unchanged
//! with fan-out (the fleet simulation over many seeds), subscriptions renew with no gap or
//! duplicate, a subscription racing a draining one gets through, and shard end follows splits
//! and merges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{EngineConfig, InMemoryKinesis, PutRecordEntry};
use kcl_core::kinesis::KinesisError;
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::{InitialPosition, ShardId, StartingPosition, StreamIdentity};
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_core::simulation::{RetrievalFactory, SimulationConfig, simulate};
use kcl_core::testing::RecordingLedger;
use kcl_efo::{FanOutClient, FanOutConfig, FanOutRetrieval, InMemoryFanOut, Subscription};
use tokio_util::sync::CancellationToken;

fn fan_out_factory() -> RetrievalFactory {
    RetrievalFactory(Arc::new(
        |kinesis: &InMemoryKinesis, stream: &StreamIdentity| {
            Arc::new(
                FanOutRetrieval::new(
                    Arc::new(InMemoryFanOut(kinesis.clone())),
                    stream.clone(),
                    "sim",
                    FanOutConfig::default(),
                )
                .expect("the default fan-out settings are valid"),
            ) as kcl_core::retrieval::SharedRetrieval
        },
    ))
}

/// Simulated processor panics are expected (the consumer contains them): keep them quiet.
fn quiet_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // `KCL_TEST_LOG=debug` shows the workers' logs (useful with `KCL_SIM_SEED`).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("KCL_TEST_LOG"))
            .with_test_writer()
            .try_init();
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("simulated"))
            {
                default(info);
            }
        }));
    });
}

#[test]
fn the_fleet_simulation_passes_with_fan_out() {
    quiet_simulated_panics();
    let seeds: u64 = std::env::var("KCL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut crashes = 0;
    for seed in 0..seeds {
        let config = SimulationConfig::small(seed).with_retrieval(Some(fan_out_factory()));
        let report = simulate(&config);
        assert!(
            report.passed(),
            "seed {seed}: {:#?}",
            report.ledger.violations
        );
        crashes += report.crashes;
    }
    assert!(crashes > 0);
}

/// Fan-out under a multi-stream fleet simulation: streams added and removed while workers crash
/// (one consumer per stream, registered on first use).
#[test]
fn the_multi_stream_simulation_passes_with_fan_out() {
    quiet_simulated_panics();
    let seeds: u64 = std::env::var("KCL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // `KCL_SIM_SEED=<s>` replays one seed.
    let only: Option<u64> = std::env::var("KCL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for seed in only.map_or(0..seeds, |s| s..s + 1) {
        let config = SimulationConfig::multi_stream(seed).with_retrieval(Some(fan_out_factory()));
        let report = simulate(&config);
        assert!(
            report.passed(),
            "seed {seed}: {:#?}",
            report.ledger.violations
        );
    }
}

/// Counts SubscribeToShard calls.
#[derive(Debug)]
struct Counting {
    inner: InMemoryFanOut,
    subscribes: Arc<AtomicU64>,
}

#[async_trait]
impl FanOutClient for Counting {
    async fn register_consumer(
        &self,
        s: &StreamIdentity,
        n: &str,
    ) -> Result<kcl_efo::ConsumerDescription, KinesisError> {
        self.inner.register_consumer(s, n).await
    }
    async fn describe_consumer(
        &self,
        s: &StreamIdentity,
        n: &str,
    ) -> Result<kcl_efo::ConsumerDescription, KinesisError> {
        self.inner.describe_consumer(s, n).await
    }
    async fn deregister_consumer(&self, arn: &str) -> Result<(), KinesisError> {
        self.inner.deregister_consumer(arn).await
    }
    async fn subscribe(
        &self,
        arn: &str,
        shard: &ShardId,
        p: &StartingPosition,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        let s = self.inner.subscribe(arn, shard, p).await;
        if s.is_ok() {
            self.subscribes.fetch_add(1, Ordering::SeqCst);
        }
        s
    }
}

struct Run {
    kinesis: InMemoryKinesis,
    stream: StreamIdentity,
    ledger: RecordingLedger,
    subscribes: Arc<AtomicU64>,
    fan_out: FanOutRetrieval,
}

fn setup(shards: u32, subscription_ttl: Duration) -> Run {
    let kinesis = InMemoryKinesis::with_config(
        EngineConfig::default().with_subscription_ttl(subscription_ttl),
    );
    let stream = kinesis.create_stream("efo", shards).unwrap();
    let subscribes = Arc::new(AtomicU64::new(0));
    let client = Counting {
        inner: InMemoryFanOut(kinesis.clone()),
        subscribes: subscribes.clone(),
    };
    let fan_out = FanOutRetrieval::new(
        Arc::new(client),
        stream.clone(),
        "app",
        FanOutConfig::default(),
    )
    .expect("the default fan-out settings are valid");
    Run {
        kinesis,
        stream,
        ledger: RecordingLedger::new(),
        subscribes,
        fan_out,
    }
}

impl Run {
    /// Values processed per partition key, in order (the tests use distinct keys per stream).
    fn seen(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ((_, key), values) in self.ledger.by_key() {
            out.entry(key)
                .or_default()
                .extend(values.iter().map(|v| v.parse::<u64>().expect("a number")));
        }
        out
    }
}

fn start(run: &Run) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let scheduler = SchedulerBuilder::new(run.stream.clone(), "app")
        .worker_id("w")
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(Arc::new(run.kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .retrieval(RetrievalMode::Custom(Arc::new(run.fan_out.clone())))
        .parent_shard_poll_interval(Duration::from_millis(200))
        .processor_factory(run.ledger.factory())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    (
        stop,
        tokio::spawn(async move {
            scheduler.run(token).await.unwrap();
        }),
    )
}

async fn put(run: &Run, key: &str, value: u64) {
    run.kinesis
        .put_record(
            "efo",
            PutRecordEntry::new(key, Bytes::from(value.to_string())),
        )
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn ten_renewals_with_no_gap_or_duplicate() {
    let run = setup(1, Duration::from_secs(20));
    let (stop, task) = start(&run);
    let mut expected = Vec::new();
    for v in 0..250 {
        put(&run, "k", v).await;
        expected.push(v);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(run.seen()["k"], expected);
    let subscriptions = run.subscribes.load(Ordering::SeqCst);
    assert!(
        subscriptions >= 11,
        "{subscriptions} subscriptions: at least 10 renewals"
    );
}

#[tokio::test(start_paused = true)]
async fn a_subscription_racing_a_draining_one_gets_through() {
    let run = setup(1, Duration::from_secs(300));
    let arn = run.fan_out.register().await.unwrap();
    // Someone (a previous owner's subscription that has not drained) holds the slot.
    let held = run
        .kinesis
        .subscribe_to_shard(&arn, &ShardId::from_index(0), &StartingPosition::Latest)
        .await
        .unwrap();
    for v in 0..5 {
        put(&run, "k", v).await;
    }
    let (stop, task) = start(&run);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        run.seen().is_empty(),
        "nothing delivered while the slot is taken"
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(run.seen()["k"], vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn shard_end_follows_splits_and_merges() {
    let run = setup(3, Duration::from_secs(300));
    let (stop, task) = start(&run);
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut v = 0;
    for phase in 0..3 {
        for k in 0..12 {
            let key = format!("k{k}");
            put(&run, &key, v).await;
            expected.entry(key).or_default().push(v);
            v += 1;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        match phase {
            0 => {
                run.kinesis
                    .split_shard_evenly("efo", &ShardId::from_index(0))
                    .unwrap();
            }
            1 => {
                run.kinesis
                    .merge_shards("efo", &ShardId::from_index(1), &ShardId::from_index(2))
                    .unwrap();
            }
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        run.seen(),
        expected,
        "every record once, in order per key, across lineage"
    );
}

/// One fan-out retrieval serves a multi-stream scheduler: each stream gets its own registered
/// consumer, and every record of both streams arrives.
#[tokio::test(start_paused = true)]
async fn a_multi_stream_scheduler_reads_every_stream_by_fan_out() {
    use kcl_core::scheduler::{RemovedStreamPolicy, StreamConfig, StreamSet};
    let run = setup(2, Duration::from_secs(300));
    let other = run.kinesis.create_stream("efo-other", 1).unwrap();
    let streams = StreamSet::new(RemovedStreamPolicy::Keep);
    for s in [&run.stream, &other] {
        streams.add(StreamConfig::new(s.clone(), InitialPosition::TrimHorizon));
    }
    let scheduler = SchedulerBuilder::multi_stream(streams, "app")
        .worker_id("w")
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(Arc::new(run.kinesis.clone()))
        .retrieval(RetrievalMode::Custom(Arc::new(run.fan_out.clone())))
        .processor_factory(run.ledger.factory())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    for v in 0..20 {
        for (stream, key) in [("efo", "main"), ("efo-other", "other")] {
            run.kinesis
                .put_record(stream, PutRecordEntry::new(key, Bytes::from(v.to_string())))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let expected: Vec<u64> = (0..20).collect();
    assert_eq!(run.seen()["main"], expected);
    assert_eq!(run.seen()["other"], expected);
    let client = InMemoryFanOut(run.kinesis.clone());
    let main = client.describe_consumer(&run.stream, "app").await.unwrap();
    let second = client.describe_consumer(&other, "app").await.unwrap();
    assert_ne!(main.arn, second.arn, "one consumer per stream");
    assert_eq!(
        run.fan_out.register_stream(&other).await.unwrap(),
        second.arn
    );
}

/// Issue 14 §10: fan-out settings that cannot work are rejected, naming the setting.
#[test]
fn invalid_fan_out_settings_are_rejected() {
    let build = |config: FanOutConfig| {
        FanOutRetrieval::new(
            Arc::new(InMemoryFanOut(InMemoryKinesis::new())),
            StreamIdentity::from_name("s"),
            "app",
            config,
        )
        .map(|_| ())
    };
    assert_eq!(build(FanOutConfig::default()), Ok(()));
    let zero = build(FanOutConfig::default().with_call_timeout(Duration::ZERO)).unwrap_err();
    assert!(zero.to_string().contains("call_timeout"), "{zero}");
    assert!(
        build(FanOutConfig::default().with_event_timeout(Duration::MAX))
            .unwrap_err()
            .to_string()
            .contains("event_timeout")
    );
    assert!(build(FanOutConfig::default().with_min_backoff(Duration::from_secs(20))).is_err());
}

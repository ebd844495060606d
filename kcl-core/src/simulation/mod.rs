//! A deterministic fleet simulation: N workers (full schedulers) on the in-memory engine and
//! lease store under virtual time, driven by a seeded schedule of crashes, restarts, graceful
//! stops, splits, merges, GetRecords throttles, lease-store faults and processor failures. A
//! ledger of every put and every successful `process_records` call checks, after the run:
//!
//! - every record put was processed at least once;
//! - per partition key, records were first processed in put order (within a shard and across
//!   parent → child), with no gap;
//! - no child shard record was processed before every record of its parents;
//! - checkpoints never went backwards;
//! - nothing at or before the checkpoint a processor started from was delivered to it, so
//!   duplicates only occur after the last checkpoint of a worker that crashed or lost a lease
//!   (and a run without crashes, losses or store faults has none);
//! - no lease was deleted while its shard had records put and not yet processed;
//! - every graceful stop returned within the shutdown timeout plus one lease-store call
//!   timeout ([`STOP_SLACK`]), whatever was in flight;
//! - no worker owned (and so renewed) more leases than it ran consumers for longer than
//!   [`UNCONSUMED_LEASE_BOUND`];
//! - no two processors worked on one shard at the same time, unless the earlier one crashed or
//!   lost its lease: a graceful hand-off waits for a batch in progress, even one of
//!   [`SLOW_BATCH`], longer than the hand-off timeout.
//!
//! Besides crashes and reshards, the world misbehaves as AWS does: calls hang far past their
//! deadlines (and may land afterwards), listings miss shards, ResourceNotFound comes for shards
//! that exist, and iterators expire mid-read; and processors now and then take longer over a
//! batch than the hand-off timeout.
//!
//! With `streams > 1` the workers run one multi-stream scheduler over several streams while the
//! schedule adds and removes streams (the last one joins mid-run); the same invariants hold per
//! stream (keys and shards are named after their stream in the ledger), and every stream is
//! tracked again for the drain.
//!
//! The same seed replays the same run exactly (the report carries a digest of the ledger).
//! `kcl-core/tests/simulation.rs` runs 200 seeds in CI; see the README for longer runs.

mod cost;
mod ledger;
mod scale;
mod store;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cost::{CostStore, Units, item_bytes};
pub use ledger::LedgerSummary;
pub use scale::{PhaseReport, ScaleConfig, simulate_scale};

use self::ledger::{Ledger, Processed, Put};
use self::store::RecordingStore;
use crate::checkpoint::Checkpointer;
use crate::engine::{InMemoryKinesis, KinesisOperation, PutRecordEntry};
use crate::fault::FaultAction;
use crate::kinesis::{KinesisError, ShardFilter};
use crate::lease::{InMemoryLeaseStore, LeaseError, LeaseOperation};
use crate::model::{ExtendedSequenceNumber, InitialPosition, ShardId, StreamIdentity};
use crate::parallel::{KeyParallelProcessor, ParallelConfig, RecordContext, RecordHandler};
use crate::processor::{
    InitializationInput, LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo,
    ShardRecordProcessor,
};
use crate::retrieval::{PollingConfig, SharedRetrieval};
use crate::scheduler::{
    RemovedStreamPolicy, RetrievalMode, SchedulerBuilder, StreamConfig, StreamSet,
};

/// Shape of a simulated run. Probabilities apply per schedule step.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SimulationConfig {
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Worker slots.
    pub workers: usize,
    /// Shards at the start.
    pub shards: u32,
    /// Partition keys the producer cycles through.
    pub keys: usize,
    /// Virtual time with faults and events, before the drain phase.
    pub duration: Duration,
    /// Time between schedule steps (each step puts a few records and may fire events).
    pub step: Duration,
    /// Per step: a running worker crashes (no hand-off).
    pub crash: f64,
    /// Per step: a running worker stops gracefully.
    pub stop: f64,
    /// Per step: a stopped worker starts again.
    pub restart: f64,
    /// Per step: an open shard splits, or two adjacent ones merge.
    pub reshard: f64,
    /// Per call: `process_records` fails (an error or a panic).
    pub processor_failure: f64,
    /// Per call: a lease-store operation throttles, fails, fails after landing, or is delayed.
    pub store_fault: f64,
    /// Per call: GetRecords is throttled.
    pub throttle: f64,
    /// Per call: a lease-store or Kinesis call hangs for [`HANG`], far past its deadline (a
    /// lease-store write then lands late).
    pub hang: f64,
    /// Per step: the next ListShards listings miss a random open shard.
    pub listing_gap: f64,
    /// Per call: GetShardIterator or GetRecords answers ResourceNotFound for a shard that exists.
    pub transient_not_found: f64,
    /// Per call: GetRecords finds its iterator expired.
    pub iterator_expiry: f64,
    /// Per call: `process_records` takes [`SLOW_BATCH`], longer than the graceful hand-off
    /// timeout.
    pub slow_batch: f64,
    /// The retrieval the workers use; `None` for polling.
    pub retrieval: Option<RetrievalFactory>,
    /// Run a per-record handler with this per-key parallelism (`kcl_core::parallel`) instead
    /// of a batch processor.
    pub parallelism: Option<usize>,
    /// Streams; more than one runs a multi-stream scheduler (`SchedulerBuilder::multi_stream`).
    pub streams: usize,
    /// Per step (multi-stream): a stream other than the first is removed from the tracked set,
    /// or added back if it was not tracked.
    pub stream_churn: f64,
    /// Per step: every worker crashes and the fleet stays down for [`OUTAGE`], longer than the
    /// streams' retention (set to [`RETENTION`] in runs with outages), so records are trimmed
    /// before they are read. Workers then run with
    /// [`TrimmedDataPolicy::ContinueAtTrimHorizon`](crate::retrieval::TrimmedDataPolicy), and
    /// every record never processed must lie in a gap a processor was told of
    /// ([`ShardRecordProcessor::records_trimmed`]): nothing passed over silently.
    pub outage: f64,
    /// Consume the streams as DynamoDB Streams ([`crate::dynamodb_streams`]), with these
    /// faults: shards rotate (one child each) instead of splitting and merging, pages come back
    /// empty, listings show closed parents open. `None`: Kinesis.
    pub dynamodb_streams: Option<crate::dynamodb_streams::DynamoDbStreamsFaults>,
    /// Run your processors instead of the simulation's own batch processor. Each is wrapped:
    /// the wrapper injects the simulated failures and slow batches, delegates every callback,
    /// and records a batch in the ledger only when your `process_records` returned `Ok` — so
    /// the invariants (nothing lost, order per key, checkpoints fenced, one processor per shard
    /// at a time) are checked against your checkpointing. Records are `key#index` text.
    pub processor: Option<UserProcessors>,
}

impl SimulationConfig {
    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`workers`](Self::workers).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets [`shards`](Self::shards).
    pub fn with_shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Sets [`keys`](Self::keys).
    pub fn with_keys(mut self, keys: usize) -> Self {
        self.keys = keys;
        self
    }

    /// Sets [`duration`](Self::duration).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Sets [`step`](Self::step).
    pub fn with_step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Sets [`crash`](Self::crash).
    pub fn with_crash(mut self, crash: f64) -> Self {
        self.crash = crash;
        self
    }

    /// Sets [`stop`](Self::stop).
    pub fn with_stop(mut self, stop: f64) -> Self {
        self.stop = stop;
        self
    }

    /// Sets [`restart`](Self::restart).
    pub fn with_restart(mut self, restart: f64) -> Self {
        self.restart = restart;
        self
    }

    /// Sets [`reshard`](Self::reshard).
    pub fn with_reshard(mut self, reshard: f64) -> Self {
        self.reshard = reshard;
        self
    }

    /// Sets [`processor_failure`](Self::processor_failure).
    pub fn with_processor_failure(mut self, processor_failure: f64) -> Self {
        self.processor_failure = processor_failure;
        self
    }

    /// Sets [`store_fault`](Self::store_fault).
    pub fn with_store_fault(mut self, store_fault: f64) -> Self {
        self.store_fault = store_fault;
        self
    }

    /// Sets [`throttle`](Self::throttle).
    pub fn with_throttle(mut self, throttle: f64) -> Self {
        self.throttle = throttle;
        self
    }

    /// Sets [`hang`](Self::hang).
    pub fn with_hang(mut self, hang: f64) -> Self {
        self.hang = hang;
        self
    }

    /// Sets [`listing_gap`](Self::listing_gap).
    pub fn with_listing_gap(mut self, listing_gap: f64) -> Self {
        self.listing_gap = listing_gap;
        self
    }

    /// Sets [`transient_not_found`](Self::transient_not_found).
    pub fn with_transient_not_found(mut self, transient_not_found: f64) -> Self {
        self.transient_not_found = transient_not_found;
        self
    }

    /// Sets [`iterator_expiry`](Self::iterator_expiry).
    pub fn with_iterator_expiry(mut self, iterator_expiry: f64) -> Self {
        self.iterator_expiry = iterator_expiry;
        self
    }

    /// Sets [`slow_batch`](Self::slow_batch).
    pub fn with_slow_batch(mut self, slow_batch: f64) -> Self {
        self.slow_batch = slow_batch;
        self
    }

    /// Sets [`retrieval`](Self::retrieval).
    pub fn with_retrieval(mut self, retrieval: Option<RetrievalFactory>) -> Self {
        self.retrieval = retrieval;
        self
    }

    /// Sets [`parallelism`](Self::parallelism).
    pub fn with_parallelism(mut self, parallelism: Option<usize>) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets [`streams`](Self::streams).
    pub fn with_streams(mut self, streams: usize) -> Self {
        self.streams = streams;
        self
    }

    /// Sets [`stream_churn`](Self::stream_churn).
    pub fn with_stream_churn(mut self, stream_churn: f64) -> Self {
        self.stream_churn = stream_churn;
        self
    }

    /// Sets [`outage`](Self::outage).
    pub fn with_outage(mut self, outage: f64) -> Self {
        self.outage = outage;
        self
    }

    /// Sets [`dynamodb_streams`](Self::dynamodb_streams).
    pub fn with_dynamodb_streams(
        mut self,
        faults: Option<crate::dynamodb_streams::DynamoDbStreamsFaults>,
    ) -> Self {
        self.dynamodb_streams = faults;
        self
    }

    /// Sets [`processor`](Self::processor).
    pub fn with_processor(mut self, processor: Option<UserProcessors>) -> Self {
        self.processor = processor;
        self
    }
}

/// A function building the user's processor for a shard, for [`SimulationConfig::processor`].
pub type BuildProcessor = dyn Fn(&ShardInfo) -> Box<dyn ShardRecordProcessor> + Send + Sync;

/// The user's processors for a simulated fleet.
#[derive(Clone)]
pub struct UserProcessors(pub Arc<BuildProcessor>);

impl UserProcessors {
    /// From any factory closure.
    pub fn new<P: ShardRecordProcessor>(
        factory: impl Fn(&ShardInfo) -> P + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(move |info| Box::new(factory(info))))
    }
}

impl std::fmt::Debug for UserProcessors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserProcessors")
    }
}

/// A function building a retrieval from the engine and stream of a simulated fleet.
pub type BuildRetrieval =
    dyn Fn(&InMemoryKinesis, &StreamIdentity) -> SharedRetrieval + Send + Sync;

/// Builds the retrieval of a simulated fleet from its engine and stream (e.g. enhanced fan-out
/// over the engine's push subscriptions).
#[derive(Clone)]
pub struct RetrievalFactory(pub Arc<BuildRetrieval>);

impl std::fmt::Debug for RetrievalFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetrievalFactory")
    }
}

impl SimulationConfig {
    /// A small fleet with every kind of event, suitable for hundreds of seeds.
    pub fn small(seed: u64) -> Self {
        Self {
            seed,
            workers: 3,
            shards: 3,
            keys: 12,
            duration: Duration::from_secs(120),
            step: Duration::from_secs(1),
            crash: 0.03,
            stop: 0.03,
            restart: 0.2,
            reshard: 0.04,
            processor_failure: 0.05,
            store_fault: 0.02,
            throttle: 0.05,
            hang: 0.002,
            listing_gap: 0.05,
            transient_not_found: 0.01,
            iterator_expiry: 0.01,
            slow_batch: 0.002,
            retrieval: None,
            parallelism: None,
            streams: 1,
            stream_churn: 0.0,
            outage: 0.0,
            dynamodb_streams: None,
            processor: None,
        }
    }

    /// [`small`](Self::small) on DynamoDB Streams: shards rotate about every 25 s (a rotation
    /// every few hours, sped up), pages come back empty, listings show closed parents open.
    pub fn dynamodb_streams(seed: u64) -> Self {
        Self {
            reshard: 0.04,
            dynamodb_streams: Some(
                crate::dynamodb_streams::DynamoDbStreamsFaults::default()
                    .with_empty_page(0.05)
                    .with_inconsistent_listing(0.2),
            ),
            ..Self::small(seed)
        }
    }

    /// [`small`](Self::small) over three streams: the last joins mid-run, and streams are
    /// removed and added back as the run goes.
    pub fn multi_stream(seed: u64) -> Self {
        Self {
            streams: 3,
            stream_churn: 0.04,
            ..Self::small(seed)
        }
    }
}

/// How long a slow `process_records` call takes: past the hand-off timeout (the failover time).
pub const SLOW_BATCH: Duration = Duration::from_secs(15);

/// How long an injected hang lasts: longer than any deadline of the simulated workers.
pub const HANG: Duration = Duration::from_secs(120);

/// The streams' retention in runs with outages.
pub const RETENTION: Duration = Duration::from_secs(60);

/// How long an outage keeps every worker down: longer than [`RETENTION`].
pub const OUTAGE: Duration = Duration::from_secs(90);

/// Outages start only after this much of the run, once every shard was checkpointed.
pub const OUTAGE_NOT_BEFORE: Duration = Duration::from_secs(30);

/// The simulated workers' failover time.
pub const FAILOVER: Duration = Duration::from_secs(10);

/// The simulated workers' shutdown timeout.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a graceful stop may take beyond [`SHUTDOWN_TIMEOUT`]: one lease-store call timeout (the
/// default, failover / 3), the documented slack.
pub const STOP_SLACK: Duration = Duration::from_millis(3334);

/// How long a worker may own more leases than it runs consumers for (leases in hand-off, whose
/// previous owner still reads them, not counted): a lease just taken waits for its consumer to
/// start, and a consumer that failed restarts or releases its lease; 3 × the failover time
/// covers both.
pub const UNCONSUMED_LEASE_BOUND: Duration = Duration::from_secs(30);

/// What a simulated run did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulationReport {
    /// The seed.
    pub seed: u64,
    /// Ledger counts and invariant violations.
    pub ledger: LedgerSummary,
    /// Worker crashes.
    pub crashes: u64,
    /// Graceful stops.
    pub stops: u64,
    /// Restarts.
    pub restarts: u64,
    /// Splits and merges.
    pub reshards: u64,
    /// Listing gaps injected.
    pub listing_gaps: u64,
    /// `process_records` calls that took [`SLOW_BATCH`].
    pub slow_batches: u64,
    /// Kinesis faults injected: throttles, hangs, ResourceNotFound, expired iterators, broken
    /// subscriptions.
    pub kinesis_faults: u64,
    /// The longest graceful stop.
    pub longest_stop: Duration,
    /// Streams removed from or added to the tracked set mid-run.
    pub stream_changes: u64,
    /// Outages (the whole fleet down for longer than the retention).
    pub outages: u64,
    /// Shards in the final lineage.
    pub shards: usize,
    /// Digest of the processing ledger: equal for equal seeds.
    pub digest: u64,
}

impl SimulationReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.ledger.violations.is_empty()
    }
}

struct Shared {
    ledger: Mutex<Ledger>,
    rng: Mutex<SmallRng>,
    processor_failure: f64,
    slow_batch: f64,
    slow_batches: std::sync::atomic::AtomicU64,
    /// Committed checkpoints (the store's log), to tell a user's batch that failed after its
    /// checkpoint landed.
    checkpoints: store::CheckpointLog,
}

struct SimProcessor {
    shared: Arc<Shared>,
    incarnation: u64,
    shard: ShardId,
    lease_key: String,
    started_at: ExtendedSequenceNumber,
    /// The user's processor, when the run tests one.
    inner: Option<Box<dyn ShardRecordProcessor>>,
}

#[async_trait]
impl ShardRecordProcessor for SimProcessor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.started_at = input.checkpoint.clone();
        match &mut self.inner {
            Some(inner) => inner.initialize(input).await,
            None => Ok(()),
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let roll: f64 = self.shared.rng.lock().random();
        if roll < self.shared.processor_failure / 2.0 {
            return Err("simulated processor error".into());
        }
        if roll < self.shared.processor_failure {
            panic!("simulated processor panic");
        }
        let began = tokio::time::Instant::now();
        if self.shared.rng.lock().random_bool(self.shared.slow_batch) {
            self.shared
                .slow_batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(SLOW_BATCH).await;
        }
        let records = input
            .records
            .iter()
            .map(|r| {
                let text = std::str::from_utf8(&r.data).expect("simulation data is text");
                let (key, index) = text.rsplit_once('#').expect("key#index");
                (
                    key.to_string(),
                    index.parse().expect("index"),
                    r.extended_sequence_number(),
                )
            })
            .collect::<Vec<_>>();
        if records.is_empty() {
            return Ok(());
        }
        let processed = |records| Processed {
            incarnation: self.incarnation,
            shard: self.shard.clone(),
            started_at: self.started_at.clone(),
            records,
            during: (began, tokio::time::Instant::now()),
        };
        if let Some(inner) = &mut self.inner {
            // Recorded once the user's processor says the batch is processed: it returned Ok,
            // or a checkpoint at or past the batch's last record landed while it ran (the
            // user declared the batch processed, even if the call then failed — e.g. that
            // checkpoint's write landed but reported an error).
            let logged = self.shared.checkpoints.lock().len();
            let last = records.last().map(|r| r.2.clone());
            let result = inner.process_records(input).await;
            let declared = result.is_ok()
                || self.shared.checkpoints.lock()[logged..]
                    .iter()
                    .any(|(key, c)| {
                        *key == self.lease_key && last.as_ref().is_some_and(|l| c >= l)
                    });
            if declared {
                let entry = processed(records);
                self.shared.ledger.lock().processed.push(entry);
            }
            return result;
        }
        let entry = processed(records);
        self.shared.ledger.lock().processed.push(entry);
        // Checkpoint most batches; leaving some unchecked widens the windows for duplicates.
        if self.shared.rng.lock().random_bool(0.8) {
            let _ = input.checkpointer.checkpoint().await;
        }
        Ok(())
    }

    async fn records_trimmed(&mut self, gap: &crate::retrieval::TrimmedGap) {
        self.shared
            .ledger
            .lock()
            .mark_gap(self.shard.clone(), gap.clone());
        if let Some(inner) = &mut self.inner {
            inner.records_trimmed(gap).await;
        }
    }

    async fn lease_lost(&mut self, input: LeaseLostInput) {
        self.shared
            .ledger
            .lock()
            .interrupted
            .insert(self.incarnation);
        if let Some(inner) = &mut self.inner {
            inner.lease_lost(input).await;
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        match &mut self.inner {
            Some(inner) => inner.shard_ended(checkpointer).await,
            None => {
                checkpointer.checkpoint().await?;
                Ok(())
            }
        }
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        match &mut self.inner {
            Some(inner) => inner.shutdown_requested(checkpointer).await,
            None => {
                checkpointer.checkpoint().await?;
                Ok(())
            }
        }
    }
}

/// The per-record handler of key-parallel runs: one ledger entry per record.
struct SimHandler {
    shared: Arc<Shared>,
    incarnation: u64,
    multi: bool,
}

#[async_trait]
impl RecordHandler for SimHandler {
    async fn handle(
        &self,
        context: &RecordContext,
        record: &crate::model::Record,
    ) -> Result<(), ProcessorError> {
        let roll: f64 = self.shared.rng.lock().random();
        if roll < self.shared.processor_failure / 2.0 {
            return Err("simulated handler error".into());
        }
        if roll < self.shared.processor_failure {
            panic!("simulated handler panic");
        }
        // A little work, so records of different keys overlap.
        tokio::time::sleep(Duration::from_millis(u64::from(
            record.data.len() as u8 % 7,
        )))
        .await;
        let text = std::str::from_utf8(&record.data).expect("simulation data is text");
        let (key, index) = text.rsplit_once('#').expect("key#index");
        self.shared.ledger.lock().processed.push(Processed {
            incarnation: self.incarnation,
            shard: ledger_shard(
                self.multi,
                &context.shard.stream.name,
                &context.shard.shard_id,
            ),
            started_at: context.started_at.clone(),
            records: vec![(
                key.to_string(),
                index.parse().expect("index"),
                record.extended_sequence_number(),
            )],
            // Per-record handlers are not timed: parallel mode overlaps by design.
            during: (tokio::time::Instant::now(), tokio::time::Instant::now()),
        });
        Ok(())
    }
}

/// A shard as the ledger names it: with several streams, prefixed by its stream.
fn ledger_shard(multi: bool, stream: &str, shard: &ShardId) -> ShardId {
    if multi {
        ShardId::new(format!("{stream}/{shard}"))
    } else {
        shard.clone()
    }
}

struct Worker {
    stop: CancellationToken,
    run: JoinHandle<()>,
    incarnation: u64,
    status: crate::scheduler::SchedulerStatus,
    /// Since when it owns more leases than it runs consumers.
    short_since: Option<tokio::time::Instant>,
}

/// Runs one simulated fleet on a fresh single-threaded runtime with paused time.
pub fn simulate(config: &SimulationConfig) -> SimulationReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(config.clone()))
}

async fn run(config: SimulationConfig) -> SimulationReport {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let kinesis = InMemoryKinesis::new();
    let ddb = config.dynamodb_streams.map(|faults| {
        crate::dynamodb_streams::InMemoryDynamoDbStreams::new(
            kinesis.clone(),
            faults,
            config.seed ^ 5,
        )
    });
    let plane: Arc<dyn crate::kinesis::KinesisDataPlane> = match &ddb {
        Some(d) => Arc::new(d.clone()),
        None => Arc::new(kinesis.clone()),
    };
    let multi = config.streams > 1;
    let names: Vec<String> = (0..config.streams.max(1))
        .map(|i| {
            if i == 0 {
                "sim".to_string()
            } else {
                format!("sim-{i}")
            }
        })
        .collect();
    let streams: Vec<StreamIdentity> = names
        .iter()
        .map(|n| match &ddb {
            Some(d) => d.create_stream(n, config.shards).expect("stream"),
            None => kinesis.create_stream(n, config.shards).expect("stream"),
        })
        .collect();
    let stream = streams[0].clone();
    // Multi-stream: the last stream joins mid-run (at a churn step, or for the drain).
    let tracked = StreamSet::new(RemovedStreamPolicy::Keep);
    let mut is_tracked: Vec<bool> = (0..streams.len())
        .map(|i| !multi || i + 1 < streams.len())
        .collect();
    let track = |i: usize| {
        tracked.add(StreamConfig::new(
            streams[i].clone(),
            InitialPosition::TrimHorizon,
        ))
    };
    for i in (0..streams.len()).filter(|i| is_tracked[*i]) {
        track(i);
    }
    if config.outage > 0.0 {
        for n in &names {
            kinesis
                .set_retention_period(n, RETENTION)
                .expect("the stream exists");
        }
    }
    kinesis.faults().reseed(config.seed ^ 1);
    let inner = Arc::new(InMemoryLeaseStore::with_seed(config.seed ^ 2));
    let checkpoint_log = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::new(Shared {
        ledger: Mutex::new(Ledger::default()),
        rng: Mutex::new(SmallRng::seed_from_u64(config.seed ^ 3)),
        processor_failure: config.processor_failure,
        slow_batch: config.slow_batch,
        slow_batches: Default::default(),
        checkpoints: checkpoint_log.clone(),
    });
    let store = Arc::new(RecordingStore {
        inner: inner.clone(),
        log: checkpoint_log.clone(),
        shared: shared.clone(),
        multi,
    });
    if config.throttle > 0.0 {
        kinesis.faults().with_probability(
            KinesisOperation::GetRecords,
            config.throttle,
            FaultAction::Fail(KinesisError::throughput_exceeded("simulated")),
        );
    }
    if config.throttle > 0.0 {
        // Fan-out: subscriptions break mid-stream, and resubscribing meets a draining one.
        kinesis.faults().with_probability(
            KinesisOperation::SubscriptionEvent,
            config.throttle,
            FaultAction::Fail(KinesisError::unavailable("simulated read timeout")),
        );
        kinesis.faults().with_probability(
            KinesisOperation::SubscribeToShard,
            config.throttle,
            FaultAction::Fail(KinesisError::in_use("simulated draining subscription")),
        );
    }
    let hang = FaultAction::Delay(HANG);
    if config.hang > 0.0 {
        for op in LeaseOperation::ALL {
            inner
                .faults()
                .with_probability(op, config.hang, FaultAction::Delay(HANG));
        }
        for op in [
            KinesisOperation::ListShards,
            KinesisOperation::GetShardIterator,
            KinesisOperation::GetRecords,
            // Fan-out: a hung subscription set-up, and a subscription that goes silent.
            KinesisOperation::SubscribeToShard,
            KinesisOperation::SubscriptionEvent,
        ] {
            kinesis
                .faults()
                .with_probability(op, config.hang, hang.clone());
        }
    }
    let not_found = || {
        FaultAction::Fail(KinesisError::not_found(
            "simulated transient ResourceNotFound",
        ))
    };
    if config.transient_not_found > 0.0 {
        for op in [
            KinesisOperation::GetShardIterator,
            KinesisOperation::GetRecords,
        ] {
            kinesis
                .faults()
                .with_probability(op, config.transient_not_found, not_found());
        }
    }
    if config.iterator_expiry > 0.0 {
        kinesis.faults().with_probability(
            KinesisOperation::GetRecords,
            config.iterator_expiry,
            FaultAction::Fail(KinesisError::expired_iterator("simulated expiry mid-read")),
        );
    }
    if config.store_fault > 0.0 {
        // The takers' eventually consistent listings answer stale as often as a call fails.
        inner.stale_listings(config.store_fault);
        let p = config.store_fault / 4.0;
        for op in LeaseOperation::ALL {
            let f = inner.faults();
            f.with_probability(op, p, FaultAction::Fail(LeaseError::throttled("simulated")));
            f.with_probability(
                op,
                p,
                FaultAction::Fail(LeaseError::unavailable("simulated")),
            );
            f.with_probability(
                op,
                p,
                FaultAction::FailAfterApplying(LeaseError::unavailable("simulated timeout")),
            );
            f.with_probability(op, p, FaultAction::Delay(Duration::from_secs(2)));
        }
    }

    let retrieval = config.retrieval.as_ref().map(|f| (f.0)(&kinesis, &stream));
    let parallelism = config.parallelism;
    let mut next_incarnation = 0u64;
    let start_worker = |slot: usize, incarnation: u64| -> Worker {
        let shared = shared.clone();
        let user = config.processor.clone();
        let builder = if multi {
            SchedulerBuilder::multi_stream(tracked.clone(), "sim")
        } else {
            SchedulerBuilder::new(stream.clone(), "sim")
                .initial_position(InitialPosition::TrimHorizon)
        };
        let scheduler = builder
            .worker_id(format!("worker-{slot}"))
            .lease_store(store.clone())
            .kinesis(plane.clone())
            .failover_time(FAILOVER)
            .shutdown_timeout(SHUTDOWN_TIMEOUT)
            .parent_shard_poll_interval(Duration::from_millis(500))
            .shard_sync_interval(Duration::from_secs(10))
            .retrieval(match &retrieval {
                Some(r) => RetrievalMode::Custom(r.clone()),
                None => RetrievalMode::Polling(PollingConfig {
                    idle_time_between_reads: Duration::from_millis(200),
                    max_records: 50,
                    ..Default::default()
                }),
            })
            .seed(incarnation)
            .trimmed_data(if config.outage > 0.0 {
                crate::retrieval::TrimmedDataPolicy::ContinueAtTrimHorizon
            } else {
                crate::retrieval::TrimmedDataPolicy::Stop
            })
            .processor_factory(move |info: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                match parallelism {
                    Some(p) => Box::new(KeyParallelProcessor::new(
                        Arc::new(SimHandler {
                            shared: shared.clone(),
                            incarnation,
                            multi,
                        }),
                        ParallelConfig {
                            min_backoff: Duration::from_millis(50),
                            max_in_flight_records: 64,
                            ..ParallelConfig::new(p)
                        },
                    )),
                    None => Box::new(SimProcessor {
                        shared: shared.clone(),
                        incarnation,
                        shard: ledger_shard(multi, &info.stream.name, &info.shard_id),
                        lease_key: info.lease_key.clone(),
                        started_at: ExtendedSequenceNumber::TrimHorizon,
                        inner: user.as_ref().map(|u| (u.0)(info)),
                    }),
                }
            })
            .build()
            .expect("a valid simulation config");
        let status = scheduler.status();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let run = tokio::spawn(async move {
            let _ = scheduler.run(token).await;
        });
        Worker {
            stop,
            run,
            incarnation,
            status,
            short_since: None,
        }
    };

    let mut workers: Vec<Option<Worker>> = Vec::new();
    for slot in 0..config.workers {
        workers.push(Some(start_worker(slot, next_incarnation)));
        next_incarnation += 1;
    }
    let (mut crashes, mut stops, mut restarts, mut reshards, mut stream_changes) = (0, 0, 0, 0, 0);
    let mut listing_gaps = 0;
    let (mut outages, mut outage_until) = (0, None);
    let mut longest_stop = Duration::ZERO;
    let mut timing_violations: Vec<String> = Vec::new();
    let mut counters = BTreeMap::new();
    let mut indices: BTreeMap<String, u64> = BTreeMap::new();
    let steps = (config.duration.as_secs_f64() / config.step.as_secs_f64()) as u64;
    for step_no in 0..steps as u32 {
        // A few records per step.
        for _ in 0..rng.random_range(1..6) {
            let target = if multi {
                rng.random_range(0..names.len())
            } else {
                0
            };
            let key = if multi {
                format!("{}:k{}", names[target], rng.random_range(0..config.keys))
            } else {
                format!("k{}", rng.random_range(0..config.keys))
            };
            let index = indices.entry(key.clone()).or_insert(0);
            let data = Bytes::from(format!("{key}#{index}"));
            // The producer retries until Kinesis takes the record, as a real one would.
            loop {
                match kinesis
                    .put_record(&names[target], PutRecordEntry::new(&key, data.clone()))
                    .await
                {
                    Ok(out) => {
                        shared.ledger.lock().puts.push(Put {
                            key: key.clone(),
                            index: *index,
                            sequence: out.sequence_number,
                            shard: ledger_shard(multi, &names[target], &out.shard_id),
                        });
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            *index += 1;
        }
        if config.outage > 0.0 {
            let now = tokio::time::Instant::now();
            match outage_until {
                Some(until) if now >= until => {
                    for (slot, w) in workers.iter_mut().enumerate() {
                        *w = Some(start_worker(slot, next_incarnation));
                        next_incarnation += 1;
                    }
                    outage_until = None;
                }
                Some(_) => {}
                // Not in the first 30 s: a lease still at TRIM_HORIZON when its shard's oldest
                // records are trimmed is a gap nothing can see yet (docs/processing.md).
                None if step_no * config.step >= OUTAGE_NOT_BEFORE
                    && rng.random_bool(config.outage) =>
                {
                    for w in workers.iter_mut().filter_map(Option::take) {
                        w.run.abort();
                        let _ = w.run.await;
                        shared.ledger.lock().interrupted.insert(w.incarnation);
                    }
                    outage_until = Some(now + OUTAGE);
                    outages += 1;
                }
                None => {}
            }
        }
        let slot = rng.random_range(0..workers.len());
        let roll: f64 = if outage_until.is_some() {
            // Down: no crash, stop or restart until the outage ends.
            1.0
        } else {
            rng.random()
        };
        match workers[slot].take() {
            Some(w) if roll < config.crash => {
                w.run.abort();
                let _ = w.run.await;
                shared.ledger.lock().interrupted.insert(w.incarnation);
                crashes += 1;
            }
            Some(w) if roll < config.crash + config.stop => {
                let took = stop_gracefully(w).await;
                longest_stop = longest_stop.max(took);
                if took > SHUTDOWN_TIMEOUT + STOP_SLACK {
                    timing_violations.push(format!(
                        "worker-{slot} took {took:?} to stop (bound {:?})",
                        SHUTDOWN_TIMEOUT + STOP_SLACK
                    ));
                }
                stops += 1;
            }
            Some(w) => workers[slot] = Some(w),
            None if roll < config.restart => {
                workers[slot] = Some(start_worker(slot, next_incarnation));
                next_incarnation += 1;
                restarts += 1;
            }
            None => {}
        }
        if multi && rng.random_bool(config.stream_churn) {
            let i = rng.random_range(1..streams.len());
            if is_tracked[i] {
                tracked.remove(&names[i]);
            } else {
                track(i);
            }
            is_tracked[i] = !is_tracked[i];
            stream_changes += 1;
        }
        let resharded = if multi {
            rng.random_range(0..names.len())
        } else {
            0
        };
        if rng.random_bool(config.reshard)
            && let Ok(open) = kinesis.shards(&names[resharded], Some(&ShardFilter::AtLatest))
        {
            let name = &names[resharded];
            let mut open = open;
            open.sort_by_key(|s| s.hash_key_range);
            let i = rng.random_range(0..open.len());
            let merged = rng.random_bool(0.5) && i + 1 < open.len() && open.len() > 2;
            let done = if ddb.is_some() {
                // DynamoDB Streams: a rotation, one child.
                kinesis.rotate_shard(name, &open[i].id).is_ok()
            } else if merged {
                kinesis
                    .merge_shards(name, &open[i].id, &open[i + 1].id)
                    .is_ok()
            } else {
                open.len() < 8 && kinesis.split_shard_evenly(name, &open[i].id).is_ok()
            };
            reshards += u64::from(done);
            if done {
                // Gaps model listings that miss open shards; a shard that closes is listed (as
                // closed) again. A finished shard missing alone is not modelled: see the README.
                kinesis.clear_listing_gaps();
            }
        }
        if rng.random_bool(config.listing_gap) {
            let s = rng.random_range(0..streams.len());
            // Open shards: what a lost page or a listing right after a reshard misses. (A closed
            // shard vanishing alone is trimming, which these runs do not do.)
            if let Ok(all) = kinesis.shards(&names[s], Some(&ShardFilter::AtLatest))
                && !all.is_empty()
            {
                let shard = &all[rng.random_range(0..all.len())].id;
                kinesis.miss_in_next_listings(&names[s], shard, rng.random_range(1..4));
                listing_gaps += 1;
            }
        }
        tokio::time::sleep(config.step).await;
        check_consumers(&mut workers, &inner, &mut counters, &mut timing_violations);
    }

    // Drain: faults off, every worker up, until everything was processed (or 10 minutes).
    let kinesis_faults = kinesis.faults().injected() + ddb.as_ref().map_or(0, |d| d.injected());
    kinesis.faults().clear();
    kinesis.clear_listing_gaps();
    inner.faults().clear();
    for i in (0..streams.len()).filter(|i| !is_tracked[*i]) {
        track(i);
    }
    for (slot, w) in workers.iter_mut().enumerate() {
        if w.is_none() {
            *w = Some(start_worker(slot, next_incarnation));
            next_incarnation += 1;
        }
    }
    let total = shared.ledger.lock().puts.len();
    for _ in 0..600 {
        let done = {
            let l = shared.ledger.lock();
            let processed: std::collections::BTreeSet<(&str, u64)> = l
                .processed
                .iter()
                .flat_map(|p| p.records.iter().map(|(k, i, _)| (k.as_str(), *i)))
                .collect();
            processed.len() >= total
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for w in workers.iter_mut().filter_map(Option::take) {
        longest_stop = longest_stop.max(stop_gracefully(w).await);
    }

    let mut lineage: BTreeMap<ShardId, Vec<ShardId>> = BTreeMap::new();
    for (name, s) in names.iter().zip(&streams) {
        for shard in kinesis.shards(&s.name, None).unwrap_or_default() {
            lineage.insert(
                ledger_shard(multi, name, &shard.id),
                shard
                    .parents()
                    .map(|p| ledger_shard(multi, name, p))
                    .collect(),
            );
        }
    }
    let ledger = shared.ledger.lock();
    let checkpoints = checkpoint_log.lock().clone();
    let mut summary = ledger.check(&lineage, &checkpoints);
    summary.violations.extend(timing_violations);
    if crashes == 0
        && config.store_fault == 0.0
        && ledger.interrupted.is_empty()
        && summary.duplicates > 0
    {
        summary.violations.push(format!(
            "{} duplicates in a run with no crash, loss or store fault",
            summary.duplicates
        ));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for p in &ledger.processed {
        (p.incarnation, p.shard.as_str(), &p.records).hash(&mut hasher);
    }
    SimulationReport {
        seed: config.seed,
        ledger: summary,
        crashes,
        stops,
        restarts,
        reshards,
        listing_gaps,
        slow_batches: shared
            .slow_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        kinesis_faults,
        longest_stop,
        stream_changes,
        outages,
        shards: lineage.len(),
        digest: hasher.finish(),
    }
}

/// Cancels a worker and waits for `run` to return; how long that took.
async fn stop_gracefully(w: Worker) -> Duration {
    let start = tokio::time::Instant::now();
    w.stop.cancel();
    let _ = w.run.await;
    start.elapsed()
}

/// Flags a worker that has renewed more leases than it runs consumers for longer than
/// [`UNCONSUMED_LEASE_BOUND`]: a lease renewed with nobody reading it is a stuck shard. A lease
/// counts as renewed by its owner while its counter changed within the failover time (one left
/// to expire keeps its owner's name until someone takes it).
fn check_consumers(
    workers: &mut [Option<Worker>],
    store: &InMemoryLeaseStore,
    counters: &mut BTreeMap<String, (u64, tokio::time::Instant)>,
    violations: &mut Vec<String>,
) {
    let leases = store.snapshot();
    let now = tokio::time::Instant::now();
    for l in &leases {
        let e = counters.entry(l.key.clone()).or_insert((l.counter, now));
        if e.0 != l.counter {
            *e = (l.counter, now);
        }
    }
    let renewed = |key: &str| counters.get(key).is_some_and(|(_, t)| now - *t < FAILOVER);
    for (slot, w) in workers.iter_mut().enumerate() {
        let Some(w) = w else { continue };
        if !w.status.has_synced() || w.status.is_draining() {
            w.short_since = None;
            continue;
        }
        let id = format!("worker-{slot}");
        let owned: Vec<&str> = leases
            .iter()
            .filter(|l| {
                // A lease in hand-off (`checkpointOwner` set) is still read by its previous
                // owner until it lets go.
                l.owner.as_deref() == Some(id.as_str())
                    && l.checkpoint_owner.is_none()
                    && !l.is_shard_end()
                    && renewed(&l.key)
            })
            .map(|l| l.key.as_str())
            .collect();
        let owned_keys = owned.join(", ");
        let owned = owned.len();
        if owned <= w.status.consumers() {
            w.short_since = None;
            continue;
        }
        let since = *w.short_since.get_or_insert(now);
        if now - since > UNCONSUMED_LEASE_BOUND {
            violations.push(format!(
                "{id} owned {owned} leases ({owned_keys}) with {} consumers for over {UNCONSUMED_LEASE_BOUND:?}",
                w.status.consumers()
            ));
            // Once per episode.
            w.short_since = Some(now);
        }
    }
}

//! Records trimmed (past the stream's retention) before they were read are never passed over
//! silently (issue 28 §3). A lease checkpointed at a record that has since been trimmed, on a
//! Kinesis-like stream (a trimmed position is answered from the oldest record) and on a
//! DynamoDB-Streams-like one (it is an error): by default the shard stops, keeps its lease and
//! shows in the status and metrics until an operator moves the checkpoint; opted in, the gap is
//! counted and processing continues at the oldest record. In-memory engine, paused time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry, TrimmedReads};
use kcl_core::lease::{CheckpointUpdate, InMemoryLeaseStore, Lease, LeaseStore};
use kcl_core::model::{
    ExtendedSequenceNumber, InitialPosition, SequenceNumber, ShardId, StreamIdentity,
};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::TrimmedDataPolicy;
use kcl_core::scheduler::{SchedulerBuilder, SchedulerStatus};
use kcl_core::{CancellationToken, async_trait};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

const KEY: &str = "shardId-000000000000";

/// One recorder for the whole test binary; tests tell their series apart by worker id.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
        handle
    })
}

/// Sum of the series of `name` whose labels contain all of `parts`.
fn metric(name: &str, parts: &[&str]) -> f64 {
    prometheus()
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Debug, Default)]
struct Processed(Mutex<Vec<String>>);

struct Recorder(Arc<Processed>);

#[async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        self.0.0.lock().extend(
            input
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A one-shard stream with a one-hour retention: r0..r9 put at the start, r10..r14 half an
/// hour later, then 40 minutes pass, so r0..r9 are trimmed. The lease's checkpoint is r2.
struct World {
    kinesis: InMemoryKinesis,
    stream: StreamIdentity,
    store: Arc<InMemoryLeaseStore>,
    seqs: Vec<SequenceNumber>,
}

impl World {
    async fn new(reads: TrimmedReads, checkpoint_at: usize) -> Self {
        prometheus();
        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", 1).unwrap();
        kinesis
            .set_retention_period("s", Duration::from_secs(3600))
            .unwrap();
        kinesis.set_trimmed_reads("s", reads).unwrap();
        let mut seqs = Vec::new();
        for i in 0..15 {
            if i == 10 {
                tokio::time::advance(Duration::from_secs(1800)).await;
            }
            let out = kinesis
                .put_record("s", PutRecordEntry::new("k", Bytes::from(format!("r{i}"))))
                .await
                .unwrap();
            seqs.push(out.sequence_number);
        }
        tokio::time::advance(Duration::from_secs(2400)).await;
        let store = Arc::new(InMemoryLeaseStore::new());
        let checkpoint = ExtendedSequenceNumber::Sequence {
            sequence: seqs[checkpoint_at].clone(),
            sub_sequence: 0,
        };
        store
            .create_if_absent(&Lease::new(&ShardId::from_index(0), checkpoint))
            .await
            .unwrap();
        Self {
            kinesis,
            stream,
            store,
            seqs,
        }
    }

    fn builder(
        &self,
        worker: &str,
        policy: TrimmedDataPolicy,
        seen: &Arc<Processed>,
    ) -> SchedulerBuilder {
        let seen = seen.clone();
        SchedulerBuilder::new(self.stream.clone(), "app")
            .worker_id(worker)
            .lease_store(self.store.clone())
            .kinesis(Arc::new(self.kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .trimmed_data(policy)
            .processor_factory(move |_: &ShardInfo| Recorder(seen.clone()))
    }

    async fn lease(&self) -> Lease {
        self.store.get(KEY).await.unwrap().unwrap()
    }

    fn retained(&self) -> Vec<String> {
        (10..15).map(|i| format!("r{i}")).collect()
    }
}

/// Runs `builder` until `check` holds (checked each virtual second, at most 60 s), then stops
/// it; returns whether `check` held.
async fn run_until(
    builder: SchedulerBuilder,
    mut check: impl FnMut(&SchedulerStatus) -> bool,
) -> bool {
    let scheduler = builder.build().unwrap();
    let status = scheduler.status();
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    let mut held = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if check(&status) {
            held = true;
            break;
        }
    }
    token.cancel();
    run.await.unwrap().unwrap();
    assert!(
        status.stopped_shards().is_empty(),
        "nothing stays stopped after the run"
    );
    held
}

#[tokio::test(start_paused = true)]
async fn kinesis_a_trimmed_checkpoint_stops_the_shard_and_keeps_its_lease() {
    let w = World::new(TrimmedReads::FromOldest, 2).await;
    let seen = Arc::new(Processed::default());
    let worker = "stop-kinesis";
    let mut stopped = Vec::new();
    let held = run_until(
        w.builder(worker, TrimmedDataPolicy::Stop, &seen),
        |status| {
            stopped = status.stopped_shards();
            !stopped.is_empty() && !status.is_ready()
        },
    )
    .await;
    assert!(
        held,
        "the shard showed as stopped and the worker as not ready"
    );
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].lease_key, KEY);
    let reason = &stopped[0].reason;
    assert!(
        reason.contains(&w.seqs[2].to_string()) && reason.contains(&w.seqs[10].to_string()),
        "the reason names the lost range (after r2, before r10): {reason}"
    );
    assert!(
        seen.0.lock().is_empty(),
        "nothing after the gap was processed"
    );
    let worker_label = format!("WorkerIdentifier=\"{worker}\"");
    assert_eq!(
        metric("TrimmedData", &[&worker_label, "Outcome=\"stopped\""]),
        1.0
    );
    assert_eq!(
        w.lease().await.checkpoint.sequence(),
        Some(&w.seqs[2]),
        "the checkpoint did not move past the gap"
    );
}

#[tokio::test(start_paused = true)]
async fn the_stopped_shard_keeps_its_lease_until_an_operator_moves_the_checkpoint() {
    let w = World::new(TrimmedReads::FromOldest, 2).await;
    let seen = Arc::new(Processed::default());
    let worker = "stop-then-rewind";
    let scheduler = w
        .builder(worker, TrimmedDataPolicy::Stop, &seen)
        .failover_time(Duration::from_secs(10))
        .build()
        .unwrap();
    let status = scheduler.status();
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    for _ in 0..60 {
        if !status.stopped_shards().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(status.stopped_shards().len(), 1, "the shard stopped");
    // Stopped for a while: the lease stays with the worker (renewed), nothing is processed.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let lease = w.lease().await;
    assert_eq!(lease.owner.as_deref(), Some(worker));
    assert!(seen.0.lock().is_empty());
    let worker_label = format!("WorkerIdentifier=\"{worker}\"");
    assert_eq!(metric("ShardStopped", &[&worker_label]), 1.0);

    // What `kclctl rewind --to trim-horizon` does: take the lease, commit, release.
    let taken = w.store.take(&lease, "operator").await.unwrap();
    let written = w
        .store
        .checkpoint(
            &taken,
            CheckpointUpdate::Commit(ExtendedSequenceNumber::TrimHorizon),
        )
        .await
        .unwrap();
    w.store.evict(&written).await.unwrap();

    for _ in 0..60 {
        if seen.0.lock().len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(*seen.0.lock(), w.retained(), "resumed at the trim horizon");
    assert!(status.stopped_shards().is_empty() && status.is_ready());
    assert_eq!(metric("ShardStopped", &[&worker_label]), 0.0);
    token.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn kinesis_opted_in_the_gap_is_counted_and_processing_continues_at_the_oldest_record() {
    let w = World::new(TrimmedReads::FromOldest, 2).await;
    let seen = Arc::new(Processed::default());
    let worker = "continue-kinesis";
    let done = run_until(
        w.builder(worker, TrimmedDataPolicy::ContinueAtTrimHorizon, &seen),
        |status| {
            assert!(status.stopped_shards().is_empty());
            seen.0.lock().len() >= 5
        },
    )
    .await;
    assert!(done);
    assert_eq!(*seen.0.lock(), w.retained());
    let worker_label = format!("WorkerIdentifier=\"{worker}\"");
    assert_eq!(
        metric("TrimmedData", &[&worker_label, "Outcome=\"continued\""]),
        1.0
    );
    assert_eq!(w.lease().await.checkpoint.sequence(), Some(&w.seqs[14]));
}

#[tokio::test(start_paused = true)]
async fn a_source_that_reports_trimming_stops_the_shard_too() {
    let w = World::new(TrimmedReads::Fail, 2).await;
    let seen = Arc::new(Processed::default());
    let mut stopped = Vec::new();
    let held = run_until(
        w.builder("stop-reported", TrimmedDataPolicy::Stop, &seen),
        |status| {
            stopped = status.stopped_shards();
            !stopped.is_empty()
        },
    )
    .await;
    assert!(held);
    let reason = &stopped[0].reason;
    assert!(
        reason.contains(&w.seqs[2].to_string()) && reason.contains("trim horizon"),
        "the reason names where the gap starts and what the source said: {reason}"
    );
    assert!(seen.0.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_source_that_reports_trimming_continues_at_its_trim_horizon_when_opted_in() {
    let w = World::new(TrimmedReads::Fail, 2).await;
    let seen = Arc::new(Processed::default());
    let worker = "continue-reported";
    let done = run_until(
        w.builder(worker, TrimmedDataPolicy::ContinueAtTrimHorizon, &seen),
        |_| seen.0.lock().len() >= 5,
    )
    .await;
    assert!(done);
    assert_eq!(*seen.0.lock(), w.retained());
    let worker_label = format!("WorkerIdentifier=\"{worker}\"");
    assert_eq!(
        metric("TrimmedData", &[&worker_label, "Outcome=\"continued\""]),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_retained_checkpoint_is_no_gap() {
    for reads in [TrimmedReads::FromOldest, TrimmedReads::Fail] {
        let w = World::new(reads, 11).await;
        let seen = Arc::new(Processed::default());
        let worker = format!("retained-{reads:?}");
        let done = run_until(
            w.builder(&worker, TrimmedDataPolicy::Stop, &seen),
            |status| {
                assert!(status.stopped_shards().is_empty());
                seen.0.lock().len() >= 3
            },
        )
        .await;
        assert!(done);
        assert_eq!(*seen.0.lock(), ["r12", "r13", "r14"]);
        let worker_label = format!("WorkerIdentifier=\"{worker}\"");
        assert_eq!(metric("TrimmedData", &[&worker_label]), 0.0);
    }
}

//! Scheduler tests on the in-memory engine and lease store, under paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::*;
use crate::aggregation::Aggregator;
use crate::checkpoint::Checkpointer;
use crate::engine::{InMemoryKinesis, PutRecordEntry};
use crate::lease::{InMemoryLeaseStore, Lease, LeaseStore};
use crate::model::{ExtendedSequenceNumber, InitialPosition, StreamIdentity};
use crate::processor::{ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
use crate::shard::{DeadLetterHandler, FailurePolicy, ProcessorFailure};

/// Every record a processor handled, in order, per shard: (partition key, data).
#[derive(Debug, Default)]
struct Ledger {
    processed: BTreeMap<String, Vec<(String, String)>>,
    calls: u64,
    lost: Vec<String>,
    shutdowns: Vec<String>,
    ended: Vec<String>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

struct Recorder {
    shard: String,
    ledger: SharedLedger,
    fail_every: Option<u64>,
    calls: Arc<AtomicU64>,
    checkpoint: bool,
}

#[async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
            if n.is_multiple_of(2) {
                panic!("injected panic on call {n}");
            }
            return Err(format!("injected failure on call {n}").into());
        }
        {
            let mut l = self.ledger.lock();
            l.calls += 1;
            let entry = l.processed.entry(self.shard.clone()).or_default();
            for r in input.records {
                entry.push((
                    r.partition_key.to_string(),
                    String::from_utf8_lossy(&r.data).into_owned(),
                ));
            }
        }
        if self.checkpoint {
            input.checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn lease_lost(&mut self, _input: crate::processor::LeaseLostInput) {
        self.ledger.lock().lost.push(self.shard.clone());
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.ledger.lock().ended.push(self.shard.clone());
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.ledger.lock().shutdowns.push(self.shard.clone());
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

struct Setup {
    kinesis: InMemoryKinesis,
    store: Arc<InMemoryLeaseStore>,
    stream: StreamIdentity,
    ledger: SharedLedger,
}

impl Setup {
    fn new(shards: u32) -> Self {
        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", shards).unwrap();
        Self {
            kinesis,
            store: Arc::new(InMemoryLeaseStore::new()),
            stream,
            ledger: Arc::default(),
        }
    }

    fn builder(&self, worker: &str, fail_every: Option<u64>) -> SchedulerBuilder {
        let ledger = self.ledger.clone();
        let calls = Arc::new(AtomicU64::new(0));
        SchedulerBuilder::new(self.stream.clone(), "app")
            .worker_id(worker)
            .lease_store(self.store.clone())
            .kinesis(Arc::new(self.kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .processor_factory(move |info: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(Recorder {
                    shard: info.shard_id.to_string(),
                    ledger: ledger.clone(),
                    fail_every,
                    calls: calls.clone(),
                    checkpoint: true,
                })
            })
    }

    async fn put(
        &self,
        keys: usize,
        per_key: usize,
        offset: usize,
    ) -> BTreeMap<String, Vec<String>> {
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..per_key {
            for k in 0..keys {
                let key = format!("k{k}");
                let value = format!("{}", offset + i);
                self.kinesis
                    .put_record("s", PutRecordEntry::new(&key, Bytes::from(value.clone())))
                    .await
                    .unwrap();
                sent.entry(key).or_default().push(value);
            }
        }
        sent
    }

    /// Records processed per partition key, across shards in lineage order (shard ids increase
    /// along lineage in the in-memory engine).
    fn by_key(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for records in self.ledger.lock().processed.values() {
            for (k, v) in records {
                out.entry(k.clone()).or_default().push(v.clone());
            }
        }
        out
    }
}

fn merge(
    mut a: BTreeMap<String, Vec<String>>,
    b: BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    for (k, v) in b {
        a.entry(k).or_default().extend(v);
    }
    a
}

#[tokio::test(start_paused = true)]
async fn processes_every_record_in_order_across_a_split() {
    let s = Setup::new(2);
    let sent = s.put(10, 20, 0).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(s.builder("w1", None).build().unwrap().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.kinesis
        .split_shard_evenly("s", &crate::model::ShardId::from_index(0))
        .unwrap();
    let sent = merge(sent, s.put(10, 20, 100).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.end, RunEnd::ShutdownRequested);
    assert_eq!(report.shards_ended, 1);
    assert_eq!(s.by_key(), sent);
    let leases = s.store.snapshot();
    let parent = leases
        .iter()
        .find(|l| l.key == "shardId-000000000000")
        .unwrap();
    assert!(parent.is_shard_end());
    assert_eq!(parent.child_shard_ids.len(), 2);
    assert!(
        leases.iter().all(|l| l.owner.is_none()),
        "leases released at shutdown: {leases:?}"
    );
    assert!(
        leases
            .iter()
            .filter(|l| l.key != parent.key)
            .all(|l| l.checkpoint.sequence().is_some())
    );
}

#[tokio::test(start_paused = true)]
async fn a_processor_failing_every_third_call_loses_nothing() {
    let s = Setup::new(4);
    let mut sent = BTreeMap::new();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        s.builder("w1", Some(3))
            .build()
            .unwrap()
            .run(shutdown.clone()),
    );
    for round in 0..20 {
        sent = merge(sent, s.put(8, 5, round * 10).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        s.by_key(),
        sent,
        "every record processed exactly once, in order"
    );
}

#[tokio::test(start_paused = true)]
async fn skip_policy_skips_and_stop_policy_releases() {
    let s = Setup::new(1);
    let sent = s.put(1, 3, 0).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        s.builder("w1", Some(1))
            .failure_policy(FailurePolicy::Skip)
            .build()
            .unwrap()
            .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(s.by_key().is_empty(), "every batch failed and was skipped");
    let lease = &s.store.snapshot()[0];
    assert!(
        lease.checkpoint.sequence().is_some(),
        "skipped batches are checkpointed past at shutdown"
    );
    drop(sent);

    let s = Setup::new(1);
    s.put(1, 3, 0).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        s.builder("w1", Some(1))
            .failure_policy(FailurePolicy::StopShard)
            .build()
            .unwrap()
            .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lease = &s.store.snapshot()[0];
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::TrimHorizon,
        "nothing checkpointed"
    );
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

#[derive(Debug, Default)]
struct Dlq(Mutex<Vec<(usize, ProcessorFailure)>>);

#[async_trait]
impl DeadLetterHandler for Dlq {
    async fn handle(
        &self,
        _shard: &ShardInfo,
        records: &[crate::model::Record],
        failure: &ProcessorFailure,
    ) -> Result<(), ProcessorError> {
        self.0.lock().push((records.len(), failure.clone()));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letter_policy_hands_failed_batches_over() {
    let s = Setup::new(1);
    s.put(1, 4, 0).await;
    let dlq = Arc::new(Dlq::default());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        s.builder("w1", Some(1))
            .failure_policy(FailurePolicy::DeadLetter(dlq.clone()))
            .build()
            .unwrap()
            .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let got = dlq.0.lock().clone();
    assert_eq!(got.iter().map(|(n, _)| n).sum::<usize>(), 4);
    assert!(matches!(
        got[0].1,
        ProcessorFailure::Error(_) | ProcessorFailure::Panic(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn resumes_inside_an_aggregate_from_a_sub_sequence_checkpoint() {
    let s = Setup::new(1);
    let mut agg = Aggregator::new();
    for i in 0..10 {
        agg.add("key", None, Bytes::from(format!("{i}"))).unwrap();
    }
    let a = agg.flush().unwrap();
    let put = s
        .kinesis
        .put_record("s", PutRecordEntry::new(&a.partition_key, a.data))
        .await
        .unwrap();
    // A previous worker processed sub-records 0..=3 and checkpointed there.
    let mut lease = crate::lease::Lease::new(
        &put.shard_id,
        ExtendedSequenceNumber::Sequence {
            sequence: put.sequence_number.clone(),
            sub_sequence: 3,
        },
    );
    lease.hash_key_range = Some(crate::model::HashKeyRange::FULL);
    s.store.put_unconditionally(lease);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(s.builder("w1", None).build().unwrap().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let got: Vec<String> = s.by_key()["key"].clone();
    assert_eq!(got, (4..10).map(|i| i.to_string()).collect::<Vec<_>>());
    let stored = &s.store.snapshot()[0];
    assert_eq!(
        stored.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: put.sequence_number,
            sub_sequence: 9
        }
    );
}

#[tokio::test(start_paused = true)]
async fn two_workers_share_and_hand_over_on_shutdown() {
    let s = Setup::new(8);
    let sent = s.put(16, 10, 0).await;
    let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
    let r1 = tokio::spawn(s.builder("w1", None).build().unwrap().run(t1.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r2 = tokio::spawn(s.builder("w2", None).build().unwrap().run(t2.clone()));
    tokio::time::sleep(Duration::from_secs(40)).await;
    let owners: Vec<_> = s
        .store
        .snapshot()
        .into_iter()
        .filter_map(|l| l.owner)
        .collect();
    let state: Vec<_> = s
        .store
        .snapshot()
        .into_iter()
        .map(|l| (l.key, l.owner, l.throughput_kbps))
        .collect();
    assert_eq!(owners.iter().filter(|o| *o == "w1").count(), 4, "{state:?}");
    assert_eq!(owners.iter().filter(|o| *o == "w2").count(), 4);
    t1.cancel();
    r1.await.unwrap().unwrap();
    let sent = merge(sent, s.put(16, 10, 100).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        s.store
            .snapshot()
            .iter()
            .all(|l| l.owner.as_deref() == Some("w2"))
    );
    t2.cancel();
    r2.await.unwrap().unwrap();
    // Graceful hand-offs: at-least-once, and here exactly once since every batch was checkpointed.
    assert_eq!(s.by_key(), sent);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_stream_ends_the_run_cleanly() {
    let s = Setup::new(2);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        s.builder("w1", None)
            .shard_sync_interval(Duration::from_secs(5))
            .build()
            .unwrap()
            .run(shutdown),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.kinesis.delete_stream("s").unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.end, RunEnd::StreamDeleted);
}

#[test]
fn invalid_configuration_is_named() {
    let s = Setup::new(1);
    let err = SchedulerBuilder::new(s.stream.clone(), "app")
        .build()
        .unwrap_err();
    assert_eq!(err, SchedulerConfigError::Missing("lease_store"));
    let err = s
        .builder("w", None)
        .failover_time(Duration::from_millis(1))
        .build()
        .unwrap_err();
    assert!(matches!(err, SchedulerConfigError::Coordinator(_)), "{err}");
    let polling = crate::retrieval::PollingConfig {
        idle_time_between_reads: Duration::from_millis(10),
        ..Default::default()
    };
    let err = s
        .builder("w", None)
        .retrieval(RetrievalMode::Polling(polling))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("idle_time_between_reads"), "{err}");
    let err = s
        .builder("w", None)
        .checkpoint_policy(crate::shard::CheckpointPolicy::Auto {
            records: 0,
            interval: Duration::from_secs(1),
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("checkpoint_policy"));
}

/// A processor whose `shutdown_requested` never returns.
struct NeverStops;

#[async_trait]
impl ShardRecordProcessor for NeverStops {
    async fn process_records(&mut self, _: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn shutdown_requested(&mut self, _: &mut Checkpointer) -> Result<(), ProcessorError> {
        std::future::pending().await
    }
}

/// Issue 14 §2: a ListShards taking 120 s held `run` for 118 s past a 5 s shutdown timeout.
#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_while_shard_sync_hangs() {
    let s = Setup::new(2);
    s.put(4, 5, 0).await;
    let shutdown = CancellationToken::new();
    let scheduler = s
        .builder("w1", None)
        .shard_sync_interval(Duration::from_secs(20))
        .kinesis_call_timeout(Duration::from_secs(600))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let slack = scheduler.config().coordinator.store_call_timeout();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.kinesis.faults().next_calls(
        crate::engine::KinesisOperation::ListShards,
        1,
        crate::fault::FaultAction::Delay(Duration::from_secs(120)),
    );
    // The next sync round starts at 20 s and hangs in ListShards.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let cancelled = tokio::time::Instant::now();
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();
    let took = cancelled.elapsed();
    assert!(took <= Duration::from_secs(5) + slack, "run took {took:?}");
    assert_eq!(report.aborted, 0);
    assert_eq!(
        s.ledger.lock().shutdowns.len(),
        2,
        "every processor asked to checkpoint"
    );
    assert!(s.store.snapshot().iter().all(|l| l.owner.is_none()));
}

/// A processor that never returns from `shutdown_requested` is aborted once the shutdown
/// timeout is spent; `run` still returns on time and the others' leases are released.
#[tokio::test(start_paused = true)]
async fn shutdown_aborts_a_processor_that_never_returns() {
    let s = Setup::new(2);
    let shutdown = CancellationToken::new();
    let scheduler = SchedulerBuilder::new(s.stream.clone(), "app")
        .worker_id("w1")
        .lease_store(s.store.clone())
        .kinesis(Arc::new(s.kinesis.clone()))
        .shutdown_timeout(Duration::from_secs(5))
        .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(NeverStops)
        })
        .build()
        .unwrap();
    let slack = scheduler.config().coordinator.store_call_timeout();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cancelled = tokio::time::Instant::now();
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();
    assert!(cancelled.elapsed() <= Duration::from_secs(5) + slack);
    assert_eq!(report.aborted, 2);
}

/// Issue 14 §3: with the lease table missing, `run` ran for ever saying nothing.
#[tokio::test(start_paused = true)]
async fn a_missing_lease_table_fails_the_run_typed() {
    let s = Setup::new(1);
    s.store.faults().with_probability(
        crate::lease::LeaseOperation::Get,
        1.0,
        crate::fault::FaultAction::Fail(crate::lease::LeaseError::table_not_found(
            "app",
            "ResourceNotFoundException",
        )),
    );
    let started = tokio::time::Instant::now();
    let err = s
        .builder("w1", None)
        .build()
        .unwrap()
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SchedulerError::LeaseTableMissing(_)), "{err}");
    assert!(started.elapsed() <= Duration::from_secs(11));
}

#[tokio::test(start_paused = true)]
async fn a_missing_stream_fails_the_run_typed() {
    let s = Setup::new(1);
    let err = SchedulerBuilder::new(StreamIdentity::from_name("nope"), "app")
        .lease_store(s.store.clone())
        .kinesis(Arc::new(s.kinesis.clone()))
        .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(NeverStops)
        })
        .fail_fast_after(Duration::from_secs(2))
        .build()
        .unwrap()
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchedulerError::StreamNotFound { .. }),
        "{err}"
    );
}

/// Runs a scheduler that fails its start-up checks at once, and returns why.
async fn start_up_error(s: &Setup) -> SchedulerError {
    let scheduler = s
        .builder("w1", None)
        .fail_fast_after(Duration::ZERO)
        .build()
        .unwrap();
    scheduler.run(CancellationToken::new()).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn denied_access_and_rejected_credentials_fail_the_run_typed() {
    let s = Setup::new(1);
    s.kinesis.faults().with_probability(
        crate::engine::KinesisOperation::DescribeStream,
        1.0,
        crate::fault::FaultAction::Fail(crate::kinesis::KinesisError::access_denied(
            "AccessDeniedException",
        )),
    );
    let err = start_up_error(&s).await;
    assert!(
        matches!(err, SchedulerError::StreamAccessDenied(_)),
        "{err}"
    );
    let s = Setup::new(1);
    s.store.faults().with_probability(
        crate::lease::LeaseOperation::Get,
        1.0,
        crate::fault::FaultAction::Fail(crate::lease::LeaseError::credentials_rejected(
            "UnrecognizedClientException",
        )),
    );
    let err = start_up_error(&s).await;
    assert!(
        matches!(err, SchedulerError::CredentialsRejected { .. }),
        "{err}"
    );
}

/// The start-up probe has a deadline too: a table read that hangs delays the start by one
/// store call timeout, then the run goes on and processes the shard.
#[tokio::test(start_paused = true)]
async fn a_hung_start_up_probe_does_not_hold_the_run() {
    let s = Setup::new(1);
    s.store.faults().next_calls(
        crate::lease::LeaseOperation::Get,
        1,
        crate::fault::FaultAction::Delay(Duration::from_secs(3600)),
    );
    let sent = s.put(2, 5, 0).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(s.builder("w1", None).build().unwrap().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(s.by_key(), sent);
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

/// Issue 14 §11: durations that overflow `Instant + Duration` are rejected by name.
#[test]
fn durations_that_could_overflow_are_rejected() {
    let s = Setup::new(1);
    let err = s
        .builder("w", None)
        .shutdown_timeout(Duration::from_secs(u64::MAX))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("shutdown_timeout"), "{err}");
    let err = s
        .builder("w", None)
        .failover_time(Duration::from_secs(i64::MAX as u64))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("failover_time"), "{err}");
    // Two places that disagree: an error, not a silent choice.
    let err = s
        .builder("w", None)
        .failover_time(Duration::from_secs(20))
        .coordinator_config(crate::lease::CoordinatorConfig::new("w"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("failover_time"), "{err}");
    assert!(
        s.builder("w", None)
            .failover_time(Duration::from_secs(10))
            .coordinator_config(crate::lease::CoordinatorConfig::new("w"))
            .build()
            .is_ok(),
        "the same failover time twice agrees"
    );
}

/// Issue 14 §5: ResourceNotFound for a shard that is still listed ended its consumer while the
/// lease stayed held and renewed: a stuck shard. Now the lease is released and taken again.
#[tokio::test(start_paused = true)]
async fn a_transient_resource_not_found_does_not_leave_the_shard_stuck() {
    let s = Setup::new(1);
    s.kinesis.faults().next_calls(
        crate::engine::KinesisOperation::GetShardIterator,
        5,
        crate::fault::FaultAction::Fail(crate::kinesis::KinesisError::not_found("injected")),
    );
    let sent = s.put(3, 10, 0).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(s.builder("w1", None).build().unwrap().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(s.by_key(), sent);
}

/// Counts GetRecords calls and throttles of one application.
#[derive(Debug)]
struct CountingKinesis {
    inner: InMemoryKinesis,
    calls: Arc<AtomicU64>,
    throttles: Arc<AtomicU64>,
}

#[async_trait]
impl crate::kinesis::KinesisDataPlane for CountingKinesis {
    fn capabilities(&self) -> crate::kinesis::SourceCapabilities {
        self.inner.capabilities()
    }

    async fn describe_stream(
        &self,
        stream: &StreamIdentity,
    ) -> Result<crate::kinesis::StreamSummary, crate::kinesis::KinesisError> {
        crate::kinesis::KinesisDataPlane::describe_stream(&self.inner, stream).await
    }
    async fn list_shards(
        &self,
        request: crate::kinesis::ListShardsRequest,
    ) -> Result<crate::kinesis::ListShardsPage, crate::kinesis::KinesisError> {
        crate::kinesis::KinesisDataPlane::list_shards(&self.inner, request).await
    }
    async fn get_shard_iterator(
        &self,
        stream: &StreamIdentity,
        shard: &crate::model::ShardId,
        position: &crate::model::StartingPosition,
    ) -> Result<crate::kinesis::ShardIterator, crate::kinesis::KinesisError> {
        crate::kinesis::KinesisDataPlane::get_shard_iterator(&self.inner, stream, shard, position)
            .await
    }
    async fn get_records(
        &self,
        iterator: &crate::kinesis::ShardIterator,
        limit: u32,
    ) -> Result<crate::kinesis::GetRecordsOutput, crate::kinesis::KinesisError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = crate::kinesis::KinesisDataPlane::get_records(&self.inner, iterator, limit).await;
        if matches!(&out, Err(e) if e.is_throttle()) {
            self.throttles.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

/// Issue 14 §4: one application on a trickling shard made 7.0 GetRecords/s (28 % throttled);
/// the idle wait followed only empty reads. Now: at most 1.1 calls/s alone, and five
/// applications sharing the shard at default settings are throttled on < 1 % of calls.
#[tokio::test(start_paused = true)]
async fn a_trickling_shard_is_polled_politely_by_one_and_by_five_applications() {
    let kinesis = InMemoryKinesis::with_config(crate::engine::EngineConfig {
        quotas: Some(crate::engine::QuotaLimits::default()),
        ..Default::default()
    });
    let stream = kinesis.create_stream("s", 1).unwrap();
    kinesis.faults().with_probability(
        crate::engine::KinesisOperation::GetRecords,
        1.0,
        crate::fault::FaultAction::Delay(Duration::from_millis(20)),
    );
    for apps in [1usize, 5] {
        let shutdown = CancellationToken::new();
        let mut runs = Vec::new();
        let mut counters = Vec::new();
        for a in 0..apps {
            let (calls, throttles) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            counters.push((calls.clone(), throttles.clone()));
            let scheduler = SchedulerBuilder::new(stream.clone(), format!("app{a}"))
                .worker_id(format!("w{a}"))
                .lease_store(Arc::new(InMemoryLeaseStore::new()))
                .kinesis(Arc::new(CountingKinesis {
                    inner: kinesis.clone(),
                    calls,
                    throttles,
                }))
                .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                    Box::new(NeverStops)
                })
                .build()
                .unwrap();
            runs.push(tokio::spawn(scheduler.run(shutdown.clone())));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        for (c, t) in &counters {
            c.store(0, Ordering::Relaxed);
            t.store(0, Ordering::Relaxed);
        }
        // 100 records/s for 60 s.
        for i in 0..6000 {
            kinesis
                .put_record("s", PutRecordEntry::new(format!("k{i}"), Bytes::from("v")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mut calls, mut throttles) = (0, 0);
        for (c, t) in &counters {
            let per_second = c.load(Ordering::Relaxed) as f64 / 60.0;
            assert!(per_second <= 1.1, "{apps} apps: {per_second:.2} calls/s");
            calls += c.load(Ordering::Relaxed);
            throttles += t.load(Ordering::Relaxed);
        }
        let rate = throttles as f64 / calls as f64;
        eprintln!(
            "{apps} application(s): {:.2} GetRecords/s each, {throttles} of {calls} throttled",
            calls as f64 / 60.0 / apps as f64
        );
        assert!(
            rate < 0.01,
            "{apps} apps: {throttles} of {calls} calls throttled"
        );
        shutdown.cancel();
        for run in runs {
            let _ = run.await;
        }
    }
}

/// Issue 14 §9: the scheduler at LATEST reads what arrives after its leases start, nothing
/// before.
#[tokio::test(start_paused = true)]
async fn latest_reads_only_what_arrives_after_start() {
    let s = Setup::new(2);
    s.put(5, 4, 0).await;
    let shutdown = CancellationToken::new();
    let scheduler = s
        .builder("w1", None)
        .initial_position(InitialPosition::Latest)
        .build()
        .unwrap();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = s.put(5, 4, 100).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(s.by_key(), after);
    assert!(
        s.store
            .snapshot()
            .iter()
            .all(|l| l.checkpoint.sequence().is_some())
    );
}

/// Issue 14 §9: AT_TIMESTAMP starts at the first record that arrived at or after the time; the
/// leases carry the KCL's AT_TIMESTAMP sentinel until the first checkpoint.
#[tokio::test(start_paused = true)]
async fn at_timestamp_reads_from_that_time() {
    let s = Setup::new(2);
    s.put(5, 4, 0).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let t = s.kinesis.now();
    let after = s.put(5, 4, 100).await;
    let shutdown = CancellationToken::new();
    let scheduler = s
        .builder("w1", None)
        .initial_position(InitialPosition::AtTimestamp(t))
        .build()
        .unwrap();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(s.by_key(), after);
}

/// Issue 14 §9: a lease holding the AT_TIMESTAMP sentinel, read by an application configured
/// without a timestamp, starts at TRIM_HORIZON (with a warning): nothing is lost, and no call
/// is made with a made-up time.
#[tokio::test(start_paused = true)]
async fn an_at_timestamp_lease_without_a_configured_time_reads_from_trim_horizon() {
    let s = Setup::new(1);
    let all = s.put(3, 4, 0).await;
    let mut lease = Lease::new(
        &crate::model::ShardId::from_index(0),
        ExtendedSequenceNumber::AtTimestamp,
    );
    lease.hash_key_range = Some(crate::model::HashKeyRange::FULL);
    s.store.create_if_absent(&lease).await.unwrap();
    let shutdown = CancellationToken::new();
    let scheduler = s
        .builder("w1", None)
        .initial_position(InitialPosition::Latest)
        .build()
        .unwrap();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(s.by_key(), all);
}

/// Counts `process_records` calls with and without records, checkpointing in each.
struct Ticks(Arc<Mutex<(u64, u64)>>);

#[async_trait]
impl ShardRecordProcessor for Ticks {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        {
            let mut t = self.0.lock();
            if input.records.is_empty() {
                t.0 += 1;
            } else {
                t.1 += input.records.len() as u64;
            }
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Issue 12 §2: with an idle tick, a processor on a quiet shard is called with an empty batch
/// each interval (a timed flush), not while records flow, and never without the setting.
#[tokio::test(start_paused = true)]
async fn an_idle_tick_calls_the_processor_on_a_quiet_shard() {
    for tick in [Some(Duration::from_secs(2)), None] {
        let s = Setup::new(1);
        let counts = Arc::new(Mutex::new((0u64, 0u64)));
        let c = counts.clone();
        let mut builder = SchedulerBuilder::new(s.stream.clone(), "app")
            .lease_store(s.store.clone())
            .kinesis(Arc::new(s.kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .processor_factory(move |_: &ShardInfo| Ticks(c.clone()));
        if let Some(t) = tick {
            builder = builder.idle_tick(t);
        }
        let token = CancellationToken::new();
        let run = tokio::spawn(builder.build().unwrap().run(token.clone()));
        tokio::time::sleep(Duration::from_secs(21)).await;
        let quiet = counts.lock().0;
        s.put(1, 5, 0).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        token.cancel();
        run.await.unwrap().unwrap();
        let (empty, records) = *counts.lock();
        assert_eq!(records, 5);
        match tick {
            // About one per 2 s over 21 s (the first after the consumer started).
            Some(_) => assert!((8..=11).contains(&quiet), "{quiet} idle calls"),
            None => assert_eq!(empty, 0),
        }
    }
}

#[test]
fn an_idle_tick_below_10_ms_is_rejected() {
    let s = Setup::new(1);
    let err = s
        .builder("w", None)
        .idle_tick(Duration::from_millis(1))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("idle_tick"), "{err}");
}

/// Issue 13 §6: a bounded replay from T1 to T2 processes exactly the records that arrived
/// between the bounds — across a split inside the window and one after it — and returns.
#[tokio::test(start_paused = true)]
async fn a_bounded_replay_processes_exactly_the_window_and_returns() {
    let s = Setup::new(2);
    s.put(6, 3, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t1 = s.kinesis.now();
    let mut window = s.put(6, 3, 100).await;
    s.kinesis
        .split_shard_evenly("s", &crate::model::ShardId::from_index(0))
        .unwrap();
    window = merge(window, s.put(6, 3, 200).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t2 = s.kinesis.now();
    s.put(6, 3, 300).await;
    s.kinesis
        .split_shard_evenly("s", &crate::model::ShardId::from_index(1))
        .unwrap();
    s.put(6, 3, 400).await;
    let scheduler = s
        .builder("w1", None)
        .initial_position(InitialPosition::AtTimestamp(t1))
        .stop_at(StopAt::Timestamp(t2))
        .build()
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        scheduler.run(CancellationToken::new()),
    )
    .await
    .expect("a bounded run returns by itself")
    .unwrap();
    assert_eq!(report.end, RunEnd::BoundReached);
    assert_eq!(s.by_key(), window);
    let leases = s.store.snapshot();
    assert!(leases.iter().all(|l| l.owner.is_none()), "{leases:?}");
}

/// A run bounded at the tip as of start leaves records that arrive later alone, and two
/// workers of one bounded run both return, each shard processed once.
#[tokio::test(start_paused = true)]
async fn a_run_bounded_at_the_start_tip_ignores_later_records() {
    let s = Setup::new(4);
    let before = s.put(8, 5, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs: Vec<_> = ["w1", "w2"]
        .into_iter()
        .map(|w| {
            let scheduler = s
                .builder(w, None)
                .stop_at(StopAt::TipAtStart)
                .build()
                .unwrap();
            tokio::spawn(scheduler.run(CancellationToken::new()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.put(8, 5, 100).await;
    for run in runs {
        let report = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("returns")
            .unwrap()
            .unwrap();
        assert_eq!(report.end, RunEnd::BoundReached);
    }
    assert_eq!(s.by_key(), before);
}

#[tokio::test(start_paused = true)]
async fn children_of_a_split_start_on_their_parents_owner() {
    let s = Setup::new(4);
    let sent = s.put(16, 10, 0).await;
    let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
    let r1 = tokio::spawn(s.builder("w1", None).build().unwrap().run(t1.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r2 = tokio::spawn(s.builder("w2", None).build().unwrap().run(t2.clone()));
    tokio::time::sleep(Duration::from_secs(40)).await;
    let owner_of = |key: &str| {
        s.store
            .snapshot()
            .into_iter()
            .find(|l| l.key == key)
            .and_then(|l| l.owner)
    };
    let parent = "shardId-000000000000";
    let parent_owner = owner_of(parent).expect("the parent is held");
    s.kinesis
        .split_shard_evenly("s", &crate::model::ShardId::from_index(0))
        .unwrap();
    let sent = merge(sent, s.put(16, 10, 100).await);
    tokio::time::sleep(Duration::from_secs(20)).await;
    for child in ["shardId-000000000004", "shardId-000000000005"] {
        assert_eq!(
            owner_of(child).as_deref(),
            Some(parent_owner.as_str()),
            "{child} went to the worker that ended its parent: {:?}",
            s.store.snapshot()
        );
    }
    // Balance counts leases with work: the ended parent weighs nothing (3 + 2 here).
    let counts = |w: &str| {
        s.store
            .snapshot()
            .iter()
            .filter(|l| !l.is_shard_end() && l.owner.as_deref() == Some(w))
            .count()
    };
    assert_eq!(counts("w1") + counts("w2"), 5);
    assert!(counts("w1").abs_diff(counts("w2")) <= 1);
    t1.cancel();
    t2.cancel();
    r1.await.unwrap().unwrap();
    r2.await.unwrap().unwrap();
    assert_eq!(s.by_key(), sent);
}

#[tokio::test(start_paused = true)]
async fn renewals_write_the_throughput_processed() {
    let s = Setup::new(2);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(s.builder("w1", None).build().unwrap().run(shutdown.clone()));
    // About 1 KiB per second on shard 0 only (a key that hashes there), for 30 s.
    let hot = (0..100)
        .map(|k| format!("k{k}"))
        .find(|k| crate::routing::partition_key_hash(k) < u128::MAX / 2)
        .unwrap();
    for _ in 0..30 {
        s.kinesis
            .put_record(
                "s",
                PutRecordEntry::new(&hot, Bytes::from(vec![b'x'; 1024])),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let leases = s.store.snapshot();
    let kbps = |key: &str| {
        leases
            .iter()
            .find(|l| l.key == key)
            .and_then(|l| l.throughput_kbps)
    };
    let hot_kbps = kbps("shardId-000000000000").expect("written by renewals");
    assert!((0.5..2.0).contains(&hot_kbps), "about 1 KB/s: {hot_kbps}");
    assert_eq!(kbps("shardId-000000000001"), Some(0.0), "an idle shard");
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_worker_at_a_time_runs_shard_sync_and_another_takes_over_when_it_stops() {
    use crate::engine::KinesisOperation;
    use crate::fault::FaultAction;
    let s = Setup::new(6);
    let faults = s.kinesis.faults();
    // A zero delay on every ListShards call: the injector counts them.
    faults.with_probability(
        KinesisOperation::ListShards,
        1.0,
        FaultAction::Delay(Duration::ZERO),
    );
    let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let runs: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let run = s
                .builder(&format!("w{i}"), None)
                .build()
                .unwrap()
                .run(t.clone());
            tokio::spawn(run)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Ten sync intervals after start-up: one worker's rounds, not three.
    let before = faults.injected();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = faults.injected() - before;
    assert!(
        (9..=12).contains(&calls),
        "ListShards calls in 10 sync intervals: {calls}"
    );
    // The leader is the smallest live worker id, w0: it stops (its leases are offered or
    // released) and another worker syncs from then on — the calls go on only if one takes over.
    let index = 0;
    tokens[index].cancel();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = faults.injected();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = faults.injected() - before;
    assert!((9..=12).contains(&calls), "after the leader left: {calls}");
    for t in &tokens {
        t.cancel();
    }
    for r in runs {
        r.await.unwrap().unwrap();
    }
}

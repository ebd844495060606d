//! Issue 12 §4: bounded retries (attempts and record age), then skip, dead-letter or stop the
//! shard; in key-parallel mode a poison key's record is dead-lettered while the other keys and
//! the checkpoint watermark go on. In-memory engine and lease store, paused time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, Record, StreamIdentity};
use kcl_core::parallel::{
    ParallelConfig, RecordContext, RecordExhausted, RecordFailurePolicy, RecordHandler,
    key_parallel,
};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::{Scheduler, SchedulerBuilder};
use kcl_core::shard::{DeadLetterHandler, Exhausted, FailurePolicy, ProcessorFailure, RetryLimit};
use kcl_core::{CancellationToken, async_trait};
use parking_lot::Mutex;

/// Records stored by the dead-letter handler: (values, failure).
#[derive(Debug, Default)]
struct Dlq(Mutex<Vec<(Vec<String>, ProcessorFailure)>>);

#[async_trait]
impl DeadLetterHandler for Dlq {
    async fn handle(
        &self,
        _: &ShardInfo,
        records: &[Record],
        failure: &ProcessorFailure,
    ) -> Result<(), ProcessorError> {
        self.0
            .lock()
            .push((records.iter().map(value).collect(), failure.clone()));
        Ok(())
    }
}

fn value(r: &Record) -> String {
    String::from_utf8_lossy(&r.data).into_owned()
}

/// Fails every batch that holds "poison", counting its attempts; records the rest.
#[derive(Debug, Default)]
struct Seen {
    attempts: Mutex<u32>,
    processed: Mutex<Vec<String>>,
}

struct Poisoned(Arc<Seen>);

#[async_trait]
impl ShardRecordProcessor for Poisoned {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if input.records.iter().any(|r| value(r) == "poison") {
            *self.0.attempts.lock() += 1;
            return Err("cannot handle poison".into());
        }
        self.0
            .processed
            .lock()
            .extend(input.records.iter().map(value));
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

struct World {
    kinesis: InMemoryKinesis,
    stream: StreamIdentity,
    store: Arc<InMemoryLeaseStore>,
}

impl World {
    fn new() -> Self {
        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", 1).unwrap();
        Self {
            kinesis,
            stream,
            store: Arc::new(InMemoryLeaseStore::new()),
        }
    }

    async fn put(&self, key: &str, value: &str) {
        self.kinesis
            .put_record(
                "s",
                PutRecordEntry::new(key, Bytes::from(value.to_string())),
            )
            .await
            .unwrap();
    }

    fn builder(&self) -> SchedulerBuilder {
        SchedulerBuilder::new(self.stream.clone(), "app")
            .lease_store(self.store.clone())
            .kinesis(Arc::new(self.kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
    }

    async fn checkpoint(&self) -> ExtendedSequenceNumber {
        self.store
            .get("shardId-000000000000")
            .await
            .unwrap()
            .unwrap()
            .checkpoint
    }
}

async fn run_for(scheduler: Scheduler, d: Duration) {
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    tokio::time::sleep(d).await;
    token.cancel();
    run.await.unwrap().unwrap();
}

/// Puts "a", then "poison" alone, then "b", "c" (each read separately: the poison batch is
/// only the poison record).
async fn put_poisoned(w: &World, seen: &Arc<Seen>, policy: FailurePolicy) -> Scheduler {
    let seen = seen.clone();
    w.put("k", "a").await;
    w.builder()
        .failure_policy(policy)
        .processor_factory(move |_: &ShardInfo| Poisoned(seen.clone()))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn after_max_attempts_a_batch_is_dead_lettered_and_the_shard_goes_on() {
    let w = World::new();
    let seen = Arc::new(Seen::default());
    let dlq = Arc::new(Dlq::default());
    let policy =
        FailurePolicy::retry_then(RetryLimit::attempts(3), Exhausted::DeadLetter(dlq.clone()));
    let scheduler = put_poisoned(&w, &seen, policy).await;
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.put("k", "poison").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.put("k", "b").await;
    w.put("k", "c").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    token.cancel();
    run.await.unwrap().unwrap();

    assert_eq!(
        *seen.attempts.lock(),
        3,
        "three attempts, then the dead-letter queue"
    );
    let stored = std::mem::take(&mut *dlq.0.lock());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, ["poison"]);
    assert!(matches!(&stored[0].1, ProcessorFailure::Error(e) if e.contains("poison")));
    assert_eq!(*seen.processed.lock(), ["a", "b", "c"]);
    // The checkpoint moved past the dead-lettered record to the last one processed.
    assert!(w.checkpoint().await.sequence().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_record_older_than_the_age_limit_is_skipped_however_many_attempts_are_left() {
    let w = World::new();
    let seen = Arc::new(Seen::default());
    let limit = RetryLimit::attempts(1_000).or_record_age(Duration::from_secs(20));
    let policy = FailurePolicy::RetryThen {
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(1),
        limit,
        then: Exhausted::Skip,
    };
    let scheduler = put_poisoned(&w, &seen, policy).await;
    w.put("k", "poison").await;
    w.put("k", "b").await;
    // The poison record is read alone only if it arrives alone; here "a", "poison" and "b" are
    // one batch, which is skipped as a whole once its oldest record is 20 s old.
    run_for(scheduler, Duration::from_secs(40)).await;
    let attempts = *seen.attempts.lock();
    // The consumer starts a few seconds after the records arrived (lease taking), then retries
    // once a second until the batch is 20 s old: far fewer than the 1,000 attempts allowed.
    assert!(
        (8..=21).contains(&attempts),
        "retried about once a second until the oldest record was 20 s old: {attempts}"
    );
    assert!(
        seen.processed.lock().is_empty(),
        "the whole batch was skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_shard_after_the_attempts_releases_the_lease_without_moving_past_the_batch() {
    let w = World::new();
    let seen = Arc::new(Seen::default());
    let policy = FailurePolicy::retry_then(RetryLimit::attempts(2), Exhausted::StopShard);
    let scheduler = put_poisoned(&w, &seen, policy).await;
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_a = w.checkpoint().await;
    w.put("k", "poison").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    token.cancel();
    run.await.unwrap().unwrap();
    assert!(*seen.attempts.lock() >= 2);
    assert_eq!(*seen.processed.lock(), ["a"]);
    assert_eq!(
        w.checkpoint().await,
        after_a,
        "nothing past the failed batch"
    );
}

#[test]
fn a_retry_limit_without_any_bound_is_rejected() {
    let w = World::new();
    let policy = FailurePolicy::retry_then(RetryLimit::default(), Exhausted::Skip);
    let err = w
        .builder()
        .failure_policy(policy)
        .processor_factory(|_: &ShardInfo| Poisoned(Arc::default()))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("failure_policy"), "{err}");
}

/// Key-parallel handler: fails every record of the key "bad".
struct ByKey(Mutex<Vec<String>>);

#[async_trait]
impl RecordHandler for ByKey {
    async fn handle(&self, _: &RecordContext, record: &Record) -> Result<(), ProcessorError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if &*record.partition_key == "bad" {
            return Err(format!("bad record {}", value(record)).into());
        }
        self.0.lock().push(value(record));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn in_key_parallel_a_poison_key_is_dead_lettered_while_the_others_and_the_watermark_go_on() {
    let w = World::new();
    for i in 0..100 {
        let key = if i % 10 == 3 {
            "bad".to_string()
        } else {
            format!("good-{}", i % 7)
        };
        w.put(&key, &i.to_string()).await;
    }
    let handler = Arc::new(ByKey(Mutex::default()));
    let dlq = Arc::new(Dlq::default());
    let config = ParallelConfig::new(4)
        .with_failure(RecordFailurePolicy::RetryThen {
            limit: RetryLimit::attempts(3),
            then: RecordExhausted::DeadLetter(dlq.clone()),
        })
        .with_min_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_millis(100));
    let scheduler = w
        .builder()
        .processor_factory(key_parallel(handler.clone(), config))
        .build()
        .unwrap();
    run_for(scheduler, Duration::from_secs(20)).await;

    let mut good = handler.0.lock().clone();
    good.sort_by_key(|v| v.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..100)
        .filter(|i| i % 10 != 3)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(good, expected, "every good record, once");
    let stored = std::mem::take(&mut *dlq.0.lock());
    let mut bad: Vec<String> = stored.iter().flat_map(|(v, _)| v.clone()).collect();
    bad.sort_by_key(|v| v.parse::<u32>().unwrap());
    let expected_bad: Vec<String> = (0..100)
        .filter(|i| i % 10 == 3)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(
        bad, expected_bad,
        "each bad record dead-lettered once, alone"
    );
    assert!(stored.iter().all(|(v, _)| v.len() == 1));
    // The watermark passed the dead-lettered records: the shard is checkpointed at its last
    // record.
    let last = w.checkpoint().await;
    assert_eq!(checkpointed_value(&w, &last).await, "99");
}

/// The value of the record at a checkpoint.
async fn checkpointed_value(w: &World, at: &ExtendedSequenceNumber) -> String {
    use kcl_core::kinesis::KinesisDataPlane;
    use kcl_core::model::{ShardId, StartingPosition};
    let it = w
        .kinesis
        .get_shard_iterator(
            &w.stream,
            &ShardId::new("shardId-000000000000"),
            &StartingPosition::AtSequenceNumber(at.sequence().unwrap().clone()),
        )
        .await
        .unwrap();
    let out = w.kinesis.get_records(&it, 1).await.unwrap();
    value(&out.records[0])
}

/// Stores every batch, but answers the first two calls with an error — the second after the
/// write landed — like a destination that times out.
#[derive(Debug, Default)]
struct Flaky {
    calls: Mutex<u32>,
    stored: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl DeadLetterHandler for Flaky {
    async fn handle(
        &self,
        _: &ShardInfo,
        records: &[Record],
        _: &ProcessorFailure,
    ) -> Result<(), ProcessorError> {
        let call = {
            let mut c = self.calls.lock();
            *c += 1;
            *c
        };
        if call == 1 {
            return Err("destination unavailable".into());
        }
        self.stored.lock().push(records.iter().map(value).collect());
        if call == 2 {
            return Err("timed out after the write landed".into());
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_dead_letter_handler_is_retried_until_it_stores_the_batch() {
    let w = World::new();
    let seen = Arc::new(Seen::default());
    let dlq = Arc::new(Flaky::default());
    let policy =
        FailurePolicy::retry_then(RetryLimit::attempts(1), Exhausted::DeadLetter(dlq.clone()));
    let scheduler = put_poisoned(&w, &seen, policy).await;
    let token = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(token.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.put("k", "poison").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.put("k", "b").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    token.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*dlq.calls.lock(), 3, "retried until it answered Ok");
    // At least once: the write that landed before its error is stored again.
    assert_eq!(
        *dlq.stored.lock(),
        [vec!["poison".to_string()], vec!["poison".to_string()]]
    );
    assert_eq!(
        *seen.processed.lock(),
        ["a", "b"],
        "the shard went on after the Ok"
    );
}

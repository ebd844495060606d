//! The scheduler's initial positions on kinesis-local + moto (issue 14 §9): LATEST reads only
//! what arrives after its leases start; AT_TIMESTAMP reads from the first record that arrived at
//! or after the time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_core::lease::LeaseStore;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_tests::{create_stream, emulator, emulator_config, init_logging, lease_table, unique};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<BTreeSet<String>>>;

struct Collect(Seen);

#[async_trait]
impl ShardRecordProcessor for Collect {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        self.0.lock().extend(
            input
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

struct Emulated {
    client: aws_sdk_kinesis::Client,
    stream: String,
    store: Arc<dyn LeaseStore>,
    kinesis: Arc<AwsKinesis>,
}

async fn setup() -> Option<Emulated> {
    let kinesis_at = emulator("KCL_KINESIS_ENDPOINT")?;
    let dynamo_at = emulator("KCL_DYNAMODB_ENDPOINT")?;
    init_logging();
    let config = emulator_config(&kinesis_at).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = unique("position");
    create_stream(&client, &stream, 2).await;
    Some(Emulated {
        kinesis: Arc::new(AwsKinesis::new(&config)),
        client,
        stream,
        store: Arc::new(lease_table(&dynamo_at, "position").await),
    })
}

impl Emulated {
    async fn put(&self, prefix: &str, n: usize) -> BTreeSet<String> {
        let mut sent = BTreeSet::new();
        for i in 0..n {
            let value = format!("{prefix}{i}");
            self.client
                .put_record()
                .stream_name(&self.stream)
                .partition_key(format!("key{i}"))
                .data(Blob::new(value.clone()))
                .send()
                .await
                .expect("PutRecord");
            sent.insert(value);
        }
        sent
    }

    fn scheduler(&self, position: InitialPosition, seen: &Seen) -> kcl_core::scheduler::Scheduler {
        let seen = seen.clone();
        SchedulerBuilder::new(StreamIdentity::from_name(&self.stream), "position")
            .worker_id("w1")
            .lease_store(self.store.clone())
            .kinesis(self.kinesis.clone())
            .initial_position(position)
            .failover_time(Duration::from_secs(3))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(Collect(seen.clone()))
            })
            .build()
            .expect("scheduler")
    }

    /// Waits until `seen` holds `want` (or 30 s pass), then stops the run.
    async fn wait_for(&self, seen: &Seen, want: &BTreeSet<String>, stop: CancellationToken) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !want.is_subset(&seen.lock()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A little longer, so that a record that should not come would have come.
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
    }
}

#[tokio::test]
async fn latest_reads_only_what_arrives_after_the_leases_start() {
    let Some(e) = setup().await else { return };
    e.put("before", 10).await;
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        e.scheduler(InitialPosition::Latest, &seen)
            .run(stop.clone()),
    );
    // Both leases taken and their LATEST iterators issued before anything new arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leases = e.store.list().await.expect("list").leases;
        if leases.len() == 2 && leases.iter().all(|l| l.owner.is_some()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leases never taken: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = e.put("after", 10).await;
    e.wait_for(&seen, &after, stop).await;
    run.await.expect("join").expect("run");
    assert_eq!(*seen.lock(), after);
}

#[tokio::test]
async fn at_timestamp_reads_from_the_first_record_at_or_after_the_time() {
    let Some(e) = setup().await else { return };
    e.put("before", 10).await;
    // Arrival times are the emulator's clock (this host's); keep clear of its precision.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = e.put("after", 10).await;
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        e.scheduler(InitialPosition::AtTimestamp(t), &seen)
            .run(stop.clone()),
    );
    e.wait_for(&seen, &after, stop).await;
    run.await.expect("join").expect("run");
    assert_eq!(*seen.lock(), after);
}

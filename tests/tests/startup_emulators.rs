//! Fail fast on what retrying cannot fix (issue 14 §3), on the real emulators: a lease table
//! that does not exist in moto, and a stream that does not exist in kinesis-local, end the run
//! with a typed error after the bounded retry instead of running forever; asked to, the
//! scheduler creates the missing table, with the owner index the KCL 3.x uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kcl_aws::AwsKinesis;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::{SchedulerBuilder, SchedulerError};
use kcl_dynamo_leases::DynamoLeaseStore;
use kcl_tests::{create_stream, emulator, emulator_config, init_logging, lease_table, unique};
use tokio_util::sync::CancellationToken;

struct Nothing;

#[async_trait]
impl ShardRecordProcessor for Nothing {
    async fn process_records(&mut self, _: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// The Kinesis SDK configuration for kinesis-local and the moto endpoint, or `None` when the
/// emulators are not running locally (CI fails instead).
async fn emulators() -> Option<(aws_config::SdkConfig, String)> {
    let kinesis_at = emulator("KCL_KINESIS_ENDPOINT")?;
    let dynamo_at = emulator("KCL_DYNAMODB_ENDPOINT")?;
    init_logging();
    Some((emulator_config(&kinesis_at).await, dynamo_at))
}

async fn run_until_error(builder: SchedulerBuilder) -> (SchedulerError, Duration) {
    let scheduler = builder
        .fail_fast_after(Duration::from_secs(2))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> { Box::new(Nothing) })
        .build()
        .expect("scheduler");
    let start = Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        scheduler.run(CancellationToken::new()),
    )
    .await
    .expect("run returned within 60 s");
    (run.expect_err("run must fail"), start.elapsed())
}

#[tokio::test]
async fn a_missing_lease_table_on_moto_fails_the_run_typed() {
    let Some((config, dynamo_at)) = emulators().await else {
        return;
    };
    let stream = unique("startup");
    create_stream(&aws_sdk_kinesis::Client::new(&config), &stream, 1).await;
    // A table nobody created.
    let store =
        DynamoLeaseStore::from_config(&emulator_config(&dynamo_at).await, unique("missing"));
    let (err, took) = run_until_error(
        SchedulerBuilder::new(StreamIdentity::from_name(&stream), "startup")
            .lease_store(Arc::new(store))
            .kinesis(Arc::new(AwsKinesis::new(&config))),
    )
    .await;
    assert!(matches!(err, SchedulerError::LeaseTableMissing(_)), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test]
async fn a_missing_stream_on_kinesis_local_fails_the_run_typed() {
    let Some((config, dynamo_at)) = emulators().await else {
        return;
    };
    let (err, took) = run_until_error(
        SchedulerBuilder::new(
            StreamIdentity::from_name(unique("no-such-stream")),
            "startup",
        )
        .lease_store(Arc::new(lease_table(&dynamo_at, "startup").await))
        .kinesis(Arc::new(AwsKinesis::new(&config))),
    )
    .await;
    assert!(
        matches!(err, SchedulerError::StreamNotFound { .. }),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test]
async fn a_missing_lease_table_is_created_with_the_owner_index_when_asked() {
    let Some((config, dynamo_at)) = emulators().await else {
        return;
    };
    let stream = unique("create");
    create_stream(&aws_sdk_kinesis::Client::new(&config), &stream, 1).await;
    let dynamo_config = emulator_config(&dynamo_at).await;
    let table = unique("created");
    let store = Arc::new(DynamoLeaseStore::from_config(&dynamo_config, table.clone()));
    let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(&stream), "create")
        .lease_store(store.clone())
        .kinesis(Arc::new(AwsKinesis::new(&config)))
        .create_lease_table_if_missing()
        .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> { Box::new(Nothing) })
        .build()
        .expect("scheduler");
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    // The run starts and takes the stream's lease in the table it created.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = kcl_core::lease::LeaseStore::list(store.as_ref())
            .await
            .map(|l| l.leases);
        if leases
            .as_ref()
            .is_ok_and(|l| l.len() == 1 && l[0].owner.is_some())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no lease taken: {leases:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    run.await.expect("join").expect("run");
    let described = aws_sdk_dynamodb::Client::new(&dynamo_config)
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("DescribeTable");
    let indexes: Vec<&str> = described
        .table()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(indexes, vec![kcl_dynamo_leases::LEASE_OWNER_INDEX]);
}

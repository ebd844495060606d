//! Fail fast on what retrying cannot fix (issue 14 §3), on the real emulators: a lease table
//! that does not exist in moto, and a stream that does not exist in kinesis-local, end the run
//! with a typed error after the bounded retry instead of running forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kcl_core::aws::AwsKinesis;
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
    let Some(kinesis_at) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    let Some(dynamo_at) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    init_logging();
    let config = emulator_config(&kinesis_at).await;
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
    let Some(kinesis_at) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    let Some(dynamo_at) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    init_logging();
    let config = emulator_config(&kinesis_at).await;
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

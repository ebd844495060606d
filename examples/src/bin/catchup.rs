//! Catch-up benchmark on real endpoints (kinesis-local + moto, or AWS): drains a stream from
//! TRIM_HORIZON with a processor that counts records and checkpoints every batch, and prints one
//! JSON line: seconds from start to the first record, and until `KCL_EXPECTED` records were
//! processed from the first record and from the first processor's `initialize` (reads start
//! right after it here, and right before it in the Java KCL, which prefetches: the fair
//! comparison). `scripts/catchup-vs-java` runs it beside the Java KCL.
//!
//! Environment: `KCL_STREAM`, `KCL_APPLICATION`, `KCL_EXPECTED`, `KCL_KINESIS_ENDPOINT`,
//! `KCL_DYNAMODB_ENDPOINT` (as the `consumer` example).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use kcl_aws::AwsKinesis;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Progress {
    records: AtomicU64,
    first: OnceLock<Instant>,
    initialized: OnceLock<Instant>,
}

struct Counter(Arc<Progress>);

#[async_trait]
impl ShardRecordProcessor for Counter {
    async fn initialize(
        &mut self,
        _input: kcl_core::processor::InitializationInput,
    ) -> Result<(), ProcessorError> {
        self.0.initialized.get_or_init(Instant::now);
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if !input.records.is_empty() {
            self.0.first.get_or_init(Instant::now);
        }
        self.0
            .records
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs to stderr: stdout carries the result line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let started = Instant::now();
    let application = env("KCL_APPLICATION")?;
    let expected: u64 = env("KCL_EXPECTED")?.parse().context("KCL_EXPECTED")?;
    let stream = StreamIdentity::parse(&env("KCL_STREAM")?)?;
    let kinesis = AwsKinesis::new(&sdk_config(&env("KCL_KINESIS_ENDPOINT")?).await);
    let store = DynamoLeaseStore::from_config(
        &sdk_config(&env("KCL_DYNAMODB_ENDPOINT")?).await,
        &application,
    );
    store
        .create_table_if_missing(&TableOptions::default())
        .await?;
    let progress = Arc::new(Progress::default());
    let shared = progress.clone();
    let scheduler = SchedulerBuilder::new(stream, &application)
        .lease_store(Arc::new(store))
        .kinesis(Arc::new(kinesis))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Counter(shared.clone()))
        })
        .build()?;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    while progress.records.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "timed out at {} records",
            progress.records.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let first = *progress.first.get().expect("records were processed");
    let initialized = *progress
        .initialized
        .get()
        .expect("a processor was initialized");
    println!(
        "{{\"framework\":\"kcl-rs\",\"records\":{},\"first_record_s\":{:.3},\"drain_s\":{:.3},\"from_initialize_s\":{:.3}}}",
        progress.records.load(Ordering::Relaxed),
        (first - started).as_secs_f64(),
        (done - first).as_secs_f64(),
        (done - initialized).as_secs_f64()
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    Ok(())
}

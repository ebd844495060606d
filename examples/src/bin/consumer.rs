//! A consumer configured from the environment: runs unchanged against AWS or the emulators.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KCL_STREAM` | stream name or ARN | required |
//! | `KCL_APPLICATION` | application name | required |
//! | `KCL_LEASE_TABLE` | DynamoDB lease table | the application name |
//! | `KCL_WORKER_ID` | this worker's id | generated |
//! | `KCL_INITIAL_POSITION` | `latest` or `trim_horizon` | `latest` |
//! | `KCL_KINESIS_ENDPOINT`, `KCL_DYNAMODB_ENDPOINT` | endpoints (emulators) | AWS |
//! | `AWS_REGION`, credentials | the standard AWS chain | — |
//!
//! `cargo run -p kcl-examples --bin consumer`; Ctrl-C or SIGTERM shuts down gracefully.

use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use kcl_aws::AwsKinesis;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use tokio_util::sync::CancellationToken;
use tracing::info;

struct LogProcessor {
    shard: String,
}

#[async_trait]
impl ShardRecordProcessor for LogProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let bytes: usize = input.records.iter().map(|r| r.data.len()).sum();
        info!(shard_id = %self.shard, records = input.records.len(), bytes, behind_ms = input.millis_behind_latest, "batch");
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn sdk_config(endpoint: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let stream =
        env("KCL_STREAM").context("KCL_STREAM is not set: the stream name or ARN to consume")?;
    let application =
        env("KCL_APPLICATION").context("KCL_APPLICATION is not set: the application name")?;
    let initial_position = match env("KCL_INITIAL_POSITION").as_deref().unwrap_or("latest") {
        "latest" => InitialPosition::Latest,
        "trim_horizon" => InitialPosition::TrimHorizon,
        other => bail!("KCL_INITIAL_POSITION={other:?}: expected latest or trim_horizon"),
    };
    let stream = if stream.starts_with("arn:") {
        StreamIdentity::from_arn(&stream)
    } else {
        StreamIdentity::from_name(&stream)
    };
    let kinesis = AwsKinesis::new(&sdk_config(env("KCL_KINESIS_ENDPOINT")).await);
    let table = env("KCL_LEASE_TABLE").unwrap_or_else(|| application.clone());
    let store =
        DynamoLeaseStore::from_config(&sdk_config(env("KCL_DYNAMODB_ENDPOINT")).await, &table);
    store
        .create_table_if_missing(&TableOptions::default())
        .await
        .with_context(|| format!("lease table {table}"))?;
    let mut builder = SchedulerBuilder::new(stream, &application)
        .lease_store(Arc::new(store))
        .kinesis(Arc::new(kinesis))
        .initial_position(initial_position)
        .processor_factory(|info: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(LogProcessor {
                shard: info.shard_id.to_string(),
            })
        });
    if let Some(id) = env("KCL_WORKER_ID") {
        builder = builder.worker_id(id);
    }
    let scheduler = builder.build().context("invalid configuration")?;
    info!(worker_id = %scheduler.worker_id(), lease_table = %table, "starting");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
        signal.cancel();
    });
    let report = scheduler.run(shutdown).await?;
    info!(end = ?report.end, shards_ended = report.shards_ended, "stopped");
    Ok(())
}

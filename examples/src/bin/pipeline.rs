//! Asynchronous flushes checkpointed through a `CheckpointHandle`, a batching window, and a
//! dead-letter queue, against kinesis-local and moto: see `kcl_examples::pipeline`.
//!
//! `source scripts/emulators.sh && start_emulators && cargo run -p kcl-examples --bin pipeline`

use anyhow::Context;
use kcl_examples::pipeline::{Endpoints, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let endpoints = Endpoints {
        kinesis: var("KCL_KINESIS_ENDPOINT")?,
        dynamodb: var("KCL_DYNAMODB_ENDPOINT")?,
        sqs: var("KCL_SQS_ENDPOINT")?,
    };
    let summary = run(&endpoints, 1_000).await?;
    println!(
        "{} records put: {} flushed by the sink, {} dead-lettered to SQS; {} calls of up to {} records; {} checkpoints from the flusher's handle",
        summary.put,
        summary.flushed,
        summary.dead_lettered,
        summary.calls,
        summary.largest_call,
        summary.handle_checkpoints
    );
    Ok(())
}

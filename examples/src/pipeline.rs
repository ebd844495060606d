//! A pipeline that flushes asynchronously: records are grouped by a batching window, handed to
//! a background flusher (a stand-in for a warehouse or S3 writer that takes a while), and
//! checkpointed from the flusher through a `CheckpointHandle` once the flush is durable. A batch
//! the processor cannot handle is retried three times, then dead-lettered into an SQS queue,
//! and the shard goes on. Runs against real endpoints: kinesis-local (or Kinesis), moto (or
//! DynamoDB and SQS). `cargo run -p kcl-examples --bin pipeline` with `KCL_KINESIS_ENDPOINT`,
//! `KCL_DYNAMODB_ENDPOINT` and `KCL_SQS_ENDPOINT` set (`scripts/emulators.sh` starts them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_aws::dead_letter::{DeadLetterRecord, SqsDeadLetter};
use kcl_core::checkpoint::CheckpointHandle;
use kcl_core::lease::LeaseStore;
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_core::shard::{BatchingWindow, Exhausted, FailurePolicy, RetryLimit};
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where the pipeline runs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Kinesis (kinesis-local).
    pub kinesis: String,
    /// DynamoDB (moto).
    pub dynamodb: String,
    /// SQS (moto).
    pub sqs: String,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records put.
    pub put: usize,
    /// Records the sink made durable (distinct).
    pub flushed: usize,
    /// Records read back from the dead-letter queue (distinct).
    pub dead_lettered: usize,
    /// `process_records` calls, and the most records one of them got.
    pub calls: usize,
    /// The most records one call got.
    pub largest_call: usize,
    /// Checkpoints the flusher wrote through its handle.
    pub handle_checkpoints: usize,
}

/// The sink's state, shared with the flushers.
#[derive(Debug, Default)]
struct Sink {
    durable: BTreeSet<String>,
    calls: usize,
    largest_call: usize,
    handle_checkpoints: usize,
}

/// How long the sink takes to make a batch durable.
const FLUSH_TIME: Duration = Duration::from_millis(300);

/// Validates records and hands them to its shard's flusher; a batch holding a record that is not
/// `order-<n>` fails (and, after three attempts, is dead-lettered whole).
struct Processor {
    sink: Arc<Mutex<Sink>>,
    to_flusher: mpsc::UnboundedSender<(Vec<String>, ExtendedSequenceNumber, CheckpointHandle)>,
}

impl Processor {
    fn new(sink: Arc<Mutex<Sink>>) -> Self {
        let (to_flusher, mut inbox) =
            mpsc::unbounded_channel::<(Vec<String>, ExtendedSequenceNumber, CheckpointHandle)>();
        let flushed = sink.clone();
        tokio::spawn(async move {
            while let Some((values, position, handle)) = inbox.recv().await {
                tokio::time::sleep(FLUSH_TIME).await;
                flushed.lock().durable.extend(values);
                // Fenced like the in-callback checkpointer: fails once the lease is gone, and
                // the new owner re-delivers from the last durable checkpoint.
                match handle.checkpoint_at_position(position).await {
                    Ok(()) => flushed.lock().handle_checkpoints += 1,
                    Err(e) => tracing::warn!(error = %e, "checkpoint after flush refused"),
                }
            }
        });
        Self { sink, to_flusher }
    }
}

#[async_trait]
impl ShardRecordProcessor for Processor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let Some(last) = input.records.last() else {
            return Ok(());
        };
        let values: Vec<String> = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        if let Some(bad) = values.iter().find(|v| !v.starts_with("order-")) {
            return Err(format!("not an order: {bad}").into());
        }
        {
            let mut sink = self.sink.lock();
            sink.calls += 1;
            sink.largest_call = sink.largest_call.max(values.len());
        }
        let handle = input.checkpointer.handle();
        self.to_flusher
            .send((values, last.extended_sequence_number(), handle))
            .map_err(|_| "the flusher stopped")?;
        Ok(())
    }
}

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await
}

/// Puts `orders` orders and a few malformed records into a new 2-shard stream and consumes
/// them until every record is either flushed or in the dead-letter queue.
pub async fn run(endpoints: &Endpoints, orders: usize) -> anyhow::Result<Summary> {
    let kinesis_config = sdk(&endpoints.kinesis).await;
    let sqs_config = sdk(&endpoints.sqs).await;
    let suffix = std::process::id();
    let stream = format!("pipeline-{suffix}");
    let kinesis = aws_sdk_kinesis::Client::new(&kinesis_config);
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .context("CreateStream")?;
    for _ in 0..100 {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await?;
        if d.stream_description_summary()
            .map(|s| s.stream_status().as_str())
            == Some("ACTIVE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sqs = aws_sdk_sqs::Client::new(&sqs_config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("pipeline-dlq-{suffix}"))
        .send()
        .await
        .context("CreateQueue")?
        .queue_url
        .context("no queue URL")?;
    let store = DynamoLeaseStore::from_config(
        &sdk(&endpoints.dynamodb).await,
        format!("pipeline-{suffix}"),
    );
    store
        .create_table_if_missing(&TableOptions::default())
        .await?;

    let mut put = BTreeSet::new();
    for i in 0..orders {
        // A few records are malformed: the batch holding one goes to the dead-letter queue.
        let value = if i % 331 == 100 {
            format!("garbage-{i}")
        } else {
            format!("order-{i}")
        };
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("customer-{}", i % 13))
            .data(Blob::new(value.clone()))
            .send()
            .await
            .context("PutRecord")?;
        put.insert(value);
    }

    let sink = Arc::new(Mutex::new(Sink::default()));
    let factory_sink = sink.clone();
    let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(&stream), "pipeline")
        .lease_store(Arc::new(store) as Arc<dyn LeaseStore>)
        .kinesis(Arc::new(AwsKinesis::new(&kinesis_config)))
        .initial_position(InitialPosition::TrimHorizon)
        .retrieval(RetrievalMode::Polling(
            PollingConfig::default()
                .with_max_records(40)
                .with_idle_time_between_reads(Duration::from_millis(250)),
        ))
        // Calls of up to 100 records or 1 MiB, or whatever arrived within 1 s.
        .batching_window(BatchingWindow::new(100, 1 << 20, Duration::from_secs(1)))
        .failure_policy(FailurePolicy::RetryThen {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            limit: RetryLimit::attempts(3),
            then: Exhausted::DeadLetter(Arc::new(SqsDeadLetter::new(&sqs_config, &queue_url))),
        })
        .processor_factory(move |_: &ShardInfo| Processor::new(factory_sink.clone()))
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));

    let mut dead = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .context("ReceiveMessage")?;
        for m in out.messages.unwrap_or_default() {
            let doc: DeadLetterRecord = serde_json::from_str(m.body().unwrap_or_default())?;
            let data = doc.data.context("dead letter without data")?;
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)?;
            dead.insert(String::from_utf8(bytes)?);
            if let Some(receipt) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .context("DeleteMessage")?;
            }
        }
        let durable = sink.lock().durable.len();
        let accounted = put
            .iter()
            .all(|v| dead.contains(v) || sink.lock().durable.contains(v));
        if accounted {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not done in 120 s: {durable} flushed, {} dead-lettered of {}",
            dead.len(),
            put.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last flushes checkpoint, then stop gracefully.
    tokio::time::sleep(FLUSH_TIME * 3).await;
    stop.cancel();
    run.await??;

    let sink = sink.lock();
    for v in put.iter().filter(|v| !v.starts_with("order-")) {
        ensure!(
            dead.contains(v),
            "malformed record {v} was not dead-lettered"
        );
        ensure!(
            !sink.durable.contains(v),
            "malformed record {v} reached the sink"
        );
    }
    Ok(Summary {
        put: put.len(),
        flushed: sink.durable.len(),
        dead_lettered: dead.len(),
        calls: sink.calls,
        largest_call: sink.largest_call,
        handle_checkpoints: sink.handle_checkpoints,
    })
}

//! Issue 12 §4 on the emulators: a key-parallel processor whose handler fails every record of a
//! poison key, with bounded retries, dead-letters exactly those records — into a Kinesis stream
//! on kinesis-local and into an SQS queue on moto — carrying shard, position, partition key,
//! failure and data, while every other record is processed and the checkpoint reaches the end.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use base64::Engine;
use kcl_aws::AwsKinesis;
use kcl_aws::dead_letter::{DeadLetterRecord, KinesisDeadLetter, SqsDeadLetter};
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, Record, ShardId, StartingPosition, StreamIdentity};
use kcl_core::parallel::{
    ParallelConfig, RecordContext, RecordExhausted, RecordFailurePolicy, RecordHandler,
    key_parallel,
};
use kcl_core::processor::ProcessorError;
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_core::shard::{DeadLetterHandler, RetryLimit};
use kcl_tests::{create_stream, emulator, emulator_config, init_logging, unique};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Processes every record except those of the key "poison".
#[derive(Default)]
struct Handler(Mutex<Vec<String>>);

#[async_trait]
impl RecordHandler for Handler {
    async fn handle(&self, _: &RecordContext, record: &Record) -> Result<(), ProcessorError> {
        if &*record.partition_key == "poison" {
            return Err(format!("cannot parse record {}", record.sequence_number).into());
        }
        self.0
            .lock()
            .push(String::from_utf8_lossy(&record.data).into_owned());
        Ok(())
    }
}

/// What was put: the values of good records, and (sequence number, data) of poison ones.
struct Put {
    good: BTreeSet<String>,
    poison: Vec<(String, Vec<u8>)>,
}

async fn put_records(client: &aws_sdk_kinesis::Client, stream: &str, big: usize) -> Put {
    let mut put = Put {
        good: BTreeSet::new(),
        poison: Vec::new(),
    };
    for i in 0..40 {
        let (key, data) = if i % 8 == 5 {
            // One poison record is large: it fits a Kinesis record, not an SQS message.
            let size = if i == 5 { big } else { 16 };
            ("poison".to_string(), vec![b'p'; size])
        } else {
            (format!("key-{}", i % 5), format!("value-{i}").into_bytes())
        };
        let out = client
            .put_record()
            .stream_name(stream)
            .partition_key(&key)
            .data(Blob::new(data.clone()))
            .send()
            .await
            .expect("PutRecord");
        if key == "poison" {
            put.poison.push((out.sequence_number().to_string(), data));
        } else {
            put.good.insert(String::from_utf8(data).unwrap());
        }
    }
    put
}

/// Runs one worker over `stream` (key-parallel, 3 attempts then `dead_letter`) until every good
/// record was processed and the checkpoint is at the stream's last record.
async fn consume(
    config: &aws_config::SdkConfig,
    stream: &str,
    put: &Put,
    dead_letter: Arc<dyn DeadLetterHandler>,
) {
    let handler = Arc::new(Handler::default());
    let store = Arc::new(InMemoryLeaseStore::new());
    let parallel = ParallelConfig::new(4)
        .with_failure(RecordFailurePolicy::RetryThen {
            limit: RetryLimit::attempts(3),
            then: RecordExhausted::DeadLetter(dead_letter),
        })
        .with_min_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_millis(50))
        .with_checkpoint_interval(Duration::from_millis(200));
    let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(stream), "dlq-app")
        .worker_id("w")
        .lease_store(store.clone() as Arc<dyn LeaseStore>)
        .kinesis(Arc::new(AwsKinesis::new(config)))
        .retrieval(RetrievalMode::Polling(
            PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
        ))
        .initial_position(InitialPosition::TrimHorizon)
        // Key-parallel checkpoints its watermark on each call: the idle tick makes the calls
        // that checkpoint the records finished after the last batch.
        .idle_tick(Duration::from_millis(500))
        .processor_factory(key_parallel(handler.clone(), parallel))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    let last = put.poison.last().map(|(s, _)| s.clone()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = handler.0.lock().len() >= put.good.len();
        let checkpoint = store
            .get("shardId-000000000000")
            .await
            .unwrap()
            .and_then(|l| l.checkpoint.sequence().map(|s| s.to_string()));
        // The last record put is value-39 (after the last poison one): the watermark passed
        // every dead-lettered record.
        if done && checkpoint.as_deref().is_some_and(|c| c > last.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not done in 60 s: {} of {} good records, checkpoint {checkpoint:?}",
            handler.0.lock().len(),
            put.good.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    let processed: BTreeSet<String> = handler.0.lock().iter().cloned().collect();
    assert_eq!(processed, put.good, "every good record processed");
}

fn check(docs: &[DeadLetterRecord], put: &Put, stream: &str, data_limit: Option<usize>) {
    let got: BTreeSet<&str> = docs.iter().map(|d| d.sequence_number.as_str()).collect();
    let want: BTreeSet<&str> = put.poison.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(got, want, "each poison record dead-lettered");
    for doc in docs {
        let (_, data) = put
            .poison
            .iter()
            .find(|(s, _)| *s == doc.sequence_number)
            .unwrap();
        assert_eq!(doc.stream_name, stream);
        assert_eq!(doc.shard_id, "shardId-000000000000");
        assert_eq!(doc.partition_key, "poison");
        assert_eq!(doc.sub_sequence_number, 0);
        assert_eq!(doc.failure_kind, "error");
        assert!(
            doc.failure.contains("cannot parse record"),
            "{}",
            doc.failure
        );
        match data_limit {
            Some(limit) if data.len() > limit => {
                assert!(doc.data.is_none(), "oversized data left out");
                assert!(doc.data_omitted.is_some());
            }
            _ => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(doc.data.as_deref().expect("data"))
                    .unwrap();
                assert_eq!(&decoded, data);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_into_a_kinesis_stream() {
    init_logging();
    let Some(endpoint) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    let config = emulator_config(&endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let (source, dlq) = (unique("dlq-source"), unique("dlq-stream"));
    create_stream(&client, &source, 1).await;
    create_stream(&client, &dlq, 1).await;
    let put = put_records(&client, &source, 300_000).await;
    consume(
        &config,
        &source,
        &put,
        Arc::new(KinesisDeadLetter::new(&config, &dlq)),
    )
    .await;

    let kinesis = AwsKinesis::new(&config);
    let it = kinesis
        .get_shard_iterator(
            &StreamIdentity::from_name(&dlq),
            &ShardId::new("shardId-000000000000"),
            &StartingPosition::TrimHorizon,
        )
        .await
        .unwrap();
    let out = kinesis.get_records(&it, 1000).await.unwrap();
    let docs: Vec<DeadLetterRecord> = out
        .records
        .iter()
        .map(|r| serde_json::from_slice(&r.data).expect("a dead-letter document"))
        .collect();
    // A record may land twice (the handler is retried until it succeeds), never zero times.
    assert!(docs.len() >= put.poison.len());
    assert!(out.records.iter().all(|r| &*r.partition_key == "poison"));
    check(&docs, &put, &source, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_into_an_sqs_queue() {
    init_logging();
    let (Some(kinesis_endpoint), Some(sqs_endpoint)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_SQS_ENDPOINT"),
    ) else {
        return;
    };
    let config = emulator_config(&kinesis_endpoint).await;
    let sqs_config = emulator_config(&sqs_endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&sqs_config);
    let source = unique("dlq-source");
    create_stream(&client, &source, 1).await;
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("dlq"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    let put = put_records(&client, &source, 300_000).await;
    consume(
        &config,
        &source,
        &put,
        Arc::new(SqsDeadLetter::new(&sqs_config, &queue_url)),
    )
    .await;

    let mut docs = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() && docs.len() >= put.poison.len() {
            break;
        }
        for m in messages {
            docs.push(
                serde_json::from_str::<DeadLetterRecord>(m.body().expect("body"))
                    .expect("a dead-letter document"),
            );
        }
    }
    assert!(docs.len() >= put.poison.len());
    check(&docs, &put, &source, Some(200 * 1024));
}

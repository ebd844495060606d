//! End-to-end latency (put → `process_records`) p50/p99, polling vs fan-out, on the in-memory
//! engine and — when `KCL_KINESIS_ENDPOINT` is set (start the emulators first, see the README) —
//! on kinesis-local, in one run. Real time, one worker, one shard, default polling settings
//! (idle time between reads 1.5 s).
//!
//! `cargo bench -p kcl-efo --bench latency`

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use kcl_aws::AwsKinesis;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_efo::{AwsFanOut, FanOutClient, FanOutConfig, FanOutRetrieval, InMemoryFanOut};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 150;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

struct Stamp(Arc<Mutex<Vec<Duration>>>);

#[async_trait]
impl ShardRecordProcessor for Stamp {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let now = now_nanos();
        let latencies: Vec<Duration> = input
            .records
            .iter()
            .filter_map(|r| std::str::from_utf8(&r.data).ok()?.parse::<u128>().ok())
            .map(|sent| Duration::from_nanos(now.saturating_sub(sent) as u64))
            .collect();
        self.0.lock().extend(latencies);
        Ok(())
    }
}

/// How records are put, per backend.
enum Producer {
    Memory(InMemoryKinesis),
    Sdk(aws_sdk_kinesis::Client),
}

impl Producer {
    async fn put(&self, stream: &str, data: String) {
        match self {
            Producer::Memory(k) => {
                k.put_record(stream, PutRecordEntry::new("key", Bytes::from(data)))
                    .await
                    .unwrap();
            }
            Producer::Sdk(c) => {
                c.put_record()
                    .stream_name(stream)
                    .partition_key("key")
                    .data(aws_sdk_kinesis::primitives::Blob::new(data))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

async fn measure(
    label: &str,
    stream: &str,
    producer: &Producer,
    kinesis: Arc<dyn KinesisDataPlane>,
    retrieval: RetrievalMode,
) -> (Duration, Duration) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let sink = latencies.clone();
    let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(stream), "latency")
        .worker_id(label)
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(kinesis)
        .initial_position(InitialPosition::Latest)
        .retrieval(retrieval)
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Stamp(sink.clone()))
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..SAMPLES {
        producer.put(stream, now_nanos().to_string()).await;
        // Spread puts over the polling cycle: 37 ms apart is not a divisor of 1.5 s.
        tokio::time::sleep(Duration::from_millis(37 + (i as u64 * 7) % 23)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let mut l = latencies.lock().clone();
    l.sort();
    assert!(
        l.len() >= SAMPLES * 9 / 10,
        "{label}: only {} of {SAMPLES} records arrived",
        l.len()
    );
    (l[l.len() / 2], l[l.len() * 99 / 100])
}

fn row(name: &str, polling: (Duration, Duration), fan_out: (Duration, Duration)) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<16} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>16.1}",
        ms(polling.0),
        ms(polling.1),
        ms(fan_out.0),
        ms(fan_out.1),
        ms(polling.0.saturating_sub(fan_out.0))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>12} {:>16}",
        "backend", "poll p50 ms", "poll p99 ms", "efo p50 ms", "efo p99 ms", "p50 gain ms"
    );
    let memory = InMemoryKinesis::new();
    memory.create_stream("poll", 1).unwrap();
    memory.create_stream("efo", 1).unwrap();
    let producer = Producer::Memory(memory.clone());
    let polling = measure(
        "memory-poll",
        "poll",
        &producer,
        Arc::new(memory.clone()),
        RetrievalMode::Polling(PollingConfig::default()),
    )
    .await;
    let fan_out = FanOutRetrieval::new(
        Arc::new(InMemoryFanOut(memory.clone())) as Arc<dyn FanOutClient>,
        StreamIdentity::from_name("efo"),
        "latency",
        FanOutConfig::default(),
    )
    .expect("the default fan-out settings are valid");
    let efo = measure(
        "memory-efo",
        "efo",
        &producer,
        Arc::new(memory.clone()),
        RetrievalMode::Custom(Arc::new(fan_out)),
    )
    .await;
    row("in-memory", polling, efo);

    let Ok(endpoint) = std::env::var("KCL_KINESIS_ENDPOINT") else {
        println!("(kinesis-local rows skipped: KCL_KINESIS_ENDPOINT is not set; see the README)");
        return;
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let suffix = std::process::id();
    let (poll_stream, efo_stream) = (format!("lat-poll-{suffix}"), format!("lat-efo-{suffix}"));
    for s in [&poll_stream, &efo_stream] {
        client
            .create_stream()
            .stream_name(s)
            .shard_count(1)
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer = Producer::Sdk(client.clone());
    let kinesis: Arc<dyn KinesisDataPlane> = Arc::new(AwsKinesis::new(&config));
    let polling = measure(
        "local-poll",
        &poll_stream,
        &producer,
        kinesis.clone(),
        RetrievalMode::Polling(PollingConfig::default()),
    )
    .await;
    let fan_out = FanOutRetrieval::new(
        Arc::new(AwsFanOut::new(&config)),
        StreamIdentity::from_name(&efo_stream),
        "latency",
        FanOutConfig::default(),
    )
    .expect("the default fan-out settings are valid");
    let efo = measure(
        "local-efo",
        &efo_stream,
        &producer,
        kinesis,
        RetrievalMode::Custom(Arc::new(fan_out)),
    )
    .await;
    row("kinesis-local", polling, efo);
    for s in [&poll_stream, &efo_stream] {
        let _ = client
            .delete_stream()
            .stream_name(s)
            .enforce_consumer_deletion(true)
            .send()
            .await;
    }
}

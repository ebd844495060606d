//! Enhanced fan-out on kinesis-local, over the plain-HTTP port and over TLS (a CA and a
//! certificate with subjectAltName made by the test tooling, trusted through the SDK's TLS
//! configuration): register the consumer, subscribe, consume a backlog and live records through
//! the full scheduler, and resubscribe from the checkpoint after a worker hands over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_core::testing::{RecordingLedger, StreamKey};
use kcl_efo::{AwsFanOut, FanOutConfig, FanOutRetrieval};
use kcl_tests::{
    create_stream, emulator, emulator_config, emulator_config_tls, init_logging, unique,
};
use tokio_util::sync::CancellationToken;

async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    from: u64,
    to: u64,
    sent: &mut BTreeMap<StreamKey, Vec<String>>,
) {
    for v in from..to {
        let key = format!("k{}", v % 5);
        client
            .put_record()
            .stream_name(stream)
            .partition_key(&key)
            .data(Blob::new(v.to_string()))
            .send()
            .await
            .unwrap();
        sent.entry((stream.to_string(), key))
            .or_default()
            .push(v.to_string());
    }
}

async fn wait_for(seen: &RecordingLedger, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.records() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records",
            seen.records()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_through(config: aws_config::SdkConfig) {
    let client = aws_sdk_kinesis::Client::new(&config);
    let name = unique("efo");
    create_stream(&client, &name, 2).await;
    let stream = StreamIdentity::from_name(&name);
    let store: Arc<dyn LeaseStore> = Arc::new(InMemoryLeaseStore::new());
    let seen = RecordingLedger::new();
    let mut sent = BTreeMap::new();
    put(&client, &name, 0, 20, &mut sent).await;
    let fan_out = FanOutRetrieval::new(
        Arc::new(AwsFanOut::new(&config)),
        stream.clone(),
        "efo-app",
        FanOutConfig::default(),
    )
    .expect("the default fan-out settings are valid");
    let arn = fan_out
        .register()
        .await
        .expect("register the stream consumer");
    assert!(arn.contains("efo-app"), "{arn}");
    let start = |worker: &str| {
        let seen = seen.clone();
        let scheduler = SchedulerBuilder::new(stream.clone(), "efo-app")
            .worker_id(worker)
            .lease_store(store.clone())
            .kinesis(Arc::new(AwsKinesis::new(&config)))
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(2))
            .retrieval(RetrievalMode::Custom(Arc::new(fan_out.clone())))
            .processor_factory(seen.factory())
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        (
            stop,
            tokio::spawn(async move {
                scheduler.run(token).await.unwrap();
            }),
        )
    };
    // The backlog, then live records.
    let (stop, task) = start("w1");
    wait_for(&seen, 20).await;
    put(&client, &name, 20, 40, &mut sent).await;
    wait_for(&seen, 40).await;
    stop.cancel();
    task.await.unwrap();
    // A new worker resubscribes from the checkpoints.
    put(&client, &name, 40, 60, &mut sent).await;
    let (stop, task) = start("w2");
    wait_for(&seen, 60).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(seen.by_key(), sent, "every record once, in order per key");
    client
        .delete_stream()
        .stream_name(&name)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_on_the_plain_port() {
    init_logging();
    let Some(endpoint) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    run_through(emulator_config(&endpoint).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_on_the_tls_port() {
    init_logging();
    let (Some(endpoint), Some(ca)) = (
        emulator("KCL_KINESIS_TLS_ENDPOINT"),
        emulator("KCL_KINESIS_CA"),
    ) else {
        return;
    };
    run_through(emulator_config_tls(&endpoint, &ca).await).await;
}

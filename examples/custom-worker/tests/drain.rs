//! A user's processor under the worker runtime on kinesis-local + moto: ready and healthy,
//! metrics served, every record processed by the user's code, and SIGTERM drains — exit 0,
//! every lease released with its checkpoint at the shard's last record.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcl_core::lease::LeaseStore;
use kcl_tests::{create_stream, emulator, emulator_config, http_get, unique};

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let by = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < by, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_processor_gets_health_metrics_and_the_drain() {
    let (Some(kinesis_endpoint), Some(dynamo_endpoint)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let config = emulator_config(&kinesis_endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = unique("custom");
    create_stream(&client, &stream, 2).await;
    for i in 0..20 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "record-{i}"
            )))
            .send()
            .await
            .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let output = std::env::temp_dir().join(format!("{stream}.out"));
    let table = unique("custom-leases");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcl-custom-worker"))
        .env("KCL_WORKER_APPLICATION", &table)
        .env("KCL_WORKER_STREAMS", &stream)
        .env("KCL_WORKER_INITIAL_POSITION", "TRIM_HORIZON")
        .env("KCL_WORKER_KINESIS_ENDPOINT", &kinesis_endpoint)
        .env("KCL_WORKER_DYNAMODB_ENDPOINT", &dynamo_endpoint)
        .env("KCL_WORKER_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("KCL_WORKER_METRICS_LEVEL", "NONE")
        .env("KCL_WORKER_LOG_FORMAT", "text")
        .env("CUSTOM_WORKER_OUTPUT", &output)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the custom worker starts");

    eventually("/readyz answers 200", async || {
        matches!(http_get(port, "/readyz").await, Some((200, _)))
    })
    .await;
    assert_eq!(http_get(port, "/healthz").await.map(|r| r.0), Some(200));
    eventually("the user's processor wrote every record", async || {
        std::fs::read_to_string(&output)
            .map(|t| t.lines().count() >= 20)
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&output).unwrap();
    for i in 0..20 {
        assert!(
            text.contains(&format!(" RECORD-{i}\n")),
            "record {i}:\n{text}"
        );
    }
    let (code, metrics) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(metrics.contains("RecordsProcessed"), "{metrics}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let by = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < by, "no exit within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0), "drained cleanly");

    // The lease table is named after the application.
    let store = kcl_dynamo_leases::DynamoLeaseStore::from_config(
        &emulator_config(&dynamo_endpoint).await,
        &table,
    );
    let leases = store.list().await.unwrap().leases;
    assert_eq!(leases.len(), 2);
    for lease in &leases {
        assert!(lease.owner.is_none(), "released: {lease:?}");
        assert!(
            lease.checkpoint.sequence().is_some(),
            "checkpointed: {lease:?}"
        );
    }
    let _ = std::fs::remove_file(&output);
}

//! Levels, dimensions and the bounded queue (against an endpoint that refuses connections).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::{Level, Unit, counter, describe_counter, gauge, histogram};

use super::*;

fn record_sample(recorder: &CloudWatchRecorder) {
    metrics::with_local_recorder(recorder, || {
        describe_counter!("RecordsProcessed", Unit::Count, "records");
        for shard in ["s-0", "s-1"] {
            let c = counter!("RecordsProcessed", "Operation" => "ProcessTask", "ShardId" => shard, "WorkerIdentifier" => "w", "pod" => "x");
            c.increment(10);
            c.increment(5);
            histogram!(level: Level::DEBUG, "BatchSize", "ShardId" => shard).record(3.0);
        }
        gauge!("CurrentLeases", "WorkerIdentifier" => "w").set(2.0);
    });
}

fn records_processed(datums: &[Datum]) -> Vec<&Datum> {
    datums
        .iter()
        .filter(|d| d.name == "RecordsProcessed")
        .collect()
}

#[test]
fn detailed_keeps_shards_and_statistic_sets() {
    let recorder = CloudWatchRecorder::new(MetricsLevel::Detailed);
    record_sample(&recorder);
    let datums = recorder.registry.drain(SystemTime::now());
    let records = records_processed(&datums);
    assert_eq!(records.len(), 2);
    let d = records[0];
    assert_eq!(d.unit, Some(Unit::Count));
    assert_eq!(
        d.stats,
        StatisticSet {
            count: 2.0,
            sum: 15.0,
            min: 5.0,
            max: 10.0
        }
    );
    // Labels that are not KCL dimensions ("pod") are dropped; the rest sorted.
    let keys: Vec<&str> = d.dimensions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Operation", "ShardId", "WorkerIdentifier"]);
    assert!(datums.iter().any(|d| d.name == "BatchSize"));
    // Drained: counters start over; gauges repeat their current value.
    let again = recorder.registry.drain(SystemTime::now());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].name, "CurrentLeases");
    assert_eq!(again[0].stats.sum, 2.0);
}

#[test]
fn summary_aggregates_over_shards_and_drops_debug_metrics() {
    let recorder = CloudWatchRecorder::new(MetricsLevel::Summary);
    record_sample(&recorder);
    let datums = recorder.registry.drain(SystemTime::now());
    let records = records_processed(&datums);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].stats.sum, 30.0);
    assert!(records[0].dimensions.iter().all(|(k, _)| k != "ShardId"));
    assert!(!datums.iter().any(|d| d.name == "BatchSize"));
}

#[test]
fn none_publishes_nothing() {
    let recorder = CloudWatchRecorder::new(MetricsLevel::None);
    record_sample(&recorder);
    assert!(recorder.registry.drain(SystemTime::now()).is_empty());
    assert_eq!("summary".parse::<MetricsLevel>(), Ok(MetricsLevel::Summary));
    assert!("verbose".parse::<MetricsLevel>().is_err());
}

#[test]
fn invalid_settings_are_named() {
    let mut c = CloudWatchConfig::new("");
    assert!(c.validate().unwrap_err().contains("namespace"));
    c.namespace = "app".into();
    c.max_datums_per_request = 1001;
    assert!(c.validate().unwrap_err().contains("max_datums_per_request"));
}

#[tokio::test]
async fn an_unreachable_cloudwatch_costs_bounded_memory_and_blocks_nobody() {
    // A port nobody listens on: real SDK calls fail with connection errors.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdk = aws_types::SdkConfig::builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_types::region::Region::new("us-east-1"))
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_cloudwatch::config::SharedCredentialsProvider::new(
            aws_sdk_cloudwatch::config::Credentials::new("a", "b", None, None, "test"),
        ))
        .build();
    let recorder = CloudWatchRecorder::new(MetricsLevel::Detailed);
    let mut config = CloudWatchConfig::new("app");
    config.flush_interval = Duration::from_secs(3600);
    config.queue_capacity = 50;
    config.max_attempts = 1;
    config.shutdown_timeout = Duration::from_secs(5);
    let publisher =
        CloudWatchPublisher::start(&recorder, Arc::new(AwsCloudWatch::new(&sdk)), config).unwrap();
    for round in 0..3 {
        let started = std::time::Instant::now();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..40 {
                counter!("RecordsProcessed", "ShardId" => format!("s-{i}")).increment(round + 1);
            }
        });
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "recording blocked"
        );
        publisher.flush().await;
    }
    // 120 datums produced, at most 50 kept: the oldest 70 dropped and counted.
    assert_eq!(publisher.dropped(), 70);
    assert_eq!(publisher.sent(), 0);
    publisher.shutdown().await;
}

#[tokio::test]
async fn a_cloudwatch_that_accepts_and_never_answers_costs_one_call_timeout() {
    // A real socket that accepts connections and stays silent: the SDK's call hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let sdk = aws_types::SdkConfig::builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_types::region::Region::new("us-east-1"))
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_cloudwatch::config::SharedCredentialsProvider::new(
            aws_sdk_cloudwatch::config::Credentials::new("a", "b", None, None, "test"),
        ))
        .build();
    let recorder = CloudWatchRecorder::new(MetricsLevel::Detailed);
    let mut config = CloudWatchConfig::new("app");
    config.flush_interval = Duration::from_secs(3600);
    config.max_attempts = 1;
    config.call_timeout = Duration::from_millis(300);
    let publisher =
        CloudWatchPublisher::start(&recorder, Arc::new(AwsCloudWatch::new(&sdk)), config).unwrap();
    record_sample(&recorder);
    let started = std::time::Instant::now();
    publisher.flush().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "a hung PutMetricData held the flush for {took:?}"
    );
    assert_eq!(publisher.sent(), 0);
    publisher.shutdown().await;
    silent.abort();
}

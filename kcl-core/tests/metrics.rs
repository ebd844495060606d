//! Metrics through the `metrics` facade, exported by the Prometheus exporter: a worker consumes
//! two shards (one invalid aggregate among the records, one failing batch retried) and the
//! rendered exposition carries the per-shard and per-worker metrics with their labels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::InitialPosition;
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_core::telemetry::FleetSizing;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;

struct FailOnce(Arc<AtomicBool>);

#[async_trait]
impl ShardRecordProcessor for FailOnce {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if !self.0.swap(true, Ordering::SeqCst) {
            return Err("the database is down".into());
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// The value of the exposition line whose name and labels contain all of `parts`.
fn value(text: &str, name: &str, parts: &[&str]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_metrics_reach_the_prometheus_exporter() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    kcl_core::telemetry::describe();

    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("metered", 2).unwrap();
    let mut bytes = 0;
    for i in 0..100 {
        let data = format!("record-{i}");
        bytes += data.len();
        kinesis
            .put_record(
                "metered",
                PutRecordEntry::new(format!("k{i}"), Bytes::from(data)),
            )
            .await
            .unwrap();
    }
    // The aggregate magic followed by garbage: delivered unchanged, counted as a pass-through.
    let bad = Bytes::from_static(b"\xf3\x89\x9a\xc2garbage-that-is-no-aggregate");
    bytes += bad.len();
    kinesis
        .put_record("metered", PutRecordEntry::new("bad", bad))
        .await
        .unwrap();

    let failed = Arc::new(AtomicBool::new(false));
    let scheduler = SchedulerBuilder::new(stream, "app")
        .worker_id("w1")
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .failure_policy(kcl_core::shard::FailurePolicy::Retry {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        })
        .fleet_sizing(FleetSizing {
            interval: Duration::from_millis(200),
            ..FleetSizing::default()
        })
        .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(FailOnce(failed.clone()))
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));

    let mut text = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = handle.render();
        let processed: f64 = value(&text, "RecordsProcessed", &[]).iter().sum();
        if processed >= 101.0 && !value(&text, "WorkersNeeded", &[]).is_empty() {
            break;
        }
    }
    let shard0 = r#"ShardId="shardId-000000000000""#;
    let worker = r#"WorkerIdentifier="w1""#;
    let processed: f64 = value(
        &text,
        "RecordsProcessed",
        &[worker, r#"Operation="ProcessTask""#],
    )
    .iter()
    .sum();
    assert_eq!(processed, 101.0, "{text}");
    assert_eq!(value(&text, "RecordsProcessed", &[shard0]).len(), 1);
    let data: f64 = value(&text, "DataBytesProcessed", &[worker]).iter().sum();
    assert_eq!(data, bytes as f64);
    assert_eq!(
        value(&text, "DeaggregationPassThroughs", &[worker])
            .iter()
            .sum::<f64>(),
        1.0
    );
    assert_eq!(
        value(&text, "ProcessorErrors", &[r#"Outcome="retry""#])
            .iter()
            .sum::<f64>(),
        1.0
    );
    assert_eq!(value(&text, "CurrentLeases", &[worker]), vec![2.0]);
    assert_eq!(value(&text, "TakenLeases", &[worker]), vec![2.0]);
    assert_eq!(value(&text, "NumWorkers", &[worker]), vec![1.0]);
    assert!(value(&text, "WorkersNeeded", &[worker])[0] >= 1.0);
    assert!(!value(&text, "MillisBehindLatest", &[shard0]).is_empty());
    // Histograms: '.' in names becomes '_' in Prometheus.
    assert!(
        !value(
            &text,
            "RecordProcessor_processRecords_Time_count",
            &[shard0]
        )
        .is_empty(),
        "{text}"
    );
    assert!(
        !value(
            &text,
            "LeaseStore_Time_count",
            &[r#"Operation="TakeLease""#]
        )
        .is_empty()
    );
    assert!(text.contains("# HELP RecordsProcessed User records processed"));

    stop.cancel();
    run.await.unwrap().unwrap();
    let text = handle.render();
    assert_eq!(value(&text, "CurrentLeases", &[worker]), vec![0.0]);
}

//! kcl-rs metrics on a real CloudWatch emulator (moto, behind the test tooling's CBOR
//! translator): a worker consumes two shards of the in-memory engine with the CloudWatch
//! recorder installed; the only flush is the one at shutdown, and afterwards CloudWatch holds
//! every record count, with the KCL's names, dimensions, units and statistic sets.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, StandardUnit, Statistic};
use bytes::Bytes;
use kcl_cloudwatch::{
    AwsCloudWatch, CloudWatchConfig, CloudWatchPublisher, CloudWatchRecorder, MetricsLevel,
};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::InitialPosition;
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_tests::{emulator, emulator_config, unique};
use tokio_util::sync::CancellationToken;

struct Checkpointing;

#[async_trait]
impl ShardRecordProcessor for Checkpointing {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_land_in_cloudwatch_and_the_shutdown_flush_loses_nothing() -> anyhow::Result<()> {
    let Some(endpoint) = emulator("KCL_CLOUDWATCH_ENDPOINT") else {
        return Ok(());
    };
    let sdk = emulator_config(&endpoint).await;
    let namespace = unique("kcl-metrics");
    let recorder = CloudWatchRecorder::new(MetricsLevel::Detailed);
    let mut config = CloudWatchConfig::new(&namespace);
    config.flush_interval = Duration::from_secs(3600); // only the shutdown flush publishes
    let publisher =
        CloudWatchPublisher::start(&recorder, Arc::new(AwsCloudWatch::new(&sdk)), config).unwrap();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    kcl_core::telemetry::describe();

    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("cw", 2).unwrap();
    let worker = unique("w");
    let mut bytes = 0;
    for i in 0..60 {
        let data = format!("value-{i}");
        bytes += data.len();
        kinesis
            .put_record(
                "cw",
                PutRecordEntry::new(format!("k{i}"), Bytes::from(data)),
            )
            .await?;
    }
    let scheduler = SchedulerBuilder::new(stream, "cw-app")
        .worker_id(&worker)
        .lease_store(Arc::new(InMemoryLeaseStore::new()))
        .kinesis(Arc::new(kinesis.clone()))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(|_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Checkpointing)
        })
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    run.await??;
    publisher.shutdown().await;

    let client = aws_sdk_cloudwatch::Client::new(&sdk);
    let start = DateTime::from(SystemTime::now() - Duration::from_secs(600));
    let end = DateTime::from(SystemTime::now() + Duration::from_secs(600));
    let stats = |name: &str, d: Vec<Dimension>| {
        client
            .get_metric_statistics()
            .namespace(&namespace)
            .metric_name(name)
            .set_dimensions(Some(d))
            .start_time(start)
            .end_time(end)
            .period(60)
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount)
            .statistics(Statistic::Maximum)
            .send()
    };
    let mut records = 0.0;
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let out = stats(
            "RecordsProcessed",
            dims(&[
                ("Operation", "ProcessTask"),
                ("ShardId", shard),
                ("WorkerIdentifier", &worker),
            ]),
        )
        .await?;
        let points = out.datapoints();
        assert_eq!(points.len(), 1, "{shard}: {points:?}");
        assert_eq!(points[0].unit(), Some(&StandardUnit::Count));
        // A statistic set: one sample per successful batch, summing to the records.
        assert!(points[0].sample_count().unwrap() >= 1.0);
        records += points[0].sum().unwrap();
    }
    assert_eq!(records, 60.0);

    let mut data = 0.0;
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let out = stats(
            "DataBytesProcessed",
            dims(&[
                ("Operation", "ProcessTask"),
                ("ShardId", shard),
                ("WorkerIdentifier", &worker),
            ]),
        )
        .await?;
        let p = &out.datapoints()[0];
        assert_eq!(p.unit(), Some(&StandardUnit::Bytes));
        data += p.sum().unwrap();
    }
    assert_eq!(data, bytes as f64);

    let leases = stats(
        "TakenLeases",
        dims(&[
            ("Operation", "LeaseCoordinator"),
            ("WorkerIdentifier", &worker),
        ]),
    )
    .await?;
    assert_eq!(leases.datapoints()[0].sum(), Some(2.0));
    let behind = stats(
        "MillisBehindLatest",
        dims(&[
            ("Operation", "ProcessTask"),
            ("ShardId", "shardId-000000000000"),
            ("WorkerIdentifier", &worker),
        ]),
    )
    .await?;
    assert_eq!(
        behind.datapoints()[0].unit(),
        Some(&StandardUnit::Milliseconds)
    );

    let listed = client.list_metrics().namespace(&namespace).send().await?;
    let names: std::collections::BTreeSet<&str> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    for expected in [
        "RecordsProcessed",
        "DataBytesProcessed",
        "MillisBehindLatest",
        "RecordProcessor.processRecords.Time",
        "CurrentLeases",
        "LeaseStore.Time",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}

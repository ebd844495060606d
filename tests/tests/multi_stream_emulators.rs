//! Multi-stream mode on the emulators: one scheduler consumes two kinesis-local streams with one
//! moto lease table; the stream identity comes from DescribeStreamSummary; lease items carry the
//! KCL's multi-stream keys and attributes; a stream removed and re-added resumes where it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::{LeaseStore, MultiStreamKey};
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{
    RemovedStreamPolicy, RetrievalMode, SchedulerBuilder, StreamConfig, StreamSet,
};
use kcl_core::testing::{RecordingLedger, StreamKey};
use kcl_tests::{create_stream, emulator, emulator_config, init_logging, lease_table, unique};
use tokio_util::sync::CancellationToken;

async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    from: u64,
    n: u64,
    sent: &mut BTreeMap<StreamKey, Vec<String>>,
) {
    for v in from..from + n {
        let key = format!("k{}", v % 7);
        client
            .put_record()
            .stream_name(stream)
            .partition_key(&key)
            .data(Blob::new(v.to_string()))
            .send()
            .await
            .expect("put");
        sent.entry((stream.to_string(), key))
            .or_default()
            .push(v.to_string());
    }
}

/// Waits until the ledger holds exactly what was sent: every record once, in order per key.
async fn wait_for(ledger: &RecordingLedger, sent: &BTreeMap<StreamKey, Vec<String>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if ledger.by_key() == *sent {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not everything processed: {:?} vs {:?}",
            ledger.by_key(),
            sent
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_two_streams_one_lease_table() -> anyhow::Result<()> {
    init_logging();
    let (Some(kinesis_endpoint), Some(dynamo_endpoint)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return Ok(());
    };
    let kinesis_config = emulator_config(&kinesis_endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&kinesis_config);
    let (a, b) = (unique("ms-a"), unique("ms-b"));
    create_stream(&client, &a, 2).await;
    create_stream(&client, &b, 1).await;
    let data_plane: Arc<dyn KinesisDataPlane> = Arc::new(AwsKinesis::new(&kinesis_config));
    let summary = data_plane
        .describe_stream(&StreamIdentity::from_name(&a))
        .await?;
    let account = summary
        .identity
        .account_id()
        .expect("an account in the ARN");
    let epoch = summary.creation_epoch_seconds;
    assert!(epoch > 1_600_000_000, "creation time {epoch}");

    let store: Arc<dyn LeaseStore> = Arc::new(lease_table(&dynamo_endpoint, "ms-leases").await);
    let streams = StreamSet::new(RemovedStreamPolicy::Keep);
    for name in [&a, &b] {
        streams.add(StreamConfig::new(
            StreamIdentity::from_name(name),
            InitialPosition::TrimHorizon,
        ));
    }
    let ledger = RecordingLedger::new();
    let scheduler = SchedulerBuilder::multi_stream(streams.clone(), "multi")
        .worker_id("w0")
        .lease_store(store.clone())
        .kinesis(data_plane.clone())
        .failover_time(Duration::from_secs(2))
        .shard_sync_interval(Duration::from_secs(1))
        .retrieval(RetrievalMode::Polling(
            PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
        ))
        .processor_factory(ledger.factory())
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(stop.clone()));

    let mut sent = BTreeMap::new();
    put(&client, &a, 0, 40, &mut sent).await;
    put(&client, &b, 1000, 40, &mut sent).await;
    wait_for(&ledger, &sent).await;

    // The lease items are the KCL's multi-stream items.
    let listing = store.list().await?;
    assert!(listing.malformed.is_empty());
    let mut by_stream: BTreeMap<String, usize> = BTreeMap::new();
    for lease in &listing.leases {
        let key: MultiStreamKey = lease.key.parse()?;
        assert_eq!(key.account_id, account);
        let attrs = lease.multi_stream.as_ref().expect("streamName/shardId");
        assert_eq!(attrs.stream_identifier, key.stream_identifier());
        *by_stream.entry(key.stream_name).or_default() += 1;
    }
    assert_eq!(by_stream.get(&a), Some(&2));
    assert_eq!(by_stream.get(&b), Some(&1));
    assert!(
        listing
            .leases
            .iter()
            .any(|l| l.key == format!("{account}:{a}:{epoch}:shardId-000000000000"))
    );

    // Removed: not consumed, leases kept; added back: resumes from the checkpoints.
    streams.remove(&b);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut later = BTreeMap::new();
    put(&client, &b, 2000, 20, &mut later).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        ledger
            .by_key()
            .get(&(b.clone(), "k0".to_string()))
            .is_some_and(|v| v.iter().all(|x| x.parse::<u64>().unwrap() < 2000)),
        "a removed stream was consumed"
    );
    let b_leases: Vec<_> = store
        .list()
        .await?
        .leases
        .into_iter()
        .filter(|l| l.key.contains(&format!(":{b}:")))
        .collect();
    assert_eq!(b_leases.len(), 1);
    assert!(b_leases[0].owner.is_none(), "released: {:?}", b_leases[0]);
    for (k, mut v) in later {
        sent.entry(k).or_default().append(&mut v);
    }
    streams.add(StreamConfig::new(
        StreamIdentity::from_name(&b),
        InitialPosition::TrimHorizon,
    ));
    wait_for(&ledger, &sent).await;

    stop.cancel();
    let report = run.await??;
    assert_eq!(report.aborted, 0);
    Ok(())
}

//! Outages of the real emulators: two workers consume a kinesis-local stream with leases in moto,
//! each reached through a TCP relay the test can cut (every connection reset, new ones refused),
//! as a restarting emulator, a failed-over endpoint or a network partition looks to the SDK.
//! DynamoDB goes away for longer than the failover time (leases are lost, checkpoints fail),
//! then Kinesis goes away (GetRecords fails). Afterwards the workers are still running, every
//! checkpoint failure was a typed, retryable error, and the ledger proves nothing was lost and
//! per-key order held.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kcl_aws::AwsKinesis;
use kcl_core::checkpoint::CheckpointError;
use kcl_core::lease::LeaseStore;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{
    LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_dynamo_leases::DynamoLeaseStore;
use kcl_tests::{create_stream, emulator, emulator_config, init_logging, lease_table, unique};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP relay to an emulator that can be cut and restored.
struct Relay {
    endpoint: String,
    up: Arc<AtomicBool>,
    /// Cancelled to reset every relayed connection; replaced on each cut.
    generation: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let (up_flag, current) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up_flag.load(Ordering::SeqCst) {
                    // Closed before any response: what a restarting server looks like.
                    drop(client);
                    continue;
                }
                let cut = current.lock().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self {
            endpoint,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let old = std::mem::take(&mut *self.generation.lock());
        old.cancel();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

type Ledger = Arc<Mutex<Vec<(String, u64)>>>;

#[derive(Default)]
struct Counters {
    lease_lost: AtomicU64,
    checkpoint_failures: AtomicU64,
    untyped_failures: Mutex<Vec<String>>,
}

struct Recorder {
    ledger: Ledger,
    counters: Arc<Counters>,
}

#[async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        {
            let mut ledger = self.ledger.lock();
            for r in input.records {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                let (key, value) = text.split_once('#').expect("key#value");
                ledger.push((key.to_string(), value.parse().expect("value")));
            }
        }
        if let Err(e) = input.checkpointer.checkpoint().await {
            // Either the lease is gone (fenced) or the store failed: both typed; a store failure
            // during an outage must say it is worth retrying.
            self.counters
                .checkpoint_failures
                .fetch_add(1, Ordering::SeqCst);
            let fenced = matches!(e, CheckpointError::LeaseLost { .. });
            if !fenced && !e.is_retryable() {
                self.counters.untyped_failures.lock().push(e.to_string());
            }
        }
        Ok(())
    }

    async fn lease_lost(&mut self, _input: LeaseLostInput) {
        self.counters.lease_lost.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_dynamodb_and_kinesis_outages() {
    init_logging();
    let (Some(kinesis_endpoint), Some(dynamo_endpoint)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let client = aws_sdk_kinesis::Client::new(&emulator_config(&kinesis_endpoint).await);
    let stream_name = unique("outage");
    create_stream(&client, &stream_name, 2).await;
    let table = lease_table(&dynamo_endpoint, "outage-leases").await;
    let dynamo_relay = Relay::start(&dynamo_endpoint).await;
    let kinesis_relay = Relay::start(&kinesis_endpoint).await;
    let store: Arc<dyn LeaseStore> = Arc::new(DynamoLeaseStore::from_config(
        &emulator_config(&dynamo_relay.endpoint).await,
        table.table(),
    ));
    let data_plane = Arc::new(AwsKinesis::new(
        &emulator_config(&kinesis_relay.endpoint).await,
    ));
    let ledger: Ledger = Arc::default();
    let counters = Arc::new(Counters::default());

    let mut workers = Vec::new();
    for name in ["w0", "w1"] {
        let (ledger, counters) = (ledger.clone(), counters.clone());
        let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(&stream_name), "outage")
            .worker_id(name)
            .lease_store(store.clone())
            .kinesis(data_plane.clone())
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(2))
            .shard_sync_interval(Duration::from_secs(2))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(Recorder {
                    ledger: ledger.clone(),
                    counters: counters.clone(),
                })
            })
            .build()
            .expect("valid config");
        let status = scheduler.status();
        let stop = CancellationToken::new();
        let run = tokio::spawn(scheduler.run(stop.clone()));
        workers.push((stop, run, status));
    }

    // The producer writes straight to kinesis-local throughout: 8 keys, one record each per
    // 200 ms round; DynamoDB is cut for 5 s (over twice the failover time), then Kinesis for 4 s.
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    let at = |s: u64| Duration::from_secs(s);
    let (mut dynamo_cut, mut dynamo_back, mut kinesis_cut, mut kinesis_back) =
        (false, false, false, false);
    while started.elapsed() < at(22) {
        for k in 0..8 {
            let key = format!("key{k}");
            let value = next.entry(key.clone()).or_insert(0);
            client
                .put_record()
                .stream_name(&stream_name)
                .partition_key(&key)
                .data(Blob::new(format!("{key}#{value}")))
                .send()
                .await
                .expect("put (not through the relays)");
            *value += 1;
        }
        let t = started.elapsed();
        if !dynamo_cut && t >= at(4) {
            dynamo_relay.cut();
            dynamo_cut = true;
        }
        if !dynamo_back && t >= at(9) {
            dynamo_relay.restore();
            dynamo_back = true;
        }
        if !kinesis_cut && t >= at(13) {
            kinesis_relay.cut();
            kinesis_cut = true;
        }
        if !kinesis_back && t >= at(17) {
            kinesis_relay.restore();
            kinesis_back = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent: u64 = next.values().sum();

    // Everything arrives after both outages.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: BTreeSet<(String, u64)> = ledger.lock().iter().cloned().collect();
        if seen.len() as u64 >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {sent} records processed after the outages",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (_, run, status) in &workers {
        assert!(
            status.is_running() && !run.is_finished(),
            "a worker stopped"
        );
    }
    for (stop, run, _) in workers {
        stop.cancel();
        let report = run.await.unwrap().expect("scheduler run");
        assert_eq!(report.aborted, 0);
    }

    // Per key, first deliveries in put order with no gap; repeats only re-deliver.
    let ledger = ledger.lock().clone();
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (key, value) in &ledger {
        if seen.insert((key.clone(), *value)) {
            let e = expected.entry(key).or_insert(0);
            assert_eq!(*value, *e, "{key}: #{value} first delivered before #{e}");
            *e += 1;
        }
    }
    assert_eq!(seen.len() as u64, sent);
    assert!(
        counters.lease_lost.load(Ordering::SeqCst) > 0,
        "the DynamoDB outage outlasted the failover time: leases were lost"
    );
    assert!(
        counters.untyped_failures.lock().is_empty(),
        "checkpoint failures not marked retryable: {:?}",
        counters.untyped_failures.lock()
    );
    // Released on the graceful stop once DynamoDB was back.
    let listing = table.list().await.unwrap();
    assert!(listing.leases.iter().all(|l| l.owner.is_none()));
    println!(
        "{sent} records, {} deliveries, {} lease losses, {} failed checkpoints",
        ledger.len(),
        counters.lease_lost.load(Ordering::SeqCst),
        counters.checkpoint_failures.load(Ordering::SeqCst)
    );
}

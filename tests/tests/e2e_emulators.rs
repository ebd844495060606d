//! End to end on the emulators: a stream on kinesis-local, leases in moto, three workers. Records
//! are put across shards (KPL aggregates among them) while one shard splits and two merge; one
//! worker stops gracefully and another is killed. A ledger checks that every record was
//! processed, per-key order held across lineage, children started only after their parents, and
//! every lease ends checkpointed at the right place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kcl_aws::AwsKinesis;
use kcl_core::aggregation::Aggregator;
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::LeaseStore;
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, ShardId, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use kcl_tests::{
    create_stream, emulator, emulator_config, init_logging, lease_table, unique, wait_active,
};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every successful `process_records`: shard and records (key, value, position), in order.
type Ledger = Arc<Mutex<Vec<(ShardId, Vec<(String, u64, ExtendedSequenceNumber)>)>>>;

struct Recorder {
    shard: ShardId,
    ledger: Ledger,
}

#[async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let records = input
            .records
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                let (key, value) = text.split_once('#').expect("key#value");
                (
                    key.to_string(),
                    value.parse().expect("value"),
                    r.extended_sequence_number(),
                )
            })
            .collect();
        self.ledger.lock().push((self.shard.clone(), records));
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

struct Producer {
    client: aws_sdk_kinesis::Client,
    stream: String,
    next: BTreeMap<String, u64>,
    /// Last position put per shard, from PutRecords' answers: (shard, sequence, sub-sequence).
    last: BTreeMap<String, ExtendedSequenceNumber>,
    sent: usize,
}

impl Producer {
    /// Puts `n` records over 16 keys; every fourth key's records of a round go out as one
    /// aggregate of three.
    async fn put(&mut self, rounds: usize) {
        for round in 0..rounds {
            let mut entries = Vec::new();
            for k in 0..16 {
                let key = format!("key{k}");
                let count = if (k + round) % 4 == 0 { 3 } else { 1 };
                let mut agg = Aggregator::new();
                let mut data = None;
                for _ in 0..count {
                    let next = self.next.entry(key.clone()).or_insert(0);
                    let payload = format!("{key}#{next}");
                    *next += 1;
                    self.sent += 1;
                    if count == 1 {
                        data = Some(payload.into_bytes());
                    } else {
                        agg.add(&key, None, payload.into()).unwrap();
                    }
                }
                let (data, subs) = match data {
                    Some(d) => (d, 1),
                    None => (agg.flush().unwrap().data.to_vec(), count),
                };
                entries.push((
                    PutRecordsRequestEntry::builder()
                        .partition_key(&key)
                        .data(Blob::new(data))
                        .build()
                        .unwrap(),
                    subs,
                ));
            }
            let out = self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries.iter().map(|(e, _)| e.clone()).collect()))
                .send()
                .await
                .unwrap();
            assert_eq!(out.failed_record_count(), Some(0));
            for (r, (_, subs)) in out.records().iter().zip(&entries) {
                let position = ExtendedSequenceNumber::Sequence {
                    sequence: kcl_core::model::SequenceNumber::new(r.sequence_number().unwrap())
                        .unwrap(),
                    sub_sequence: (*subs - 1) as u64,
                };
                let shard = r.shard_id().unwrap().to_string();
                let last = self.last.entry(shard).or_insert(position.clone());
                if position > *last {
                    *last = position;
                }
            }
        }
    }
}

struct Fleet {
    workers: BTreeMap<String, (CancellationToken, JoinHandle<()>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_through_split_merge_stop_and_kill() -> anyhow::Result<()> {
    init_logging();
    let (Some(kinesis_endpoint), Some(dynamo_endpoint)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return Ok(());
    };
    let kinesis_config = emulator_config(&kinesis_endpoint).await;
    let client = aws_sdk_kinesis::Client::new(&kinesis_config);
    let stream_name = unique("e2e");
    create_stream(&client, &stream_name, 4).await;
    let stream = StreamIdentity::from_name(&stream_name);
    let data_plane: Arc<dyn KinesisDataPlane> = Arc::new(AwsKinesis::new(&kinesis_config));
    let store: Arc<dyn LeaseStore> = Arc::new(lease_table(&dynamo_endpoint, "e2e-leases").await);
    let ledger: Ledger = Arc::default();

    let start = |name: &str| {
        let ledger = ledger.clone();
        let scheduler = SchedulerBuilder::new(stream.clone(), "e2e")
            .worker_id(name)
            .lease_store(store.clone())
            .kinesis(data_plane.clone())
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(2))
            .parent_shard_poll_interval(Duration::from_millis(300))
            .shard_sync_interval(Duration::from_secs(2))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |info: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(Recorder {
                    shard: info.shard_id.clone(),
                    ledger: ledger.clone(),
                })
            })
            .build()
            .expect("valid config");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let run = tokio::spawn(async move {
            scheduler.run(token).await.expect("scheduler run");
        });
        (stop, run)
    };
    let mut fleet = Fleet {
        workers: BTreeMap::new(),
    };
    for w in ["w0", "w1", "w2"] {
        fleet.workers.insert(w.to_string(), start(w));
    }
    let mut producer = Producer {
        client: client.clone(),
        stream: stream_name.clone(),
        next: BTreeMap::new(),
        last: BTreeMap::new(),
        sent: 0,
    };
    producer.put(8).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Reshard while consuming: split shard 0, merge shards 2 and 3.
    client
        .split_shard()
        .stream_name(&stream_name)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 8).to_string())
        .send()
        .await?;
    wait_active(&client, &stream_name).await;
    client
        .merge_shards()
        .stream_name(&stream_name)
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await?;
    wait_active(&client, &stream_name).await;
    producer.put(8).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One worker stops gracefully, another is killed.
    let (stop, run) = fleet.workers.remove("w1").unwrap();
    stop.cancel();
    run.await?;
    let (_, run) = fleet.workers.remove("w2").unwrap();
    run.abort();
    let _ = run.await;
    producer.put(8).await;

    // Wait until every record was processed.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let processed: BTreeSet<(String, u64)> = ledger
            .lock()
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|(k, v, _)| (k.clone(), *v)))
            .collect();
        if processed.len() >= producer.sent {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} records processed",
            processed.len(),
            producer.sent
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The killed worker's leases — its own and any it had just accepted from w1's planned
    // hand-off — expire and move to w0, records or not, before w0 stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .list()
        .await?
        .leases
        .iter()
        .any(|l| l.owner.as_deref() == Some("w2"))
    {
        anyhow::ensure!(Instant::now() < deadline, "w2's leases never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (stop, run) = fleet.workers.remove("w0").unwrap();
    stop.cancel();
    run.await?;

    // The ledger.
    let ledger = ledger.lock().clone();
    let shards = data_plane.list_all_shards(&stream, None).await?;
    let mut first: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut next_expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_call_of_shard: BTreeMap<ShardId, usize> = BTreeMap::new();
    let mut last_first_of_shard: BTreeMap<ShardId, usize> = BTreeMap::new();
    for (i, (shard, records)) in ledger.iter().enumerate() {
        first_call_of_shard.entry(shard.clone()).or_insert(i);
        for (key, value, _) in records {
            if first.contains_key(&(key.clone(), *value)) {
                continue;
            }
            let expected = next_expected.entry(key.clone()).or_insert(0);
            anyhow::ensure!(
                *value == *expected,
                "{key}#{value} first processed before #{expected}"
            );
            *expected += 1;
            first.insert((key.clone(), *value), i);
            last_first_of_shard.insert(shard.clone(), i);
        }
    }
    anyhow::ensure!(
        first.len() == producer.sent,
        "{} of {} records processed",
        first.len(),
        producer.sent
    );
    for s in &shards {
        let Some(child_first) = first_call_of_shard.get(&s.id) else {
            continue;
        };
        for parent in s.parents() {
            if let Some(parent_last) = last_first_of_shard.get(parent) {
                anyhow::ensure!(
                    child_first > parent_last,
                    "{} started before its parent {parent} ended",
                    s.id
                );
            }
        }
    }
    // Every lease ends checkpointed at the right place: closed shards at SHARD_END (or cleaned
    // up), open shards at their last record.
    let leases = store.list().await?.leases;
    for s in &shards {
        let lease = leases.iter().find(|l| l.key == s.id.as_str());
        match (s.is_open(), lease) {
            (false, None) => {}
            (false, Some(l)) => anyhow::ensure!(
                l.is_shard_end(),
                "closed {} checkpointed at {}",
                s.id,
                l.checkpoint
            ),
            (true, Some(l)) => {
                let want = producer
                    .last
                    .get(s.id.as_str())
                    .cloned()
                    .unwrap_or(ExtendedSequenceNumber::TrimHorizon);
                anyhow::ensure!(
                    l.checkpoint == want,
                    "open {} checkpointed at {}, last record {}",
                    s.id,
                    l.checkpoint,
                    want
                );
                anyhow::ensure!(
                    l.owner.is_none(),
                    "lease of {} still owned by {:?} after graceful stops",
                    s.id,
                    l.owner
                );
            }
            (true, None) => anyhow::bail!("open shard {} has no lease", s.id),
        }
    }
    println!(
        "{} records, {} calls, {} shards: all processed, in order, lineage respected",
        producer.sent,
        ledger.len(),
        shards.len()
    );
    client
        .delete_stream()
        .stream_name(&stream_name)
        .send()
        .await?;
    Ok(())
}

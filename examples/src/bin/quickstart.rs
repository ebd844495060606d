//! Quickstart: a real consumer fleet on the embedded in-memory engine and lease store — no AWS
//! account, no emulator.
//!
//! A producer writes keyed records (some packed as KPL aggregates) into a 4-shard stream while
//! three workers share it; one shard splits mid-run; when every record has been processed the
//! workers shut down gracefully. The run checks that every record was processed exactly once and
//! in order per partition key, and prints a summary.
//!
//! `cargo run -p kcl-examples --bin quickstart`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use kcl_core::aggregation::Aggregator;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{InitialPosition, ShardId};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::retrieval::PollingConfig;
use kcl_core::scheduler::{RetrievalMode, SchedulerBuilder};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

const KEYS: usize = 40;
const ROUNDS: usize = 50;

/// What every processor saw: per partition key, the values in the order processed, and which
/// worker processed how many.
#[derive(Default)]
struct Seen {
    by_key: BTreeMap<String, Vec<u64>>,
    by_worker: BTreeMap<String, usize>,
}

/// The application: a dozen lines.
struct Counter {
    worker: String,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl ShardRecordProcessor for Counter {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.seen.lock();
            for r in input.records {
                let value: u64 = std::str::from_utf8(&r.data)?.parse()?;
                seen.by_key
                    .entry(r.partition_key.to_string())
                    .or_default()
                    .push(value);
            }
            *seen.by_worker.entry(self.worker.clone()).or_default() += input.records.len();
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let started = Instant::now();
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("quickstart", 4)?;
    let store: Arc<dyn LeaseStore> = Arc::new(InMemoryLeaseStore::new());
    let seen = Arc::new(Mutex::new(Seen::default()));

    let mut workers = Vec::new();
    for w in ["worker-a", "worker-b", "worker-c"] {
        let seen = seen.clone();
        let scheduler = SchedulerBuilder::new(stream.clone(), "quickstart")
            .worker_id(w)
            .lease_store(store.clone())
            .kinesis(Arc::new(kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(3))
            .parent_shard_poll_interval(Duration::from_millis(200))
            .retrieval(RetrievalMode::Polling(
                PollingConfig::default().with_idle_time_between_reads(Duration::from_millis(200)),
            ))
            .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(Counter {
                    worker: w.to_string(),
                    seen: seen.clone(),
                })
            })
            .build()?;
        let stop = CancellationToken::new();
        workers.push((w, stop.clone(), tokio::spawn(scheduler.run(stop))));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Produce; split a shard half-way through.
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next = 0u64;
    let mut aggregator = Aggregator::new();
    for round in 0..ROUNDS {
        for k in 0..KEYS {
            let key = format!("device-{k}");
            // Every fifth round, each key sends a KPL aggregate of three records.
            let count = if round % 5 == 4 { 3 } else { 1 };
            for _ in 0..count {
                sent.entry(key.clone()).or_default().push(next);
                let data = Bytes::from(next.to_string());
                next += 1;
                if count == 1 {
                    kinesis
                        .put_record("quickstart", PutRecordEntry::new(&key, data))
                        .await?;
                } else {
                    aggregator.add(&key, None, data)?;
                }
            }
            if let Some(a) = aggregator.flush() {
                kinesis
                    .put_record("quickstart", PutRecordEntry::new(&a.partition_key, a.data))
                    .await?;
            }
        }
        if round == ROUNDS / 2 {
            let children = kinesis.split_shard_evenly("quickstart", &ShardId::from_index(1))?;
            println!(
                "split shardId-000000000001 into {} and {}",
                children[0], children[1]
            );
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let total = next as usize;
    println!("produced {total} records over {KEYS} partition keys");

    // Wait until everything was processed, then shut down gracefully.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let processed: usize = seen.lock().by_key.values().map(Vec::len).sum();
        if processed >= total {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {processed} of {total} records processed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, stop, _) in &workers {
        stop.cancel();
    }
    for (w, _, run) in workers {
        let report = run.await.context("worker task")??;
        println!(
            "{w}: stopped ({:?}), shards processed to their end: {}",
            report.end, report.shards_ended
        );
    }

    let seen = std::mem::take(&mut *seen.lock());
    for (w, n) in &seen.by_worker {
        println!("{w} processed {n} records");
    }
    let duplicates = seen.by_key.values().map(Vec::len).sum::<usize>() - total;
    ensure!(
        seen.by_key == sent,
        "records lost, duplicated or out of order per key"
    );
    let leases = store.list().await?.leases;
    println!(
        "\n{total} records, {duplicates} duplicates, in order per key; {} leases, all released: {}; {:.1} s",
        leases.len(),
        leases.iter().all(|l| l.owner.is_none()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

//! Quickstart on the embedded in-memory engine: no AWS account, no emulator.
//!
//! A producer writes keyed records (some packed as KPL aggregates) into a 2-shard stream, one
//! shard splits and two shards merge mid-run, then the stream is read back through its shard
//! lineage — parents before children — and unpacked. The run checks that every record arrived
//! once and in order per partition key, and prints a summary.
//!
//! `cargo run -p kcl-examples --bin quickstart`
//!
//! Until the scheduler lands this reads the lineage with `drain_stream`; it will become a real
//! consumer (leases, checkpoints, several workers) without changing how it is run.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kcl_core::aggregation::{Aggregator, Deaggregator};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::kinesis::{KinesisDataPlane, ShardFilter, drain_stream};

const KEYS: usize = 50;
const ROUNDS_PER_PHASE: usize = 40;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("quickstart", 2)?;
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next = 0u64;

    for phase in 0..3 {
        produce(&kinesis, &mut sent, &mut next).await?;
        let open = kinesis
            .list_all_shards(&stream, Some(ShardFilter::AtLatest))
            .await?;
        match phase {
            0 => {
                let children = kinesis.split_shard_evenly("quickstart", &open[0].id)?;
                println!(
                    "split {} into {} and {}",
                    open[0].id, children[0], children[1]
                );
            }
            1 => {
                // After the split the open shards are, in hash order: child, child, original.
                let mut by_range = open.clone();
                by_range.sort_by_key(|s| s.hash_key_range);
                let child = kinesis.merge_shards("quickstart", &by_range[1].id, &by_range[2].id)?;
                println!(
                    "merged {} and {} into {child}",
                    by_range[1].id, by_range[2].id
                );
            }
            _ => {}
        }
    }

    let (per_shard, order) = drain_stream(&kinesis, &stream).await?;
    let shards = kinesis.list_all_shards(&stream, None).await?;
    let deaggregator = Deaggregator::new();
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    println!(
        "\n{:<22} {:<44} {:>8} {:>8}",
        "shard (read order)", "parents", "kinesis", "user"
    );
    for id in &order {
        let shard = shards
            .iter()
            .find(|s| &s.id == id)
            .context("listed shard")?;
        let (users, report) = deaggregator.deaggregate(per_shard[id].iter().cloned());
        let parents: Vec<String> = shard.parents().map(ToString::to_string).collect();
        println!(
            "{:<22} {:<44} {:>8} {:>8}",
            id.to_string(),
            parents.join(" + "),
            report.kinesis_records,
            report.user_records
        );
        for r in users {
            let value: u64 = std::str::from_utf8(&r.data)?.parse()?;
            received
                .entry(r.partition_key.to_string())
                .or_default()
                .push(value);
        }
    }
    let total: usize = received.values().map(Vec::len).sum();
    ensure!(
        received == sent,
        "records lost, duplicated or out of order per key"
    );
    println!(
        "\n{total} user records over {} partition keys: every one delivered once, in order per key",
        sent.len()
    );
    Ok(())
}

/// Puts records round-robin over `KEYS` keys; every fourth round sends each key a KPL aggregate
/// of `PER_AGGREGATE` consecutive records instead of one plain record. An aggregate holds one
/// key, as the KPL's shard-aware aggregation guarantees: mixing keys of different shards in one
/// aggregate would put some of them in the wrong shard.
async fn produce(
    kinesis: &InMemoryKinesis,
    sent: &mut BTreeMap<String, Vec<u64>>,
    next: &mut u64,
) -> anyhow::Result<()> {
    const PER_AGGREGATE: usize = 5;
    let mut aggregator = Aggregator::new();
    for round in 0..ROUNDS_PER_PHASE {
        for k in 0..KEYS {
            let key = format!("device-{k}");
            let count = if round % 4 == 3 { PER_AGGREGATE } else { 1 };
            for _ in 0..count {
                sent.entry(key.clone()).or_default().push(*next);
                let data = Bytes::from(next.to_string());
                *next += 1;
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
    }
    Ok(())
}

//! The in-memory engine end to end through the public data-plane trait: a producer writes plain
//! records and KPL aggregates while shards split and merge; reading the lineage parents first
//! and unpacking aggregates yields every user record once, in order per partition key.

use std::sync::Arc;

use bytes::Bytes;
use kcl_core::aggregation::{Aggregator, Deaggregator};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::kinesis::{KinesisDataPlane, drain_stream};
use kcl_tests::by_partition_key;

#[tokio::test(start_paused = true)]
async fn records_survive_splits_merges_and_aggregation_in_order() -> anyhow::Result<()> {
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("orders", 4)?;
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut aggregator = Aggregator::with_max_bytes(4096);
    for round in 0..6 {
        for i in 0..200 {
            let key = format!("customer-{}", i % 37);
            let value = format!("r{round}-{i}");
            expected.push((key.clone(), value.clone()));
            if i % 3 == 0 {
                // Aggregates hold records of one key at a time so per-key order is unambiguous.
                if let Some(a) = aggregator.add(&key, None, Bytes::from(value))? {
                    kinesis
                        .put_record("orders", PutRecordEntry::new(&a.partition_key, a.data))
                        .await?;
                }
                if let Some(a) = aggregator.flush() {
                    kinesis
                        .put_record("orders", PutRecordEntry::new(&a.partition_key, a.data))
                        .await?;
                }
            } else {
                kinesis
                    .put_record("orders", PutRecordEntry::new(&key, Bytes::from(value)))
                    .await?;
            }
        }
        let open = kinesis
            .list_all_shards(&stream, Some(kcl_core::kinesis::ShardFilter::AtLatest))
            .await?;
        match round {
            1 => {
                kinesis.split_shard_evenly("orders", &open[0].id)?;
            }
            3 => {
                kinesis.merge_shards("orders", &open[1].id, &open[2].id)?;
            }
            4 => kinesis.update_shard_count("orders", 6)?,
            _ => {}
        }
    }
    let data_plane: Arc<dyn KinesisDataPlane> = Arc::new(kinesis.clone());
    let (per_shard, order) = drain_stream(data_plane.as_ref(), &stream).await?;
    assert!(order.len() > 8, "lineage has {} shards", order.len());
    let deaggregator = Deaggregator::new();
    let mut users = Vec::new();
    for shard in &order {
        let (unpacked, report) = deaggregator.deaggregate(per_shard[shard].iter().cloned());
        assert_eq!(report.malformed, 0);
        users.extend(unpacked);
    }
    assert_eq!(users.len(), expected.len());
    let mut want: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in expected {
        want.entry(k).or_default().push(v);
    }
    assert_eq!(by_partition_key(&users), want);
    Ok(())
}

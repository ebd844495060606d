//! Cross-crate and end-to-end tests of kcl-rs.
//!
//! The tests live in `tests/tests/`; this library holds what they share: a reader that follows a
//! stream's shard lineage through the data-plane trait, so the same walk runs against the
//! in-memory engine and, once the AWS backends land, against the emulators.

use std::collections::{BTreeMap, BTreeSet};

use kcl_core::kinesis::{KinesisDataPlane, KinesisError};
use kcl_core::model::{Record, ShardId, StartingPosition, StreamIdentity};

/// Reads every shard of a stream from the trim horizon, parents before children, until every
/// shard is drained or (for open shards) caught up. Returns records per shard in read order.
pub async fn read_through_lineage(
    kinesis: &dyn KinesisDataPlane,
    stream: &StreamIdentity,
) -> Result<BTreeMap<ShardId, Vec<Record>>, KinesisError> {
    let shards = kinesis.list_all_shards(stream, None).await?;
    let mut done: BTreeSet<ShardId> = BTreeSet::new();
    let mut out = BTreeMap::new();
    while done.len() < shards.len() {
        let ready: Vec<_> = shards
            .iter()
            .filter(|s| !done.contains(&s.id))
            .filter(|s| {
                s.parents()
                    .all(|p| done.contains(p) || !shards.iter().any(|x| &x.id == p))
            })
            .cloned()
            .collect();
        assert!(!ready.is_empty(), "lineage has a cycle or a missing parent");
        for shard in ready {
            let mut it = Some(
                kinesis
                    .get_shard_iterator(stream, &shard.id, &StartingPosition::TrimHorizon)
                    .await?,
            );
            let mut records = Vec::new();
            while let Some(current) = it.take() {
                let page = kinesis.get_records(&current, 10_000).await?;
                let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
                records.extend(page.records);
                if !caught_up {
                    it = page.next_iterator;
                }
            }
            out.insert(shard.id.clone(), records);
            done.insert(shard.id);
        }
    }
    Ok(out)
}

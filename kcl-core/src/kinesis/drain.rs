//! Reading a whole stream once, parents before children: for tests and inspection tools.

use std::collections::{BTreeMap, BTreeSet};

use super::{KinesisDataPlane, KinesisError, MAX_GET_RECORDS_LIMIT};
use crate::model::{Record, ShardId, StartingPosition, StreamIdentity};

/// Reads every retained shard of a stream from the trim horizon, each shard only after all of
/// its (retained) parents, until closed shards are drained and open shards are caught up.
/// Returns the raw Kinesis records of each shard in order, and the order shards were read in.
///
/// This is a one-shot reader for tests and tools, not a consumer: it holds no lease, keeps no
/// checkpoint and stops at the tip of open shards.
pub async fn drain_stream(
    kinesis: &dyn KinesisDataPlane,
    stream: &StreamIdentity,
) -> Result<(BTreeMap<ShardId, Vec<Record>>, Vec<ShardId>), KinesisError> {
    let shards = kinesis.list_all_shards(stream, None).await?;
    let listed: BTreeSet<ShardId> = shards.iter().map(|s| s.id.clone()).collect();
    let mut order = Vec::new();
    let mut records = BTreeMap::new();
    while order.len() < shards.len() {
        let done: BTreeSet<&ShardId> = order.iter().collect();
        let ready: Vec<_> = shards
            .iter()
            .filter(|s| !done.contains(&s.id))
            .filter(|s| s.parents().all(|p| done.contains(p) || !listed.contains(p)))
            .map(|s| s.id.clone())
            .collect();
        if ready.is_empty() {
            return Err(KinesisError::invalid(format!(
                "shard lineage of {stream} has a cycle"
            )));
        }
        for id in ready {
            let mut it = Some(
                kinesis
                    .get_shard_iterator(stream, &id, &StartingPosition::TrimHorizon)
                    .await?,
            );
            let mut out = Vec::new();
            while let Some(current) = it.take() {
                let page = kinesis.get_records(&current, MAX_GET_RECORDS_LIMIT).await?;
                let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
                out.extend(page.records);
                if !caught_up {
                    it = page.next_iterator;
                }
            }
            records.insert(id.clone(), out);
            order.push(id);
        }
    }
    Ok((records, order))
}

//! The Java KCL's lease item, attribute for attribute: names and DynamoDB types.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use kcl_core::lease::{Lease, LeaseError, MultiStreamShard};
use kcl_core::model::{ExtendedSequenceNumber, HashKeyRange, ShardId};

/// Attribute names of the KCL lease table.
pub mod attr {
    /// Hash key (S).
    pub const LEASE_KEY: &str = "leaseKey";
    /// Owner (S).
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// Counter (N).
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// Checkpoint (S).
    pub const CHECKPOINT: &str = "checkpoint";
    /// Checkpoint sub-sequence number (N).
    pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
    /// Owner switches since the last checkpoint (N).
    pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
    /// Pending checkpoint (S).
    pub const PENDING: &str = "pendingCheckpoint";
    /// Pending checkpoint sub-sequence number (N).
    pub const PENDING_SUB: &str = "pendingCheckpointSubSequenceNumber";
    /// Pending checkpoint application state (B).
    pub const PENDING_STATE: &str = "pendingCheckpointState";
    /// Parent shard ids (SS).
    pub const PARENTS: &str = "parentShardId";
    /// Child shard ids (SS).
    pub const CHILDREN: &str = "childShardIds";
    /// Starting hash key (S).
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    /// Ending hash key (S).
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// Previous owner during a graceful hand-off (S).
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// Throughput in KB/s (N).
    pub const THROUGHPUT: &str = "throughputKBps";
    /// kcl-rs: `counter:unix_millis` of the owner's last renewal (S).
    pub const RENEWED_AT: &str = "kclRsRenewedAt";
    /// kcl-rs: keys of leases offered to the owner in planned hand-offs (SS).
    pub const INBOX: &str = "kclRsInbox";
    /// Stream identifier of a multi-stream lease (S).
    pub const STREAM_NAME: &str = "streamName";
    /// Shard id of a multi-stream lease (S).
    pub const SHARD_ID: &str = "shardId";
    /// Row type of a KCL 3.x table (S): `LEASE` for leases; worker metrics, leader and
    /// migration rows share the table.
    pub const ENTITY_TYPE: &str = "entityType";
}

/// The `entityType` of a lease row.
pub const LEASE_ENTITY: &str = "LEASE";

/// Whether an item is a row of another kind (KCL 3.x worker metrics, leader, migration state)
/// rather than a lease or a malformed lease.
pub(crate) fn is_other_entity(item: &Item) -> bool {
    matches!(item.get(attr::ENTITY_TYPE), Some(AttributeValue::S(t)) if t != LEASE_ENTITY)
}

/// A lease table item as the DynamoDB SDK reads and writes it.
pub type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The attributes of a checkpoint, as the KCL writes them.
pub(crate) fn checkpoint_attrs(c: &ExtendedSequenceNumber) -> (AttributeValue, AttributeValue) {
    (s(c.checkpoint_value().into_owned()), n(c.sub_sequence()))
}

/// Writes a lease as an item; optional attributes are written only when set (the KCL's way).
///
/// [`from_item`] reads the result back as an equal lease.
pub fn to_item(lease: &Lease) -> Item {
    let mut item = Item::new();
    item.insert(attr::LEASE_KEY.into(), s(&lease.key));
    // KCL 3.x writes it on every new lease; 2.x ignores it.
    item.insert(attr::ENTITY_TYPE.into(), s(LEASE_ENTITY));
    if let Some(o) = &lease.owner {
        item.insert(attr::LEASE_OWNER.into(), s(o));
    }
    item.insert(attr::LEASE_COUNTER.into(), n(lease.counter));
    let (c, sub) = checkpoint_attrs(&lease.checkpoint);
    item.insert(attr::CHECKPOINT.into(), c);
    item.insert(attr::CHECKPOINT_SUB.into(), sub);
    item.insert(
        attr::OWNER_SWITCHES.into(),
        n(lease.owner_switches_since_checkpoint),
    );
    if let Some(p) = &lease.pending_checkpoint {
        let (c, sub) = checkpoint_attrs(p);
        item.insert(attr::PENDING.into(), c);
        item.insert(attr::PENDING_SUB.into(), sub);
    }
    if let Some(state) = &lease.pending_checkpoint_state {
        item.insert(
            attr::PENDING_STATE.into(),
            AttributeValue::B(Blob::new(state.to_vec())),
        );
    }
    if !lease.parent_shard_ids.is_empty() {
        item.insert(attr::PARENTS.into(), string_set(&lease.parent_shard_ids));
    }
    if !lease.child_shard_ids.is_empty() {
        item.insert(attr::CHILDREN.into(), string_set(&lease.child_shard_ids));
    }
    if let Some(r) = &lease.hash_key_range {
        item.insert(attr::STARTING_HASH_KEY.into(), s(r.start.to_string()));
        item.insert(attr::ENDING_HASH_KEY.into(), s(r.end.to_string()));
    }
    if let Some(o) = &lease.checkpoint_owner {
        item.insert(attr::CHECKPOINT_OWNER.into(), s(o));
    }
    if let Some(t) = lease.throughput_kbps {
        item.insert(attr::THROUGHPUT.into(), n(t));
    }
    if let Some(r) = &lease.renewed_at {
        item.insert(attr::RENEWED_AT.into(), s(r.to_string()));
    }
    if !lease.inbox.is_empty() {
        item.insert(attr::INBOX.into(), AttributeValue::Ss(lease.inbox.clone()));
    }
    if let Some(m) = &lease.multi_stream {
        item.insert(attr::STREAM_NAME.into(), s(&m.stream_identifier));
        item.insert(attr::SHARD_ID.into(), s(m.shard_id.as_str()));
    }
    item
}

pub(crate) fn string_set(ids: &[ShardId]) -> AttributeValue {
    AttributeValue::Ss(ids.iter().map(|i| i.to_string()).collect())
}

/// Reads an item written by the KCL (or by us). Any deviation is a typed error naming the key
/// ([`LeaseError::Malformed`]); no input panics (fuzzed: `fuzz/fuzz_targets/lease_item.rs`).
pub fn from_item(item: &Item) -> Result<Lease, LeaseError> {
    let key = match item.get(attr::LEASE_KEY) {
        Some(AttributeValue::S(k)) if !k.is_empty() => k.clone(),
        Some(other) => {
            return Err(malformed(
                &format!("{other:?}"),
                "leaseKey is not a non-empty string",
            ));
        }
        None => {
            return Err(malformed(
                "<no leaseKey>",
                "the item has no leaseKey attribute",
            ));
        }
    };
    let r = Reader { key: &key, item };
    let checkpoint = r
        .checkpoint(attr::CHECKPOINT, attr::CHECKPOINT_SUB)?
        .ok_or_else(|| malformed(&key, "no checkpoint attribute"))?;
    let start = r.opt_string(attr::STARTING_HASH_KEY)?;
    let end = r.opt_string(attr::ENDING_HASH_KEY)?;
    let hash_key_range = match (start, end) {
        (Some(s), Some(e)) => {
            let (start, end) = (r.hash_key(&s)?, r.hash_key(&e)?);
            if start > end {
                return Err(malformed(
                    &key,
                    &format!("hash range {start}..={end} is backwards"),
                ));
            }
            Some(HashKeyRange { start, end })
        }
        (None, None) => None,
        _ => {
            return Err(malformed(
                &key,
                "startingHashKey and endingHashKey must be both present or both absent",
            ));
        }
    };
    let multi_stream = match (
        r.opt_string(attr::STREAM_NAME)?,
        r.opt_string(attr::SHARD_ID)?,
    ) {
        (Some(stream_identifier), Some(shard)) => {
            // Both restate the key: one that contradicts it would route the lease wrongly.
            if key != format!("{stream_identifier}:{shard}") {
                return Err(malformed(
                    &key,
                    &format!(
                        "streamName {stream_identifier:?} and shardId {shard:?} contradict the lease key"
                    ),
                ));
            }
            key.parse::<kcl_core::lease::MultiStreamKey>()
                .map_err(|e| malformed(&key, &e.to_string()))?;
            Some(MultiStreamShard {
                stream_identifier,
                shard_id: ShardId::new(shard),
            })
        }
        (None, None) => None,
        _ => {
            return Err(malformed(
                &key,
                "streamName and shardId must be both present or both absent",
            ));
        }
    };
    let mut lease = Lease::new(&ShardId::new(&key), checkpoint);
    lease.key = key.clone();
    lease.owner = r.opt_string(attr::LEASE_OWNER)?;
    lease.counter = r
        .opt_u64(attr::LEASE_COUNTER)?
        .ok_or_else(|| malformed(&key, "no leaseCounter attribute"))?;
    lease.pending_checkpoint = r.checkpoint(attr::PENDING, attr::PENDING_SUB)?;
    lease.pending_checkpoint_state = match item.get(attr::PENDING_STATE) {
        None => None,
        Some(AttributeValue::B(b)) => Some(Bytes::from(b.clone().into_inner())),
        Some(_) => return Err(malformed(&key, "pendingCheckpointState is not binary")),
    };
    lease.owner_switches_since_checkpoint = r.opt_u64(attr::OWNER_SWITCHES)?.unwrap_or(0);
    lease.parent_shard_ids = r.string_set(attr::PARENTS)?;
    lease.child_shard_ids = r.string_set(attr::CHILDREN)?;
    lease.hash_key_range = hash_key_range;
    lease.checkpoint_owner = r.opt_string(attr::CHECKPOINT_OWNER)?;
    lease.throughput_kbps = match item.get(attr::THROUGHPUT) {
        None => None,
        Some(AttributeValue::N(v)) => match v.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => Some(t),
            _ => {
                return Err(malformed(
                    &key,
                    &format!("throughputKBps {v:?} is not a finite non-negative number"),
                ));
            }
        },
        Some(_) => return Err(malformed(&key, "throughputKBps is not a number")),
    };
    lease.multi_stream = multi_stream;
    // kcl-rs's own attributes: one that does not parse is ignored rather than making the lease
    // unusable (observers then judge expiry by watching the counter, and an offer by its lease).
    lease.renewed_at = match item.get(attr::RENEWED_AT) {
        Some(AttributeValue::S(v)) => v.parse().ok(),
        _ => None,
    };
    lease.inbox = match item.get(attr::INBOX) {
        Some(AttributeValue::Ss(v)) => {
            let mut keys = v.clone();
            keys.sort();
            keys.dedup();
            keys
        }
        _ => Vec::new(),
    };
    Ok(lease)
}

fn malformed(key: &str, reason: &str) -> LeaseError {
    LeaseError::Malformed {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

struct Reader<'a> {
    key: &'a str,
    item: &'a Item,
}

impl Reader<'_> {
    fn opt_string(&self, name: &str) -> Result<Option<String>, LeaseError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(malformed(self.key, &format!("{name} is not a string"))),
        }
    }

    fn opt_u64(&self, name: &str) -> Result<Option<u64>, LeaseError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => kcl_core::model::parse_canonical_u64(v)
                .map(Some)
                .ok_or_else(|| {
                    malformed(
                        self.key,
                        &format!("{name} {v:?} is not a non-negative integer in canonical form"),
                    )
                }),
            Some(_) => Err(malformed(self.key, &format!("{name} is not a number"))),
        }
    }

    fn string_set(&self, name: &str) -> Result<Vec<ShardId>, LeaseError> {
        match self.item.get(name) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(v)) => {
                let mut ids: Vec<ShardId> = v.iter().map(ShardId::new).collect();
                // DynamoDB sets are unordered; keep a stable order.
                ids.sort();
                Ok(ids)
            }
            Some(_) => Err(malformed(self.key, &format!("{name} is not a string set"))),
        }
    }

    fn checkpoint(
        &self,
        name: &str,
        sub_name: &str,
    ) -> Result<Option<ExtendedSequenceNumber>, LeaseError> {
        let Some(value) = self.opt_string(name)? else {
            return Ok(None);
        };
        let sub = self.opt_u64(sub_name)?.unwrap_or(0);
        ExtendedSequenceNumber::parse(&value, sub)
            .map(Some)
            .map_err(|e| malformed(self.key, &e.to_string()))
    }

    fn hash_key(&self, v: &str) -> Result<u128, LeaseError> {
        kcl_core::routing::parse_explicit_hash_key(v).ok_or_else(|| {
            malformed(
                self.key,
                &format!("hash key {v:?} is not a decimal in 0..2^128"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Item {
        let mut item = to_item(&Lease::new(
            &ShardId::from_index(1),
            ExtendedSequenceNumber::TrimHorizon,
        ));
        item.insert(attr::STARTING_HASH_KEY.into(), s("0"));
        item.insert(attr::ENDING_HASH_KEY.into(), s("100"));
        item
    }

    fn reason(item: &Item) -> String {
        match from_item(item) {
            Err(LeaseError::Malformed { reason, .. }) => reason,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn new_leases_carry_the_lease_entity_type() {
        let item = good();
        assert_eq!(item.get(attr::ENTITY_TYPE), Some(&s("LEASE")));
        assert!(!is_other_entity(&item));
        assert!(from_item(&item).is_ok());
        let mut metrics = Item::new();
        metrics.insert(attr::LEASE_KEY.into(), s("worker-1"));
        metrics.insert(attr::ENTITY_TYPE.into(), s("WORKER_METRIC_STATS"));
        assert!(is_other_entity(&metrics));
    }

    /// Issue 14 §11: what the KCL never writes was accepted.
    #[test]
    fn what_the_kcl_never_writes_is_rejected() {
        let mut backwards = good();
        backwards.insert(attr::STARTING_HASH_KEY.into(), s("100"));
        backwards.insert(attr::ENDING_HASH_KEY.into(), s("5"));
        assert!(reason(&backwards).contains("backwards"));
        for t in ["NaN", "inf", "-1", "Infinity"] {
            let mut item = good();
            item.insert(attr::THROUGHPUT.into(), n(t));
            assert!(reason(&item).contains("throughputKBps"), "{t}");
        }
        for c in ["+5", "007", "-1", "1.0", ""] {
            let mut item = good();
            item.insert(attr::LEASE_COUNTER.into(), n(c));
            assert!(reason(&item).contains("leaseCounter"), "{c:?}");
        }
        let key = "123456789012:orders:1700000000:shardId-000000000001";
        let mut multi = good();
        multi.insert(attr::LEASE_KEY.into(), s(key));
        multi.insert(
            attr::STREAM_NAME.into(),
            s("123456789012:orders:1700000000"),
        );
        multi.insert(attr::SHARD_ID.into(), s("shardId-000000000001"));
        assert!(from_item(&multi).is_ok());
        let mut contradicting = multi.clone();
        contradicting.insert(attr::SHARD_ID.into(), s("shardId-000000000002"));
        assert!(reason(&contradicting).contains("contradict"));
        let mut half = multi.clone();
        half.remove(attr::STREAM_NAME);
        assert!(reason(&half).contains("both"));
        let mut padded = multi;
        let padded_key = "123456789012:orders:+5:shardId-000000000001";
        padded.insert(attr::LEASE_KEY.into(), s(padded_key));
        padded.insert(attr::STREAM_NAME.into(), s("123456789012:orders:+5"));
        assert!(reason(&padded).contains("canonical"));
    }
}

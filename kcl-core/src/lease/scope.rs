//! Which leases of a table belong to one stream, and how that stream's lease keys are formed.

use std::sync::Arc;

use super::{Lease, MultiStreamKey};
use crate::model::{ExtendedSequenceNumber, ShardId, StreamIdentity};

/// One stream's share of a lease table.
///
/// A single-stream application keys leases by shard id and owns the whole table. A multi-stream
/// application keys them `account:stream:creationEpoch:shardId` (the KCL's multi-stream format)
/// and sets the `streamName` and `shardId` attributes, so several streams share one table and a
/// stream deleted and re-created under the same name gets fresh leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseScope {
    stream: StreamIdentity,
    /// `account:stream:creationEpoch` in multi-stream mode.
    identifier: Option<Arc<str>>,
    account_id: Arc<str>,
    creation_epoch: u64,
}

impl LeaseScope {
    /// The scope of a single-stream application: every lease, keyed by shard id.
    pub fn single(stream: StreamIdentity) -> Self {
        Self {
            stream,
            identifier: None,
            account_id: Arc::from(""),
            creation_epoch: 0,
        }
    }

    /// The scope of one stream of a multi-stream application.
    pub fn multi(stream: StreamIdentity, account_id: &str, creation_epoch: u64) -> Self {
        let identifier = format!("{account_id}:{}:{creation_epoch}", stream.name);
        Self {
            stream,
            identifier: Some(Arc::from(identifier)),
            account_id: Arc::from(account_id),
            creation_epoch,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamIdentity {
        &self.stream
    }

    /// `account:stream:creationEpoch` in multi-stream mode (the `streamName` attribute).
    pub fn stream_identifier(&self) -> Option<&str> {
        self.identifier.as_deref()
    }

    /// The lease key of `shard` in this scope.
    pub fn key(&self, shard: &ShardId) -> String {
        match &self.identifier {
            Some(id) => format!("{id}:{shard}"),
            None => shard.to_string(),
        }
    }

    /// A new, unowned lease for `shard`, starting at `checkpoint`.
    pub fn new_lease(&self, shard: &ShardId, checkpoint: ExtendedSequenceNumber) -> Lease {
        match &self.identifier {
            Some(_) => Lease::new_multi_stream(
                MultiStreamKey {
                    account_id: self.account_id.to_string(),
                    stream_name: self.stream.name.to_string(),
                    creation_epoch: self.creation_epoch,
                    shard_id: shard.clone(),
                },
                checkpoint,
            ),
            None => Lease::new(shard, checkpoint),
        }
    }

    /// Whether `lease` belongs to this scope. A single-stream scope owns every lease that is not
    /// a multi-stream lease.
    pub fn contains(&self, lease: &Lease) -> bool {
        match &self.identifier {
            Some(id) => match &lease.multi_stream {
                Some(m) => m.stream_identifier == **id,
                None => lease
                    .key
                    .strip_prefix(&**id)
                    .is_some_and(|rest| rest.starts_with(':')),
            },
            None => lease.multi_stream.is_none() && lease.key.parse::<MultiStreamKey>().is_err(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_stream_keys_match_the_kcl_format() {
        let scope = LeaseScope::multi(StreamIdentity::from_name("orders"), "123456789012", 1700);
        let shard = ShardId::new("shardId-000000000001");
        let lease = scope.new_lease(&shard, ExtendedSequenceNumber::TrimHorizon);
        assert_eq!(lease.key, "123456789012:orders:1700:shardId-000000000001");
        assert_eq!(scope.key(&shard), lease.key);
        assert_eq!(
            lease.multi_stream.as_ref().unwrap().stream_identifier,
            "123456789012:orders:1700"
        );
        assert_eq!(lease.shard_id(), shard);
        assert!(scope.contains(&lease));

        let other = LeaseScope::multi(StreamIdentity::from_name("orders"), "123456789012", 1701);
        assert!(
            !other.contains(&lease),
            "a re-created stream is another scope"
        );
        let prefix = LeaseScope::multi(StreamIdentity::from_name("order"), "123456789012", 1700);
        assert!(!prefix.contains(&lease));
        let single = LeaseScope::single(StreamIdentity::from_name("orders"));
        assert!(!single.contains(&lease));
        assert!(single.contains(&single.new_lease(&shard, ExtendedSequenceNumber::Latest)));
        assert!(!scope.contains(&single.new_lease(&shard, ExtendedSequenceNumber::Latest)));
    }

    #[test]
    fn a_multi_stream_key_without_attributes_is_recognised() {
        let scope = LeaseScope::multi(StreamIdentity::from_name("orders"), "123456789012", 2);
        let mut lease = scope.new_lease(&ShardId::new("shardId-0"), ExtendedSequenceNumber::Latest);
        lease.multi_stream = None;
        assert!(scope.contains(&lease));
        assert!(!LeaseScope::single(StreamIdentity::from_name("orders")).contains(&lease));
    }
}

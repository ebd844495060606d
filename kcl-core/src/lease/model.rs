//! The lease: one item of the lease table, field for field the Java KCL's.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::model::{ExtendedSequenceNumber, HashKeyRange, ShardId};

/// One lease: who processes a shard and how far it got.
///
/// Every field of the KCL 2.x/3.x lease table is here, so a store can read and write a Java
/// fleet's table without losing anything. Optional attributes are `None` when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// `leaseKey`: the shard id, or `account:stream:creationEpoch:shardId` in multi-stream mode.
    pub key: String,
    /// `leaseOwner`: the worker holding the lease; `None` when unassigned.
    pub owner: Option<String>,
    /// `leaseCounter`: bumped by every renew, take, evict and checkpoint.
    pub counter: u64,
    /// `checkpoint` + `checkpointSubSequenceNumber`.
    pub checkpoint: ExtendedSequenceNumber,
    /// `pendingCheckpoint` + `pendingCheckpointSubSequenceNumber`: a prepared checkpoint.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// `pendingCheckpointState`: application state stored with a prepared checkpoint.
    pub pending_checkpoint_state: Option<Bytes>,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId` (string set): one parent after a split, two after a merge.
    pub parent_shard_ids: Vec<ShardId>,
    /// `childShardIds` (string set): set when the shard has ended.
    pub child_shard_ids: Vec<ShardId>,
    /// `startingHashKey` / `endingHashKey`.
    pub hash_key_range: Option<HashKeyRange>,
    /// `checkpointOwner`: during a graceful hand-off, the previous owner still finishing.
    pub checkpoint_owner: Option<String>,
    /// `throughputKBps` (KCL 3.x).
    pub throughput_kbps: Option<f64>,
    /// `streamName` and `shardId` attributes of multi-stream leases.
    pub multi_stream: Option<MultiStreamShard>,
    /// `kclRsRenewedAt` (kcl-rs only; the Java KCL ignores it): when the owner last proved it
    /// holds the lease, on its wall clock. Trusted only while its counter is the lease's.
    pub renewed_at: Option<RenewalStamp>,
    /// `kclRsInbox` (kcl-rs only): keys of leases other workers offered this lease's owner in a
    /// planned hand-off. The owner reads it from its renewals' responses (no extra reads).
    pub inbox: Vec<String>,
}

/// A renewal's wall-clock time, tagged with the lease counter the write left.
///
/// An observer that sees `counter` equal to the lease's counter knows the owner's last write
/// happened at `unix_millis` (its clock), so it can tell when the lease expires from a single
/// listing instead of watching the counter for a whole failover time.
///
/// Stored as `counter:unix_millis`, with `:stepped-down` appended while the writer has stepped
/// down from leading the fleet (its listings kept failing): other workers then pass it over
/// when they choose the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewalStamp {
    /// The `leaseCounter` after the write.
    pub counter: u64,
    /// Milliseconds since the Unix epoch on the writer's clock.
    pub unix_millis: u64,
    /// The writer does not lead the fleet for now.
    pub stepped_down: bool,
}

const STEPPED_DOWN: &str = ":stepped-down";

impl RenewalStamp {
    /// A stamp of a writer that may lead.
    pub fn new(counter: u64, unix_millis: u64) -> Self {
        Self {
            counter,
            unix_millis,
            stepped_down: false,
        }
    }

    /// This stamp, of a writer that has stepped down from leading.
    pub fn stepped_down(self) -> Self {
        Self {
            stepped_down: true,
            ..self
        }
    }
}

impl fmt::Display for RenewalStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.counter, self.unix_millis)?;
        if self.stepped_down {
            f.write_str(STEPPED_DOWN)?;
        }
        Ok(())
    }
}

impl FromStr for RenewalStamp {
    type Err = ();

    /// `counter:unix_millis`, both canonical integers, optionally followed by `:stepped-down`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (s, stepped_down) = match s.strip_suffix(STEPPED_DOWN) {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (c, t) = s.split_once(':').ok_or(())?;
        Ok(Self {
            counter: crate::model::parse_canonical_u64(c).ok_or(())?,
            unix_millis: crate::model::parse_canonical_u64(t).ok_or(())?,
            stepped_down,
        })
    }
}

impl Lease {
    /// A new, unowned lease for a shard of a single-stream application, starting at `checkpoint`.
    pub fn new(shard: &ShardId, checkpoint: ExtendedSequenceNumber) -> Self {
        Self {
            key: shard.to_string(),
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
            checkpoint_owner: None,
            throughput_kbps: None,
            multi_stream: None,
            renewed_at: None,
            inbox: Vec::new(),
        }
    }

    /// A new, unowned lease for a shard of one stream of a multi-stream application.
    pub fn new_multi_stream(key: MultiStreamKey, checkpoint: ExtendedSequenceNumber) -> Self {
        let mut lease = Self::new(&key.shard_id, checkpoint);
        lease.key = key.to_string();
        lease.multi_stream = Some(MultiStreamShard {
            stream_identifier: key.stream_identifier(),
            shard_id: key.shard_id.clone(),
        });
        lease
    }

    /// The shard this lease is for.
    pub fn shard_id(&self) -> ShardId {
        match &self.multi_stream {
            Some(m) => m.shard_id.clone(),
            None => match self.key.parse::<MultiStreamKey>() {
                Ok(k) => k.shard_id,
                Err(_) => ShardId::new(&self.key),
            },
        }
    }

    /// The key of `shard`'s lease in this lease's stream (a parent or child: same multi-stream
    /// prefix, if any).
    pub fn key_in_stream(&self, shard: &ShardId) -> String {
        match self.stream_identifier() {
            Some(id) => format!("{id}:{shard}"),
            None => shard.to_string(),
        }
    }

    /// `account:stream:creationEpoch` of a multi-stream lease; `None` in single-stream tables.
    pub fn stream_identifier(&self) -> Option<String> {
        match &self.multi_stream {
            Some(m) => Some(m.stream_identifier.clone()),
            None => self
                .key
                .parse::<MultiStreamKey>()
                .ok()
                .map(|k| k.stream_identifier()),
        }
    }

    /// Whether the shard has been processed to its end.
    pub fn is_shard_end(&self) -> bool {
        self.checkpoint == ExtendedSequenceNumber::ShardEnd
    }

    /// Whether `worker` is the lease's `leaseOwner`. A graceful hand-off to it may still be in
    /// progress: see `checkpoint_owner`.
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.owner.as_deref() == Some(worker)
    }
}

/// The `streamName` and `shardId` attributes of a multi-stream lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiStreamShard {
    /// `streamName`: the stream identifier `account:stream:creationEpoch`.
    pub stream_identifier: String,
    /// `shardId`.
    pub shard_id: ShardId,
}

/// A multi-stream lease key, `account:stream:creationEpoch:shardId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultiStreamKey {
    /// AWS account id.
    pub account_id: String,
    /// Stream name.
    pub stream_name: String,
    /// Stream creation time, seconds since the epoch.
    pub creation_epoch: u64,
    /// Shard id.
    pub shard_id: ShardId,
}

impl MultiStreamKey {
    /// The stream part, `account:stream:creationEpoch`, as the KCL stores in `streamName`.
    pub fn stream_identifier(&self) -> String {
        format!(
            "{}:{}:{}",
            self.account_id, self.stream_name, self.creation_epoch
        )
    }
}

impl fmt::Display for MultiStreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.stream_identifier(), self.shard_id)
    }
}

/// Why a string is not a multi-stream lease key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a multi-stream lease key (account:stream:creationEpoch:shardId): {reason}")]
pub struct ParseLeaseKeyError {
    /// The rejected key.
    pub key: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for MultiStreamKey {
    type Err = ParseLeaseKeyError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseLeaseKeyError {
            key: key.to_string(),
            reason,
        };
        let mut parts = key.splitn(4, ':');
        let (account, stream, epoch, shard) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(s), Some(e), Some(sh)) => (a, s, e, sh),
                _ => return Err(err("expected four ':'-separated parts")),
            };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("account id must be 12 digits"));
        }
        if stream.is_empty() {
            return Err(err("stream name is empty"));
        }
        // Canonical digits only: `+5` or `007` would parse to 5 while lookups by the key's
        // text keep the original prefix.
        let creation_epoch = crate::model::parse_canonical_u64(epoch)
            .ok_or_else(|| err("creation epoch must be an integer in canonical form"))?;
        if shard.is_empty() || shard.contains(':') {
            return Err(err("shard id is empty or contains ':'"));
        }
        Ok(Self {
            account_id: account.to_string(),
            stream_name: stream.to_string(),
            creation_epoch,
            shard_id: ShardId::new(shard),
        })
    }
}

/// A checkpoint write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointUpdate {
    /// Sets the checkpoint, clears any pending checkpoint and resets
    /// `ownerSwitchesSinceCheckpoint`.
    Commit(ExtendedSequenceNumber),
    /// Records a prepared checkpoint (two-phase) with optional application state; the
    /// checkpoint itself is unchanged.
    Prepare {
        /// The prepared position.
        pending: ExtendedSequenceNumber,
        /// Application state to store with it.
        state: Option<Bytes>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_stamps_round_trip_with_and_without_a_step_down() {
        for stamp in [
            RenewalStamp::new(41, 1_765_000_000_123),
            RenewalStamp::new(41, 1_765_000_000_123).stepped_down(),
        ] {
            assert_eq!(stamp.to_string().parse::<RenewalStamp>(), Ok(stamp));
        }
        assert_eq!(
            RenewalStamp::new(7, 9).stepped_down().to_string(),
            "7:9:stepped-down"
        );
        for bad in ["7", "7:", ":9", "07:9", "7:9:other", "7:9:stepped-down:x"] {
            assert_eq!(bad.parse::<RenewalStamp>(), Err(()), "{bad}");
        }
    }

    #[test]
    fn multi_stream_keys_round_trip() {
        let key: MultiStreamKey = "123456789012:orders:1700000000:shardId-000000000001"
            .parse()
            .unwrap();
        assert_eq!(key.stream_name, "orders");
        assert_eq!(key.creation_epoch, 1_700_000_000);
        assert_eq!(key.shard_id, ShardId::from_index(1));
        assert_eq!(
            key.to_string(),
            "123456789012:orders:1700000000:shardId-000000000001"
        );
        assert_eq!(key.stream_identifier(), "123456789012:orders:1700000000");
        let lease = Lease::new_multi_stream(key, ExtendedSequenceNumber::TrimHorizon);
        assert_eq!(lease.shard_id(), ShardId::from_index(1));
        for bad in [
            "123456789012:orders:+5:shardId-000000000001",
            "123456789012:orders:007:shardId-000000000001",
            "shardId-1",
            "1:orders:1:shardId-1",
            "123456789012::1:s",
            "123456789012:o:x:s",
            "123456789012:o:1:",
        ] {
            assert!(bad.parse::<MultiStreamKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn single_stream_lease_names_its_shard() {
        let lease = Lease::new(&ShardId::from_index(3), ExtendedSequenceNumber::Latest);
        assert_eq!(lease.key, "shardId-000000000003");
        assert_eq!(lease.shard_id(), ShardId::from_index(3));
    }
}

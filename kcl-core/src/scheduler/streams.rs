//! Multi-stream mode: which streams a scheduler consumes, and what happens to the leases of a
//! stream it stops consuming.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::lease::{Lease, LeaseScope, MultiStreamKey};
use crate::model::{InitialPosition, StreamIdentity};

/// One stream of a multi-stream application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The stream, by name or ARN.
    pub stream: StreamIdentity,
    /// Where this stream's shards with no lease start.
    pub initial_position: InitialPosition,
    /// Account id and creation time (seconds) for the lease keys. `None`: asked of Kinesis
    /// (DescribeStreamSummary) when the stream is first synced.
    pub identifier: Option<(String, u64)>,
}

impl StreamConfig {
    /// A stream whose account and creation time are looked up.
    pub fn new(stream: StreamIdentity, initial_position: InitialPosition) -> Self {
        Self {
            stream,
            initial_position,
            identifier: None,
        }
    }

    /// Uses `account_id` and `creation_epoch` instead of looking them up — e.g. to keep
    /// consuming a KCL fleet's leases whose keys name them.
    pub fn with_identifier(mut self, account_id: impl Into<String>, creation_epoch: u64) -> Self {
        self.identifier = Some((account_id.into(), creation_epoch));
        self
    }
}

/// What happens to the leases of a stream the tracker no longer lists, or that was deleted (the
/// KCL's `FormerStreamsLeasesDeletionStrategy`). Either way its consumers checkpoint and release
/// their leases at once, and no worker takes them while the stream stays removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RemovedStreamPolicy {
    /// Leave the leases (and checkpoints) in the table: adding the stream back resumes where it
    /// stopped.
    #[default]
    Keep,
    /// Delete the leases once the stream has been gone this long (as seen by a worker).
    /// Re-adding it within the grace period resumes from the checkpoints; later, it starts
    /// afresh at its initial position.
    DeleteAfter(Duration),
}

/// The streams a multi-stream scheduler consumes (the KCL's `MultiStreamTracker`).
///
/// # Contract
/// - `streams` is asked at start and at every shard sync; streams appear and disappear between
///   calls. A stream is identified by its name (or ARN).
/// - Every worker of an application should see the same set (workers only take leases of
///   streams they consume).
#[async_trait]
pub trait StreamTracker: Send + Sync + std::fmt::Debug + 'static {
    /// The streams to consume now.
    async fn streams(&self) -> Vec<StreamConfig>;

    /// What happens to leases of streams that are no longer listed.
    fn removed_stream_policy(&self) -> RemovedStreamPolicy {
        RemovedStreamPolicy::Keep
    }
}

/// A set of streams that can be changed while the scheduler runs; clones share the set. A
/// static list is a set nobody changes.
///
/// ```
/// use std::time::Duration;
/// use kcl_core::model::{InitialPosition, StreamIdentity};
/// use kcl_core::scheduler::{RemovedStreamPolicy, StreamConfig, StreamSet};
///
/// let streams = StreamSet::new(RemovedStreamPolicy::DeleteAfter(Duration::from_secs(3600)));
/// streams.add(StreamConfig::new(StreamIdentity::from_name("orders"), InitialPosition::TrimHorizon));
/// streams.add(StreamConfig::new(StreamIdentity::from_name("clicks"), InitialPosition::Latest));
/// // Later, while the scheduler runs (it notices at its next stream sync):
/// assert!(streams.remove("clicks"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamSet {
    streams: Arc<Mutex<BTreeMap<Arc<str>, StreamConfig>>>,
    policy: RemovedStreamPolicy,
}

impl StreamSet {
    /// An empty set whose removed streams are handled per `policy`.
    pub fn new(policy: RemovedStreamPolicy) -> Self {
        Self {
            streams: Arc::default(),
            policy,
        }
    }

    /// Adds (or reconfigures) a stream; false if it was present.
    pub fn add(&self, config: StreamConfig) -> bool {
        self.streams
            .lock()
            .insert(config.stream.name.clone(), config)
            .is_none()
    }

    /// Removes a stream by name; false if it was not present.
    pub fn remove(&self, name: &str) -> bool {
        self.streams.lock().remove(name).is_some()
    }
}

#[async_trait]
impl StreamTracker for StreamSet {
    async fn streams(&self) -> Vec<StreamConfig> {
        self.streams.lock().values().cloned().collect()
    }

    fn removed_stream_policy(&self) -> RemovedStreamPolicy {
        self.policy
    }
}

/// Which streams a scheduler consumes.
#[derive(Debug, Clone)]
pub enum StreamSource {
    /// One stream; leases keyed by shard id (the KCL's single-stream mode).
    Single(StreamIdentity),
    /// A tracked set; leases keyed `account:stream:creationEpoch:shardId`.
    Multi(Arc<dyn StreamTracker>),
}

/// A stream being consumed now.
#[derive(Debug)]
pub(crate) struct ActiveStream {
    pub(crate) scope: LeaseScope,
    pub(crate) initial_position: InitialPosition,
}

/// The streams being consumed now, keyed by stream identifier (`""` in single-stream mode).
/// Shared by shard sync (which changes it), the taker's lease filter and the scheduler loop.
#[derive(Debug, Default)]
pub(crate) struct ActiveStreams {
    map: RwLock<BTreeMap<String, Arc<ActiveStream>>>,
}

/// The stream identifier a lease belongs to: `account:stream:epoch`, or `""` for a
/// single-stream lease.
pub(crate) fn identifier_of(lease: &Lease) -> &str {
    match &lease.multi_stream {
        Some(m) => &m.stream_identifier,
        None if lease.key.parse::<MultiStreamKey>().is_ok() => {
            lease.key.rsplit_once(':').map_or("", |(id, _)| id)
        }
        None => "",
    }
}

impl ActiveStreams {
    /// The active stream `lease` belongs to.
    pub(crate) fn stream_of(&self, lease: &Lease) -> Option<Arc<ActiveStream>> {
        self.map.read().get(identifier_of(lease)).cloned()
    }

    pub(crate) fn is_active(&self, identifier: &str) -> bool {
        self.map.read().contains_key(identifier)
    }

    /// Replaces the set; returns the identifiers no longer active.
    pub(crate) fn replace(&self, streams: Vec<ActiveStream>) -> Vec<String> {
        let new: BTreeMap<String, Arc<ActiveStream>> = streams
            .into_iter()
            .map(|s| {
                let id = s.scope.stream_identifier().unwrap_or("").to_string();
                (id, Arc::new(s))
            })
            .collect();
        let mut map = self.map.write();
        let removed = map
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        *map = new;
        removed
    }

    pub(crate) fn all(&self) -> Vec<Arc<ActiveStream>> {
        self.map.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExtendedSequenceNumber, ShardId};

    #[test]
    fn leases_map_to_their_stream() {
        let active = ActiveStreams::default();
        let orders = LeaseScope::multi(StreamIdentity::from_name("orders"), "123456789012", 7);
        let clicks = LeaseScope::multi(StreamIdentity::from_name("clicks"), "123456789012", 9);
        let lease = |s: &LeaseScope| {
            s.new_lease(&ShardId::new("shardId-1"), ExtendedSequenceNumber::Latest)
        };
        let removed = active.replace(vec![
            ActiveStream {
                scope: orders.clone(),
                initial_position: InitialPosition::Latest,
            },
            ActiveStream {
                scope: clicks.clone(),
                initial_position: InitialPosition::TrimHorizon,
            },
        ]);
        assert!(removed.is_empty());
        let mut bare = lease(&clicks);
        bare.multi_stream = None;
        assert_eq!(
            active.stream_of(&bare).unwrap().initial_position,
            InitialPosition::TrimHorizon
        );
        let removed = active.replace(vec![ActiveStream {
            scope: orders.clone(),
            initial_position: InitialPosition::Latest,
        }]);
        assert_eq!(removed, vec!["123456789012:clicks:9".to_string()]);
        assert!(active.stream_of(&lease(&clicks)).is_none());
        assert!(active.stream_of(&lease(&orders)).is_some());
        let single = LeaseScope::single(StreamIdentity::from_name("orders"));
        assert!(active.stream_of(&lease(&single)).is_none());
    }

    #[tokio::test]
    async fn a_stream_set_changes_while_shared() {
        let set = StreamSet::new(RemovedStreamPolicy::Keep);
        let handle = set.clone();
        assert!(set.add(StreamConfig::new(
            StreamIdentity::from_name("a"),
            InitialPosition::Latest
        )));
        assert!(!handle.add(StreamConfig::new(
            StreamIdentity::from_name("a"),
            InitialPosition::TrimHorizon
        )));
        assert_eq!(set.streams().await.len(), 1);
        assert_eq!(
            set.streams().await[0].initial_position,
            InitialPosition::TrimHorizon
        );
        assert!(handle.remove("a"));
        assert!(!handle.remove("a"));
        assert!(set.streams().await.is_empty());
    }
}

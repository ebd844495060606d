//! A running scheduler's state, for health checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::shard::stopped::StoppedShards;

#[derive(Debug, Default)]
struct Inner {
    running: AtomicBool,
    synced: AtomicBool,
    draining: AtomicBool,
    consumers: AtomicUsize,
    stopped: Arc<StoppedShards>,
}

/// A shard whose processing stopped until an operator acts (its lease stays held).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoppedShard {
    /// The lease key.
    pub lease_key: String,
    /// Why it stopped, e.g. the range of records trimmed before they were read.
    pub reason: String,
}

/// What a scheduler is doing; clones share the state. Get it with
/// [`Scheduler::status`](super::Scheduler::status) before `run`.
#[derive(Debug, Clone, Default)]
pub struct SchedulerStatus(Arc<Inner>);

impl SchedulerStatus {
    /// `run` is executing (set at start, cleared when it returns).
    pub fn is_running(&self) -> bool {
        self.0.running.load(Ordering::Relaxed)
    }

    /// Shards were listed and leases synced at least once: the worker can take work.
    pub fn has_synced(&self) -> bool {
        self.0.synced.load(Ordering::Relaxed)
    }

    /// A graceful shutdown is in progress.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Shard consumers running (leases being processed).
    pub fn consumers(&self) -> usize {
        self.0.consumers.load(Ordering::Relaxed)
    }

    /// Shards stopped until an operator acts (records trimmed before they were read, under
    /// [`TrimmedDataPolicy::Stop`](crate::retrieval::TrimmedDataPolicy::Stop)).
    pub fn stopped_shards(&self) -> Vec<StoppedShard> {
        self.0
            .stopped
            .snapshot()
            .into_iter()
            .map(|(lease_key, reason)| StoppedShard { lease_key, reason })
            .collect()
    }

    /// Ready for work: running, synced, not draining and no shard stopped. A worker holding no
    /// lease is still ready — the fleet may simply have enough workers (idle by choice).
    pub fn is_ready(&self) -> bool {
        self.is_running() && self.has_synced() && !self.is_draining() && self.0.stopped.is_empty()
    }

    pub(crate) fn stopped_registry(&self) -> Arc<StoppedShards> {
        self.0.stopped.clone()
    }

    pub(crate) fn set_running(&self, v: bool) {
        self.0.running.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_synced(&self) {
        self.0.synced.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self, v: bool) {
        self.0.draining.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_consumers(&self, n: usize) {
        self.0.consumers.store(n, Ordering::Relaxed);
    }
}

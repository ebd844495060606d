//! Shards whose consumers stopped and wait for an operator, shared with the scheduler's status.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Lease key → why its shard stopped.
#[derive(Debug, Default)]
pub(crate) struct StoppedShards(Mutex<BTreeMap<String, String>>);

impl StoppedShards {
    /// Marks `key` stopped until the guard is dropped (the consumer ends, however it ends).
    pub(crate) fn stop(self: &std::sync::Arc<Self>, key: &str, reason: String) -> StoppedGuard {
        self.0.lock().insert(key.to_string(), reason);
        StoppedGuard {
            shards: self.clone(),
            key: key.to_string(),
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

/// Unmarks its shard when dropped.
pub(crate) struct StoppedGuard {
    shards: std::sync::Arc<StoppedShards>,
    key: String,
}

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.shards.0.lock().remove(&self.key);
    }
}

//! The scheduler's background shard sync: which streams are active, leases for their new
//! shards, cleanup of finished leases, and the removed-stream policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod shards;

use shards::sync_listed;
pub use shards::{SyncError, SyncReport, sync_shards};

use super::streams::{
    ActiveStream, ActiveStreams, RemovedStreamPolicy, StreamConfig, StreamSource, identifier_of,
};
use crate::kinesis::{KinesisDataPlane, KinesisError};
use crate::lease::{Lease, LeaseCoordinator, LeaseScope, LeaseStore};
use crate::retry::RetryConfig;

/// What shard sync tells the scheduler loop.
#[derive(Debug)]
pub(super) enum SyncNotice {
    /// The (single) stream no longer exists: the scheduler stops.
    StreamGone,
    /// These streams are no longer consumed: their consumers stop and release their leases.
    StreamsRemoved(Vec<String>),
}

pub(super) struct ShardSync {
    pub(super) source: StreamSource,
    pub(super) coordinator: Arc<LeaseCoordinator>,
    pub(super) kinesis: Arc<dyn KinesisDataPlane>,
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) active: Arc<ActiveStreams>,
    pub(super) interval: Duration,
    pub(super) notices: mpsc::UnboundedSender<SyncNotice>,
    pub(super) status: super::SchedulerStatus,
    /// Multi-stream: resolved lease scopes by stream name.
    pub(super) resolved: BTreeMap<Arc<str>, LeaseScope>,
    /// Multi-stream: when this worker first saw leases of each removed stream.
    pub(super) removed_since: BTreeMap<String, Instant>,
    /// Leases the last round found unlisted and ResourceNotFound (deleted if this one agrees).
    pub(super) suspected_gone: BTreeSet<String>,
}

impl ShardSync {
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut first = true;
        // Start-up retries come sooner than a sync interval, backing off to it: an answer
        // that will not change (a service refusing a parameter, say) is not asked every second.
        let mut startup = RetryConfig::new(Duration::from_secs(1), self.interval).backoff(0);
        loop {
            if !first {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
            match self.round(first).await {
                Ok(true) => first = false,
                Ok(false) => return,
                Err(()) if first => {
                    let delay = startup.next_delay().unwrap_or(self.interval);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(()) => {}
            }
        }
    }

    /// One sync round; `Ok(false)` when the scheduler must stop. After the first, only the sync
    /// leader ([`LeaseCoordinator::is_sync_leader`]) lists the table and the shards; the others
    /// only follow the stream tracker (their set of consumed streams is their own).
    async fn round(&mut self, first: bool) -> Result<bool, ()> {
        let multi = matches!(self.source, StreamSource::Multi(_));
        if let StreamSource::Multi(tracker) = &self.source {
            let configs = tracker.streams().await;
            let streams = self.resolve_all(configs).await;
            let removed = self.active.replace(streams);
            if !removed.is_empty() {
                info!(streams = ?removed, "streams no longer consumed");
                let _ = self.notices.send(SyncNotice::StreamsRemoved(removed));
            }
        }
        if !first && !self.coordinator.is_sync_leader() {
            debug!("shard sync skipped: another worker is the sync leader");
            return Ok(true);
        }
        // One listing for every stream (their leases are disjoint) and the removal policy.
        let listing = match self.store.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %crate::error::Report(&e), "listing leases failed; retrying");
                return Err(());
            }
        };
        let mut created = 0;
        let mut failed = false;
        let mut suspected = BTreeSet::new();
        for stream in self.active.all() {
            match sync_listed(
                self.kinesis.as_ref(),
                self.store.as_ref(),
                &stream.scope,
                stream.initial_position,
                &listing.leases,
                &self.suspected_gone,
            )
            .await
            {
                Ok(mut report) => {
                    suspected.append(&mut report.suspected_gone);
                    if !report.created.is_empty() || !report.deleted.is_empty() {
                        info!(
                            stream = %stream.scope.stream(),
                            created = report.created.len(),
                            deleted = report.deleted.len(),
                            "shard sync"
                        );
                    }
                    created += report.created.len();
                }
                Err(SyncError::StreamGone {
                    stream: name,
                    source,
                }) if !multi => {
                    error!(stream = %name, error = %source, "stream not found; stopping");
                    let _ = self.notices.send(SyncNotice::StreamGone);
                    return Ok(false);
                }
                Err(SyncError::StreamGone { stream: name, .. }) => {
                    // Re-resolved next round: deleted for good, or re-created with a new epoch.
                    warn!(stream = %name, "stream not found; no longer consumed");
                    self.resolved.remove(name.as_str());
                }
                Err(e) => {
                    warn!(stream = %stream.scope.stream(), error = %crate::error::Report(&e), "shard sync failed; retrying");
                    failed = true;
                }
            }
        }
        self.suspected_gone = suspected;
        if let Some(RemovedStreamPolicy::DeleteAfter(grace)) = self.removal_policy()
            && let Err(e) = self.apply_removal_policy(grace, &listing.leases).await
        {
            warn!(error = %crate::error::Report(&e), "cleaning up leases of removed streams failed; retrying");
        }
        if created > 0 {
            // New leases: take them now rather than at the next taker cycle.
            self.coordinator.take_now().await;
        }
        if failed {
            Err(())
        } else {
            self.status.set_synced();
            Ok(true)
        }
    }

    fn removal_policy(&self) -> Option<RemovedStreamPolicy> {
        match &self.source {
            StreamSource::Multi(t) => Some(t.removed_stream_policy()),
            StreamSource::Single(_) => None,
        }
    }

    /// Lease scopes for the tracker's streams, looking up account and creation time once.
    async fn resolve_all(&mut self, configs: Vec<StreamConfig>) -> Vec<ActiveStream> {
        let mut active = Vec::with_capacity(configs.len());
        let mut named = BTreeSet::new();
        for config in configs {
            named.insert(config.stream.name.clone());
            let scope = match (&config.identifier, self.resolved.get(&config.stream.name)) {
                (Some((account, epoch)), _) => {
                    LeaseScope::multi(config.stream.clone(), account, *epoch)
                }
                (None, Some(scope)) => scope.clone(),
                (None, None) => match self.resolve(&config).await {
                    Ok(scope) => scope,
                    Err(KinesisError::ResourceNotFound { .. }) => {
                        warn!(stream = %config.stream, "tracked stream does not exist; skipped");
                        continue;
                    }
                    Err(e) => {
                        warn!(stream = %config.stream, error = %crate::error::Report(&e), "describing the stream failed; skipped this round");
                        continue;
                    }
                },
            };
            self.resolved
                .insert(config.stream.name.clone(), scope.clone());
            active.push(ActiveStream {
                scope,
                initial_position: config.initial_position,
            });
        }
        self.resolved.retain(|name, _| named.contains(name));
        active
    }

    async fn resolve(&self, config: &StreamConfig) -> Result<LeaseScope, KinesisError> {
        let summary = self.kinesis.describe_stream(&config.stream).await?;
        let account = summary.identity.account_id().ok_or_else(|| {
            KinesisError::invalid(format!(
                "stream {} has no account id in its ARN {:?}",
                config.stream, summary.identity.arn
            ))
        })?;
        let mut identity = config.stream.clone();
        identity.arn = identity.arn.or(summary.identity.arn.clone());
        Ok(LeaseScope::multi(
            identity,
            account,
            summary.creation_epoch_seconds,
        ))
    }

    /// Tracks how long each removed stream's leases have been in the table, and deletes them
    /// once the grace period is over.
    async fn apply_removal_policy(
        &mut self,
        grace: Duration,
        table: &[Lease],
    ) -> Result<(), crate::lease::LeaseError> {
        let now = Instant::now();
        let mut removed: BTreeMap<String, Vec<&Lease>> = BTreeMap::new();
        for lease in table {
            let id = identifier_of(lease);
            if !id.is_empty() && !self.active.is_active(id) {
                removed.entry(id.to_string()).or_default().push(lease);
            }
        }
        self.removed_since.retain(|id, _| removed.contains_key(id));
        for (id, leases) in removed {
            let since = *self.removed_since.entry(id.clone()).or_insert(now);
            if now.duration_since(since) < grace {
                continue;
            }
            let mut deleted = 0;
            for lease in leases {
                match self.store.delete(lease).await {
                    Ok(()) => deleted += 1,
                    // Changed since the listing: next round.
                    Err(e) if e.is_lost() => {}
                    Err(e) => return Err(e),
                }
            }
            info!(stream_identifier = %id, deleted, "leases of a removed stream deleted after the grace period");
        }
        Ok(())
    }
}

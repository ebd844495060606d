//! Start-up checks: conditions that no retry fixes fail `run` fast, typed, instead of a worker
//! that runs for ever without a lease table or a stream.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, warn};

use super::{SchedulerConfig, SchedulerError, StreamSource};
use crate::error::Cause;
use crate::kinesis::{KinesisDataPlane, KinesisError};
use crate::lease::{DeadlineStore, LeaseError, LeaseStore};

/// A key no lease has: reading it costs one small read and tells whether the table exists and
/// may be read.
const PROBE_KEY: &str = "kcl-rs-startup-probe";

/// Probes the lease table and (single-stream mode) the stream. A fatal answer is retried for
/// `fail_fast_after` (a table another worker is creating, a policy being attached), then
/// returned; a retryable one is left to the run's own retries.
pub(super) async fn check(
    config: &SchedulerConfig,
    store: std::sync::Arc<dyn LeaseStore>,
    kinesis: &dyn KinesisDataPlane,
) -> Result<(), SchedulerError> {
    // A probe that hangs counts as retryable (TimedOut): the run's own retries take over.
    let c = &config.coordinator;
    let store = DeadlineStore::new(store, c.store_call_timeout(), c.list_timeout());
    let give_up = crate::limits::deadline_after(config.fail_fast_after);
    if config.create_lease_table {
        // A failure here is reported by the probe below, typed, like a table that is missing.
        if let Err(e) = store.ensure_table().await {
            warn!(error = %crate::error::Report(&e), "creating the lease table failed");
        }
    }
    loop {
        let failure = probe(config, &store, kinesis).await;
        let Some(failure) = failure else {
            return Ok(());
        };
        if Instant::now() >= give_up {
            error!(error = %failure, "start-up failed: retrying cannot fix this");
            return Err(failure);
        }
        warn!(error = %failure, "start-up check failed; retrying until fail_fast_after");
        tokio::time::sleep(Duration::from_secs(1).min(config.fail_fast_after)).await;
    }
}

async fn probe(
    config: &SchedulerConfig,
    store: &dyn LeaseStore,
    kinesis: &dyn KinesisDataPlane,
) -> Option<SchedulerError> {
    match store.get(PROBE_KEY).await {
        Err(e @ LeaseError::TableNotFound { .. }) => {
            return Some(SchedulerError::LeaseTableMissing(e));
        }
        Err(e @ LeaseError::AccessDenied { .. }) => {
            return Some(SchedulerError::LeaseTableAccessDenied(e));
        }
        Err(e @ LeaseError::CredentialsRejected { .. }) => {
            return Some(SchedulerError::CredentialsRejected {
                service: "the lease table",
                source: Cause::new(e),
            });
        }
        _ => {}
    }
    let StreamSource::Single(stream) = &config.streams else {
        return None;
    };
    match kinesis.describe_stream(stream).await {
        Err(source @ KinesisError::ResourceNotFound { .. }) => {
            Some(SchedulerError::StreamNotFound {
                stream: stream.name.to_string(),
                source,
            })
        }
        Err(e @ KinesisError::AccessDenied { .. }) => Some(SchedulerError::StreamAccessDenied(e)),
        Err(e @ KinesisError::CredentialsRejected { .. }) => {
            Some(SchedulerError::CredentialsRejected {
                service: "Kinesis",
                source: Cause::new(e),
            })
        }
        _ => None,
    }
}

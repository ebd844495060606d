//! Scheduler configuration: a builder validated at build time, with the KCL's names and defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::aggregation::HashRangePolicy;
use crate::kinesis::{DeadlineKinesis, KinesisDataPlane, SourceKind};
use crate::lease::{CoordinatorConfig, CoordinatorConfigError, LeaseStore};
use crate::limits::MAX_SETTING_DURATION;
use crate::model::{InitialPosition, StreamIdentity};

use super::streams::{StreamSource, StreamTracker};
use crate::processor::ShardRecordProcessorFactory;
use crate::retrieval::{PollingConfig, PollingRetrieval, SharedRetrieval, TrimmedDataPolicy};
use crate::shard::{BatchingWindow, CheckpointPolicy, FailurePolicy};
use crate::telemetry::FleetSizing;

use super::Scheduler;

/// An invalid or missing scheduler setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerConfigError {
    /// A required setting was not given.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// A setting has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A lease-coordinator setting is invalid.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorConfigError),
    /// The data plane's source cannot do what a setting asks (e.g. `AT_TIMESTAMP` on
    /// DynamoDB Streams).
    #[error("{setting} is not supported by {kind:?}")]
    Unsupported {
        /// The setting.
        setting: &'static str,
        /// The source.
        kind: SourceKind,
    },
}

/// How records reach the shard consumers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RetrievalMode {
    /// GetRecords polling through the scheduler's data plane.
    Polling(PollingConfig),
    /// A custom retrieval, e.g. enhanced fan-out from `kcl-efo`.
    Custom(SharedRetrieval),
}

impl From<PollingConfig> for RetrievalMode {
    fn from(config: PollingConfig) -> Self {
        Self::Polling(config)
    }
}

impl From<SharedRetrieval> for RetrievalMode {
    fn from(retrieval: SharedRetrieval) -> Self {
        Self::Custom(retrieval)
    }
}

/// The settings a built scheduler runs with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// The stream, or the tracked set of streams (multi-stream mode).
    pub streams: StreamSource,
    /// `applicationName`: names the lease table and the enhanced fan-out consumer.
    pub application_name: String,
    /// Lease coordination, including `worker_id` and `failover_time`.
    pub coordinator: CoordinatorConfig,
    /// `initialPositionInStream` for shards with no lease (single-stream mode; each tracked
    /// stream has its own).
    pub initial_position: InitialPosition,
    /// What happens when a processor fails a batch.
    pub failure_policy: FailurePolicy,
    /// Automatic checkpointing.
    pub checkpoint_policy: CheckpointPolicy,
    /// When set, a processor whose shard delivered nothing for this long is called with an
    /// empty batch (and again each interval while nothing comes), so it can flush on time
    /// (the KCL's `callProcessRecordsEvenForEmptyRecordList`, on a timer). Default: off.
    pub idle_tick: Option<Duration>,
    /// How records are grouped into `process_records` calls. Default: each read as it comes.
    pub batching_window: BatchingWindow,
    /// `shardSyncIntervalMillis`: how often shards are listed to create leases for new shards
    /// and delete finished ones. KCL default 60 s.
    pub shard_sync_interval: Duration,
    /// `parentShardPollIntervalMillis`: how often a child shard checks whether its parents
    /// ended. KCL default 10 s; here 2 s, so children start sooner after a reshard.
    pub parent_shard_poll_interval: Duration,
    /// Longest a graceful shutdown waits for processors to checkpoint before stopping anyway;
    /// what is left of it goes to graceful steals still waiting for their previous owner.
    /// Releasing the leases themselves comes after it (one conditional write each).
    pub shutdown_timeout: Duration,
    /// Check of unpacked user records against the shard's hash range (default:
    /// [`HashRangePolicy::DeliverAndWarn`]; `None` turns it off).
    pub hash_range_check: Option<HashRangePolicy>,
    /// What a shard consumer does when records were trimmed before it read them (default:
    /// stop the shard and report it).
    pub trimmed_data: TrimmedDataPolicy,
    /// Deadline of each Kinesis call (default: the failover time). A hung call fails as
    /// retryable [`crate::kinesis::KinesisError::TimedOut`] and is retried with backoff.
    pub kinesis_call_timeout: Duration,
    /// How long `run` retries a start-up check that failed for a reason retrying cannot fix
    /// (lease table missing, access denied, credentials rejected, single stream missing)
    /// before returning it as a typed [`super::SchedulerError`]. Default 10 s.
    pub fail_fast_after: Duration,
    /// Whether start-up creates the lease table when it is missing
    /// ([`LeaseStore::ensure_table`](crate::lease::LeaseStore::ensure_table)). Default off.
    pub create_lease_table: bool,
    /// Seed for retry jitter, so simulated runs reproduce.
    pub seed: u64,
    /// Settings of the `WorkersNeeded` fleet-sizing signal.
    pub fleet_sizing: FleetSizing,
    /// A bounded run: each shard stops at this bound and `run` returns once every shard got
    /// there ([`RunEnd::BoundReached`](super::RunEnd::BoundReached)). Default: unbounded.
    pub stop_at: Option<super::StopAt>,
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    streams: StreamSource,
    application_name: String,
    worker_id: Option<String>,
    lease_store: Option<Arc<dyn LeaseStore>>,
    kinesis: Option<Arc<dyn KinesisDataPlane>>,
    factory: Option<Arc<dyn ShardRecordProcessorFactory>>,
    /// `None`: polling with the source's defaults.
    retrieval: Option<RetrievalMode>,
    initial_position: InitialPosition,
    failover_time: Option<Duration>,
    coordinator: Option<CoordinatorConfig>,
    failure_policy: FailurePolicy,
    checkpoint_policy: CheckpointPolicy,
    idle_tick: Option<Duration>,
    batching_window: BatchingWindow,
    shard_sync_interval: Duration,
    parent_shard_poll_interval: Duration,
    shutdown_timeout: Duration,
    hash_range_check: Option<HashRangePolicy>,
    trimmed_data: TrimmedDataPolicy,
    kinesis_call_timeout: Option<Duration>,
    fail_fast_after: Duration,
    create_lease_table: bool,
    seed: u64,
    fleet_sizing: FleetSizing,
    stop_at: Option<super::StopAt>,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("streams", &self.streams)
            .field("application_name", &self.application_name)
            .finish_non_exhaustive()
    }
}

impl SchedulerBuilder {
    /// A builder for an application consuming `stream`.
    pub fn new(stream: StreamIdentity, application_name: impl Into<String>) -> Self {
        Self::with_source(StreamSource::Single(stream), application_name)
    }

    /// A builder for an application consuming the streams `tracker` lists (multi-stream mode,
    /// lease keys `account:stream:creationEpoch:shardId` in one lease table).
    pub fn multi_stream(tracker: impl StreamTracker, application_name: impl Into<String>) -> Self {
        Self::with_source(StreamSource::Multi(Arc::new(tracker)), application_name)
    }

    fn with_source(streams: StreamSource, application_name: impl Into<String>) -> Self {
        Self {
            streams,
            application_name: application_name.into(),
            worker_id: None,
            lease_store: None,
            kinesis: None,
            factory: None,
            retrieval: None,
            initial_position: InitialPosition::Latest,
            failover_time: None,
            coordinator: None,
            failure_policy: FailurePolicy::default(),
            checkpoint_policy: CheckpointPolicy::Manual,
            idle_tick: None,
            batching_window: BatchingWindow::PER_READ,
            shard_sync_interval: Duration::from_secs(60),
            parent_shard_poll_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            hash_range_check: Some(HashRangePolicy::DeliverAndWarn),
            trimmed_data: TrimmedDataPolicy::Stop,
            kinesis_call_timeout: None,
            fail_fast_after: Duration::from_secs(10),
            create_lease_table: false,
            seed: 0,
            fleet_sizing: FleetSizing::default(),
            stop_at: None,
        }
    }

    /// This worker's id. Default: the application name, the host name and 64 random bits, so
    /// two workers never share an id (two workers with one id would both believe they hold
    /// the same leases).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// The lease table (required).
    pub fn lease_store(mut self, store: Arc<dyn LeaseStore>) -> Self {
        self.lease_store = Some(store);
        self
    }

    /// The Kinesis data plane (required).
    pub fn kinesis(mut self, kinesis: Arc<dyn KinesisDataPlane>) -> Self {
        self.kinesis = Some(kinesis);
        self
    }

    /// The processor factory (required).
    pub fn processor_factory(mut self, factory: impl ShardRecordProcessorFactory) -> Self {
        self.factory = Some(Arc::new(factory));
        self
    }

    /// How records are read: polling (the default, with [`PollingConfig::default`], or
    /// [`PollingConfig::dynamodb_streams`] on a DynamoDB Streams source; a [`PollingConfig`]
    /// converts), enhanced
    /// fan-out (`kcl_efo::FanOutRetrieval` converts), or a retrieval of your own
    /// ([`SharedRetrieval`] converts).
    pub fn retrieval(mut self, mode: impl Into<RetrievalMode>) -> Self {
        self.retrieval = Some(mode.into());
        self
    }

    /// Where shards with no lease start (default `Latest`).
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// `failoverTimeMillis`, with the renew and taker intervals derived from it.
    pub fn failover_time(mut self, failover: Duration) -> Self {
        self.failover_time = Some(failover);
        self
    }

    /// Full lease-coordinator settings (its `worker_id` is replaced by the scheduler's). A
    /// different failover time set by [`failover_time`](Self::failover_time) as well is a build
    /// error, not a silent choice.
    pub fn coordinator_config(mut self, config: CoordinatorConfig) -> Self {
        self.coordinator = Some(config);
        self
    }

    /// The processor failure policy (default: retry with backoff, never skip).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Calls each processor with an empty batch when its shard delivered nothing for
    /// `interval` (at least 10 ms), and again each interval while nothing comes: for timed
    /// flushes. Default: off.
    pub fn idle_tick(mut self, interval: Duration) -> Self {
        self.idle_tick = Some(interval);
        self
    }

    /// Groups records into `process_records` calls of up to `window.max_records` records and
    /// `window.max_bytes` bytes, accumulating across reads for up to `window.max_wait`
    /// (Lambda's batching window). Default: [`BatchingWindow::PER_READ`].
    pub fn batching_window(mut self, window: BatchingWindow) -> Self {
        self.batching_window = window;
        self
    }

    /// Automatic checkpointing (default: the processor checkpoints itself).
    pub fn checkpoint_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoint_policy = policy;
        self
    }

    /// `shardSyncIntervalMillis` (default 60 s).
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// `parentShardPollIntervalMillis` (default 2 s).
    pub fn parent_shard_poll_interval(mut self, interval: Duration) -> Self {
        self.parent_shard_poll_interval = interval;
        self
    }

    /// Graceful shutdown deadline (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Checks unpacked user records against the shard's hash range with this policy
    /// (default: [`HashRangePolicy::DeliverAndWarn`]).
    pub fn hash_range_check(mut self, policy: HashRangePolicy) -> Self {
        self.hash_range_check = Some(policy);
        self
    }

    /// Turns the hash-range check off: user records are delivered unchecked, uncounted.
    pub fn without_hash_range_check(mut self) -> Self {
        self.hash_range_check = None;
        self
    }

    /// What a shard consumer does when records were trimmed (past the stream's retention)
    /// before it read them. Default: [`TrimmedDataPolicy::Stop`] — stop the shard, keep its
    /// lease, log and count the gap and report it in [`SchedulerStatus`](super::SchedulerStatus)
    /// until an operator acts; never passed over silently.
    pub fn trimmed_data(mut self, policy: TrimmedDataPolicy) -> Self {
        self.trimmed_data = policy;
        self
    }

    /// Deadline of each Kinesis call (default: the failover time).
    pub fn kinesis_call_timeout(mut self, timeout: Duration) -> Self {
        self.kinesis_call_timeout = Some(timeout);
        self
    }

    /// How long start-up retries a condition that retrying cannot fix before `run` returns it
    /// (default 10 s).
    pub fn fail_fast_after(mut self, after: Duration) -> Self {
        self.fail_fast_after = after;
        self
    }

    /// Creates the lease table at start if it is missing (DynamoDB: on-demand billing, with the
    /// `LeaseOwnerToLeaseKeyIndex` the KCL 3.x uses, so a move back to Java needs no table work).
    pub fn create_lease_table_if_missing(mut self) -> Self {
        self.create_lease_table = true;
        self
    }

    /// Settings of the fleet-sizing signal (capacity per worker, target utilization, drain time).
    pub fn fleet_sizing(mut self, sizing: FleetSizing) -> Self {
        self.fleet_sizing = sizing;
        self
    }

    /// Makes the run bounded: each shard stops at `bound` (its processor gets
    /// `shutdown_requested` there), and `run` returns [`RunEnd::BoundReached`](super::RunEnd::BoundReached)
    /// once every shard of the application reached it or ended — for backfills and replays into
    /// a separate application name. With an `AtTimestamp` initial position it replays a window.
    pub fn stop_at(mut self, bound: super::StopAt) -> Self {
        self.stop_at = Some(bound);
        self
    }

    /// Seed for retry jitter (the simulation's, so that a seed replays exactly).
    #[cfg(feature = "testing")]
    pub(crate) fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the settings and builds the scheduler.
    pub fn build(self) -> Result<Scheduler, SchedulerConfigError> {
        use SchedulerConfigError as E;
        let invalid = |field, reason: String| E::Invalid { field, reason };
        if self.application_name.trim().is_empty() {
            return Err(invalid("application_name", "must not be empty".into()));
        }
        if let StreamSource::Single(stream) = &self.streams
            && stream.name.is_empty()
        {
            return Err(invalid("stream", "stream name must not be empty".into()));
        }
        let store = self.lease_store.ok_or(E::Missing("lease_store"))?;
        let kinesis = self.kinesis.ok_or(E::Missing("kinesis"))?;
        let capabilities = kinesis.capabilities();
        if !capabilities.at_timestamp
            && matches!(self.initial_position, InitialPosition::AtTimestamp(_))
            && matches!(self.streams, StreamSource::Single(_))
        {
            return Err(E::Unsupported {
                setting: "initial_position AT_TIMESTAMP",
                kind: capabilities.kind,
            });
        }
        // No hash-key ranges (and no KPL): nothing to check records against.
        let hash_range_check = self
            .hash_range_check
            .filter(|_| capabilities.hash_key_ranges);
        let factory = self.factory.ok_or(E::Missing("processor_factory"))?;
        let worker_id = self
            .worker_id
            .unwrap_or_else(|| default_worker_id(&self.application_name));
        let mut coordinator = match (self.coordinator, self.failover_time) {
            (Some(c), Some(f)) if c.failover_time != f => {
                return Err(invalid(
                    "failover_time",
                    format!(
                        "set to {f:?} by failover_time() and to {:?} by coordinator_config(); set it in one place",
                        c.failover_time
                    ),
                ));
            }
            (Some(c), _) => c,
            (None, Some(f)) => CoordinatorConfig::new(worker_id.clone()).with_failover_time(f),
            (None, None) => CoordinatorConfig::new(worker_id.clone()),
        };
        coordinator.worker_id = worker_id;
        coordinator.validate()?;
        let kinesis_call_timeout = self
            .kinesis_call_timeout
            .unwrap_or(coordinator.failover_time);
        if kinesis_call_timeout.is_zero() || kinesis_call_timeout > MAX_SETTING_DURATION {
            return Err(invalid(
                "kinesis_call_timeout",
                format!(
                    "{kinesis_call_timeout:?} must be positive and at most {MAX_SETTING_DURATION:?}"
                ),
            ));
        }
        // Every Kinesis call of the scheduler, its consumers and polling answers in time.
        let kinesis: Arc<dyn KinesisDataPlane> =
            Arc::new(DeadlineKinesis::new(kinesis, kinesis_call_timeout));
        let retrieval = self.retrieval.unwrap_or_else(|| {
            RetrievalMode::Polling(match capabilities.kind {
                SourceKind::DynamoDbStreams => PollingConfig::dynamodb_streams(),
                _ => PollingConfig::default(),
            })
        });
        let retrieval: SharedRetrieval = match retrieval {
            RetrievalMode::Polling(polling) => {
                polling
                    .validate()
                    .map_err(|reason| invalid("polling", reason))?;
                Arc::new(PollingRetrieval::new(kinesis.clone(), polling))
            }
            RetrievalMode::Custom(r) => r,
        };
        for (field, d) in [
            ("shard_sync_interval", self.shard_sync_interval),
            (
                "parent_shard_poll_interval",
                self.parent_shard_poll_interval,
            ),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be positive".into()));
            }
        }
        let mut bounded = vec![
            ("shard_sync_interval", self.shard_sync_interval),
            (
                "parent_shard_poll_interval",
                self.parent_shard_poll_interval,
            ),
            ("shutdown_timeout", self.shutdown_timeout),
            ("fail_fast_after", self.fail_fast_after),
            ("fleet_sizing.drain_time", self.fleet_sizing.drain_time),
            ("fleet_sizing.interval", self.fleet_sizing.interval),
        ];
        let retries = matches!(
            self.failure_policy,
            FailurePolicy::Retry { .. } | FailurePolicy::RetryThen { .. }
        );
        let (min_backoff, max_backoff) = self.failure_policy.backoff();
        if retries {
            bounded.push(("failure_policy.min_backoff", min_backoff));
            bounded.push(("failure_policy.max_backoff", max_backoff));
        }
        if let FailurePolicy::RetryThen { limit, .. } = &self.failure_policy {
            limit.validate().map_err(|e| invalid("failure_policy", e))?;
        }
        if let CheckpointPolicy::Auto { interval, .. } = self.checkpoint_policy {
            bounded.push(("checkpoint_policy.interval", interval));
        }
        if let Some(tick) = self.idle_tick {
            if tick < Duration::from_millis(10) {
                return Err(invalid("idle_tick", format!("{tick:?} is below 10 ms")));
            }
            bounded.push(("idle_tick", tick));
        }
        self.batching_window
            .validate()
            .map_err(|e| invalid("batching_window", e))?;
        if let Some((field, d)) = bounded.into_iter().find(|(_, d)| *d > MAX_SETTING_DURATION) {
            return Err(invalid(
                field,
                format!("{d:?} exceeds the maximum of {MAX_SETTING_DURATION:?}"),
            ));
        }
        if retries && (min_backoff.is_zero() || min_backoff > max_backoff) {
            return Err(invalid(
                "failure_policy",
                format!(
                    "retry backoff {min_backoff:?}..{max_backoff:?} must be positive and ordered"
                ),
            ));
        }
        let sizing = &self.fleet_sizing;
        if !(sizing.capacity > 0.0
            && sizing.target_utilization > 0.0
            && sizing.target_utilization <= 1.0
            && !sizing.drain_time.is_zero()
            && !sizing.interval.is_zero())
        {
            return Err(invalid(
                "fleet_sizing",
                format!(
                    "capacity must be positive, target utilization in (0, 1], drain time and interval positive; got {sizing:?}"
                ),
            ));
        }
        if let CheckpointPolicy::Auto { records, interval } = self.checkpoint_policy
            && (records == 0 || interval.is_zero())
        {
            return Err(invalid(
                "checkpoint_policy",
                "automatic checkpoints need a positive record count and interval".into(),
            ));
        }
        let config = SchedulerConfig {
            streams: self.streams,
            application_name: self.application_name,
            coordinator,
            initial_position: self.initial_position,
            failure_policy: self.failure_policy,
            checkpoint_policy: self.checkpoint_policy,
            idle_tick: self.idle_tick,
            batching_window: self.batching_window,
            shard_sync_interval: self.shard_sync_interval,
            parent_shard_poll_interval: self.parent_shard_poll_interval,
            shutdown_timeout: self.shutdown_timeout,
            hash_range_check,
            trimmed_data: self.trimmed_data,
            kinesis_call_timeout,
            fail_fast_after: self.fail_fast_after,
            create_lease_table: self.create_lease_table,
            seed: self.seed,
            fleet_sizing: self.fleet_sizing,
            stop_at: self.stop_at,
        };
        Ok(Scheduler {
            config,
            store,
            kinesis,
            retrieval,
            factory,
            status: super::SchedulerStatus::default(),
        })
    }
}

/// `application-host-random`: the host name tells operators where a worker runs, 64 random bits
/// (from the standard library's per-process random hasher keys, seeded by the OS) keep ids
/// unique where every container is pid 1 on a host named alike.
fn default_worker_id(application: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{application}-{host}-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_worker_ids_are_unique_and_name_the_host() {
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|_| default_worker_id("app")).collect();
        assert_eq!(ids.len(), 1000);
        let id = ids.first().unwrap();
        assert!(id.starts_with("app-"), "{id}");
        let suffix = id.rsplit('-').next().unwrap();
        assert_eq!(suffix.len(), 16, "{id}");
    }
}

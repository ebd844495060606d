//! Metrics, recorded once through the [`metrics`] facade, so any exporter works: Prometheus
//! (`metrics-exporter-prometheus`), CloudWatch (`kcl-cloudwatch`, with the KCL's names and
//! dimensions), or several at once (`metrics_util::layers::FanoutBuilder`).
//!
//! Names and label keys are the KCL's CloudWatch names and dimensions. Metrics a KCL SUMMARY
//! level publishes are recorded at [`Level::INFO`]; the chattier ones (per-batch timings and
//! sizes, lease-store latency) at [`Level::DEBUG`], which the CloudWatch exporter publishes only
//! at DETAILED. Call [`describe`] once after installing a recorder to give exporters units and
//! help texts.
//!
//! | metric | kind | labels | level |
//! |---|---|---|---|
//! | `RecordsProcessed`, `DataBytesProcessed` | counter | Operation, ShardId, WorkerIdentifier, StreamId | INFO |
//! | `MillisBehindLatest` | gauge | same | INFO |
//! | `RecordProcessor.processRecords.Time` | histogram (ms) | same | DEBUG |
//! | `BatchSize` | histogram | same | DEBUG |
//! | `ProcessorErrors` | counter | same + Outcome (retry, skip, dead_letter, stop) | INFO |
//! | `DeaggregationPassThroughs`, `HashRangeDrops` | counter | same | INFO |
//! | `Throttles`, `ExpiredIterator` | counter | Operation, ShardId, StreamId | INFO |
//! | `CurrentLeases` | gauge | Operation, WorkerIdentifier | INFO |
//! | `TakenLeases`, `LostLeases`, `StolenLeases`, `HandedOffLeases`, `LeaderStepDowns` | counter | Operation, WorkerIdentifier | INFO |
//! | `NumWorkers`, `LoadFactor`, `WorkersNeeded` | gauge | Operation, WorkerIdentifier | INFO |
//! | `LeaseStore.Time` | histogram (ms) | Operation = the store call, WorkerIdentifier | DEBUG |
//! | `LeaseStore.Errors` | counter | same | INFO |

pub use metrics::Level;
use metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};

/// Metric names (the KCL's where it has one).
pub mod names {
    /// User records delivered to `process_records` and processed successfully.
    pub const RECORDS_PROCESSED: &str = "RecordsProcessed";
    /// Bytes of record data processed successfully.
    pub const DATA_BYTES_PROCESSED: &str = "DataBytesProcessed";
    /// How far behind the tip of the shard the last batch was read.
    pub const MILLIS_BEHIND_LATEST: &str = "MillisBehindLatest";
    /// Time spent in `process_records`, per call.
    pub const PROCESS_TIME: &str = "RecordProcessor.processRecords.Time";
    /// User records per batch.
    pub const BATCH_SIZE: &str = "BatchSize";
    /// Failed `process_records` calls, by what the failure policy did.
    pub const PROCESSOR_ERRORS: &str = "ProcessorErrors";
    /// User records passed over by the failure policy (skipped), per shard.
    pub const RECORDS_SKIPPED: &str = "RecordsSkipped";
    /// User records handed to a dead-letter handler and stored by it, per shard.
    pub const RECORDS_DEAD_LETTERED: &str = "RecordsDeadLettered";
    /// Kinesis records that were not valid aggregates and were delivered unchanged.
    pub const DEAGGREGATION_PASS_THROUGHS: &str = "DeaggregationPassThroughs";
    /// Trimmed gaps found: records that expired before they were read, by what the policy did.
    pub const TRIMMED_DATA: &str = "TrimmedData";
    /// 1 while a shard's processing is stopped until an operator acts, else 0.
    pub const SHARD_STOPPED: &str = "ShardStopped";
    /// User records (or aggregates) dropped by the hash-range check.
    pub const HASH_RANGE_DROPS: &str = "HashRangeDrops";
    /// Throttled reads.
    pub const THROTTLES: &str = "Throttles";
    /// Expired shard iterators.
    pub const EXPIRED_ITERATOR: &str = "ExpiredIterator";
    /// Leases this worker holds.
    pub const CURRENT_LEASES: &str = "CurrentLeases";
    /// Leases taken (free or expired).
    pub const TAKEN_LEASES: &str = "TakenLeases";
    /// Leases lost (another worker took them, or renewal failed).
    pub const LOST_LEASES: &str = "LostLeases";
    /// Leases stolen from busier workers to balance.
    pub const STOLEN_LEASES: &str = "StolenLeases";
    /// Leases handed off gracefully to a thief.
    pub const HANDED_OFF_LEASES: &str = "HandedOffLeases";
    /// Times this worker stepped down from leading the fleet (its listings kept failing).
    pub const LEADER_STEP_DOWNS: &str = "LeaderStepDowns";
    /// Workers owning leases, as this worker last saw the table.
    pub const NUM_WORKERS: &str = "NumWorkers";
    /// This worker's processing load: busy processor time per second over its capacity.
    pub const LOAD_FACTOR: &str = "LoadFactor";
    /// The fleet-sizing signal: workers the stream needs now (see [`super::workers_needed`]).
    pub const WORKERS_NEEDED: &str = "WorkersNeeded";
    /// Lease-store call latency.
    pub const LEASE_STORE_TIME: &str = "LeaseStore.Time";
    /// Failed lease-store calls.
    pub const LEASE_STORE_ERRORS: &str = "LeaseStore.Errors";
}

/// Label keys (CloudWatch dimensions).
pub mod labels {
    /// The KCL's `Operation` dimension.
    pub const OPERATION: &str = "Operation";
    /// The shard.
    pub const SHARD_ID: &str = "ShardId";
    /// The worker.
    pub const WORKER: &str = "WorkerIdentifier";
    /// The stream identifier (multi-stream mode only, as in the KCL).
    pub const STREAM: &str = "StreamId";
    /// What the failure policy did.
    pub const OUTCOME: &str = "Outcome";
}

/// Gives the installed recorder units and help texts for every kcl-rs metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(RECORDS_PROCESSED, Unit::Count, "User records processed");
    describe_counter!(DATA_BYTES_PROCESSED, Unit::Bytes, "Record bytes processed");
    describe_gauge!(
        MILLIS_BEHIND_LATEST,
        Unit::Milliseconds,
        "How far behind the shard's tip the last batch was read"
    );
    describe_histogram!(
        PROCESS_TIME,
        Unit::Milliseconds,
        "Time spent in process_records"
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "User records per batch");
    describe_counter!(
        PROCESSOR_ERRORS,
        Unit::Count,
        "Failed process_records calls by policy outcome"
    );
    describe_counter!(
        RECORDS_SKIPPED,
        Unit::Count,
        "Records skipped by the failure policy"
    );
    describe_counter!(
        RECORDS_DEAD_LETTERED,
        Unit::Count,
        "Records stored by the dead-letter handler"
    );
    describe_counter!(
        DEAGGREGATION_PASS_THROUGHS,
        Unit::Count,
        "Invalid aggregates delivered unchanged"
    );
    describe_counter!(
        HASH_RANGE_DROPS,
        Unit::Count,
        "Records dropped by the hash-range check"
    );
    describe_counter!(
        TRIMMED_DATA,
        Unit::Count,
        "Gaps of records trimmed before they were read, by policy outcome"
    );
    describe_gauge!(
        SHARD_STOPPED,
        Unit::Count,
        "1 while the shard is stopped until an operator acts"
    );
    describe_counter!(THROTTLES, Unit::Count, "Throttled reads");
    describe_counter!(EXPIRED_ITERATOR, Unit::Count, "Expired shard iterators");
    describe_gauge!(CURRENT_LEASES, Unit::Count, "Leases held");
    describe_counter!(TAKEN_LEASES, Unit::Count, "Leases taken");
    describe_counter!(LOST_LEASES, Unit::Count, "Leases lost");
    describe_counter!(STOLEN_LEASES, Unit::Count, "Leases stolen to balance");
    describe_counter!(HANDED_OFF_LEASES, Unit::Count, "Leases handed off");
    describe_counter!(
        LEADER_STEP_DOWNS,
        Unit::Count,
        "Times the fleet's leader stepped down after failed listings"
    );
    describe_gauge!(NUM_WORKERS, Unit::Count, "Workers owning leases");
    describe_gauge!(LOAD_FACTOR, Unit::Percent, "Processing load of this worker");
    describe_gauge!(WORKERS_NEEDED, Unit::Count, "Workers the stream needs now");
    describe_histogram!(
        LEASE_STORE_TIME,
        Unit::Milliseconds,
        "Lease-store call latency"
    );
    describe_counter!(LEASE_STORE_ERRORS, Unit::Count, "Failed lease-store calls");
}

/// A record outcome of key-parallel processing (`RecordsSkipped`, `RecordsDeadLettered`).
pub(crate) fn parallel_outcome(name: &'static str, shard: &str) {
    counter!(name, labels::OPERATION => "KeyParallel", labels::SHARD_ID => shard.to_string())
        .increment(1);
}

/// The metric handles of one shard consumer, registered once.
#[derive(Debug, Clone)]
pub(crate) struct ShardMetrics {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) behind: Gauge,
    pub(crate) process_time: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) pass_throughs: Counter,
    pub(crate) range_drops: Counter,
    pub(crate) skipped: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) stopped: Gauge,
    labels: Vec<(&'static str, String)>,
}

impl ShardMetrics {
    pub(crate) fn new(shard: &str, worker: &str, stream: Option<&str>) -> Self {
        let mut labels = vec![
            (labels::OPERATION, "ProcessTask".to_string()),
            (labels::SHARD_ID, shard.to_string()),
            (labels::WORKER, worker.to_string()),
        ];
        if let Some(s) = stream {
            labels.push((labels::STREAM, s.to_string()));
        }
        let l = &labels;
        Self {
            records: counter!(names::RECORDS_PROCESSED, l),
            bytes: counter!(names::DATA_BYTES_PROCESSED, l),
            behind: gauge!(names::MILLIS_BEHIND_LATEST, l),
            process_time: histogram!(level: Level::DEBUG, names::PROCESS_TIME, l),
            batch_size: histogram!(level: Level::DEBUG, names::BATCH_SIZE, l),
            pass_throughs: counter!(names::DEAGGREGATION_PASS_THROUGHS, l),
            range_drops: counter!(names::HASH_RANGE_DROPS, l),
            skipped: counter!(names::RECORDS_SKIPPED, l),
            dead_lettered: counter!(names::RECORDS_DEAD_LETTERED, l),
            stopped: gauge!(names::SHARD_STOPPED, l),
            labels,
        }
    }

    /// A failed batch, by what the failure policy did with it.
    pub(crate) fn processor_error(&self, outcome: &'static str) {
        let mut labels = self.labels.clone();
        labels.push((labels::OUTCOME, outcome.to_string()));
        counter!(names::PROCESSOR_ERRORS, &labels).increment(1);
    }

    /// A trimmed gap, by what the policy did about it.
    pub(crate) fn trimmed(&self, outcome: &'static str) {
        let mut labels = self.labels.clone();
        labels.push((labels::OUTCOME, outcome.to_string()));
        counter!(names::TRIMMED_DATA, &labels).increment(1);
    }
}

/// Counts a read-side event of one shard ([`names::THROTTLES`] or
/// [`names::EXPIRED_ITERATOR`]); retrievals outside kcl-core (fan-out) call it too.
pub fn read_error(name: &'static str, operation: &'static str, shard: &str, stream: &str) {
    counter!(
        name,
        labels::OPERATION => operation,
        labels::SHARD_ID => shard.to_string(),
        labels::STREAM => stream.to_string()
    )
    .increment(1);
}

/// The lease metric handles of one worker.
#[derive(Debug, Clone)]
pub(crate) struct LeaseMetrics {
    pub(crate) current: Gauge,
    pub(crate) taken: Counter,
    pub(crate) lost: Counter,
    pub(crate) stolen: Counter,
    pub(crate) handed_off: Counter,
    pub(crate) stepped_down: Counter,
    pub(crate) workers: Gauge,
    worker: String,
}

impl LeaseMetrics {
    pub(crate) fn new(worker: &str) -> Self {
        let l = [
            (labels::OPERATION, "LeaseCoordinator".to_string()),
            (labels::WORKER, worker.to_string()),
        ];
        Self {
            current: gauge!(names::CURRENT_LEASES, &l),
            taken: counter!(names::TAKEN_LEASES, &l),
            lost: counter!(names::LOST_LEASES, &l),
            stolen: counter!(names::STOLEN_LEASES, &l),
            handed_off: counter!(names::HANDED_OFF_LEASES, &l),
            stepped_down: counter!(names::LEADER_STEP_DOWNS, &l),
            workers: gauge!(names::NUM_WORKERS, &l),
            worker: worker.to_string(),
        }
    }

    /// One lease-store call: its latency, and an error if it failed (a failed condition is an
    /// answer, not an error).
    pub(crate) fn store_call(&self, operation: &'static str, millis: f64, error: bool) {
        let l = [
            (labels::OPERATION, operation.to_string()),
            (labels::WORKER, self.worker.clone()),
        ];
        histogram!(level: Level::DEBUG, names::LEASE_STORE_TIME, &l).record(millis);
        if error {
            counter!(names::LEASE_STORE_ERRORS, &l).increment(1);
        }
    }
}

/// What the fleet-sizing signal is computed from: time spent in processors and how far behind
/// each shard is, shared by a worker's shard consumers.
#[derive(Debug, Default)]
pub(crate) struct LoadMeter {
    busy_nanos: std::sync::atomic::AtomicU64,
    behind: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl LoadMeter {
    pub(crate) fn busy(&self, d: std::time::Duration) {
        self.busy_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(crate) fn behind(&self, key: &str, millis: Option<u64>) {
        let mut b = self.behind.lock();
        match (millis, b.get_mut(key)) {
            (Some(m), Some(slot)) => *slot = m,
            // Once per consumer; later batches update in place.
            (Some(m), None) => {
                b.insert(key.to_string(), m);
            }
            (None, _) => {
                b.remove(key);
            }
        }
    }

    /// Busy time so far, and the largest MillisBehindLatest of the shards being consumed.
    pub(crate) fn sample(&self) -> (std::time::Duration, u64) {
        let busy = self.busy_nanos.load(std::sync::atomic::Ordering::Relaxed);
        let behind = self.behind.lock().values().copied().max().unwrap_or(0);
        (std::time::Duration::from_nanos(busy), behind)
    }
}

/// The fleet-sizing formula's settings (see [`workers_needed`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetSizing {
    /// Processor calls one worker runs at full speed at once: its CPUs for CPU-bound
    /// processors (the default), more for processors that mostly wait on I/O.
    pub capacity: f64,
    /// Utilization a worker should run at, leaving headroom for spikes and failover (0.7).
    pub target_utilization: f64,
    /// How soon a backlog should be worked off (5 minutes).
    pub drain_time: std::time::Duration,
    /// How often the signal is computed (10 s).
    pub interval: std::time::Duration,
}

impl Default for FleetSizing {
    fn default() -> Self {
        Self {
            capacity: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            target_utilization: 0.7,
            drain_time: std::time::Duration::from_secs(300),
            interval: std::time::Duration::from_secs(10),
        }
    }
}

/// The fleet-sizing signal from one worker's view:
///
/// `WorkersNeeded = ceil(N × U × (1 + L / D) / T)`, at least 1, where `N` is the number of
/// workers owning leases, `U` = busy processor time / (interval × capacity) is this worker's
/// load factor (leases are balanced, so each worker carries about 1/N of the stream), `L` the
/// largest MillisBehindLatest of its shards (a backlog needs extra throughput to drain within
/// `D` = `drain_time`), and `T` the target utilization. Take the maximum over workers (the
/// CloudWatch `Maximum` statistic, Prometheus `max()`).
pub fn workers_needed(
    sizing: &FleetSizing,
    workers: usize,
    load_factor: f64,
    millis_behind: u64,
) -> u64 {
    let backlog = 1.0 + (millis_behind as f64 / 1000.0) / sizing.drain_time.as_secs_f64().max(1.0);
    let need = workers as f64 * load_factor * backlog / sizing.target_utilization.max(0.01);
    (need.ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sizing_formula() {
        let s = FleetSizing {
            capacity: 2.0,
            ..FleetSizing::default()
        };
        // Four workers at 35 %, caught up: 4 × 0.35 / 0.7 = 2 workers would do.
        assert_eq!(workers_needed(&s, 4, 0.35, 0), 2);
        // Saturated and 10 minutes behind: 2 × 1 × (1 + 600/300) / 0.7 = 8.6 → 9.
        assert_eq!(workers_needed(&s, 2, 1.0, 600_000), 9);
        // Idle: never below one.
        assert_eq!(workers_needed(&s, 3, 0.0, 0), 1);
    }
}

//! CloudWatch exporter for kcl-rs metrics, as the Java KCL publishes them: names and dimensions
//! (`Operation`, `ShardId`, `WorkerIdentifier`, `StreamId`), levels NONE / SUMMARY / DETAILED,
//! statistic sets, at most 20 datums per PutMetricData, flushed every 10 s and on shutdown.
//!
//! Memory is bounded: datums wait in a queue of `queue_capacity`; when CloudWatch is slow or
//! down the oldest are dropped and counted ([`CloudWatchPublisher::dropped`]). Recording never
//! blocks: a metric update is a short lock on its own accumulator.
//!
//! ```no_run
//! # async fn example(sdk: &aws_types::SdkConfig) {
//! use kcl_cloudwatch::{AwsCloudWatch, CloudWatchConfig, CloudWatchPublisher, CloudWatchRecorder, MetricsLevel};
//! use std::sync::Arc;
//!
//! let recorder = CloudWatchRecorder::new(MetricsLevel::Summary);
//! let publisher = CloudWatchPublisher::start(
//!     &recorder,
//!     Arc::new(AwsCloudWatch::new(sdk)),
//!     CloudWatchConfig::new("billing"),
//! )
//! .expect("a valid namespace");
//! metrics::set_global_recorder(recorder).unwrap();
//! kcl_core::telemetry::describe();
//! // ... run the scheduler ...
//! publisher.shutdown().await; // flushes what is left
//! # }
//! ```

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod publisher;
mod recorder;
mod sink;

use std::time::{Duration, SystemTime};

pub use publisher::CloudWatchPublisher;
pub use recorder::{CloudWatchRecorder, KCL_DIMENSIONS};
pub use sink::{AwsCloudWatch, MetricSink, SinkError};

/// How much is published (the KCL's `metricsLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsLevel {
    /// Nothing.
    None,
    /// Worker and per-stream metrics aggregated over shards (no `ShardId` dimension), and no
    /// DEBUG-level metrics.
    Summary,
    /// Everything, per shard. The KCL's default.
    #[default]
    Detailed,
}

impl std::str::FromStr for MetricsLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "NONE" => Ok(Self::None),
            "SUMMARY" => Ok(Self::Summary),
            "DETAILED" => Ok(Self::Detailed),
            other => Err(format!(
                "metrics level {other:?} is not NONE, SUMMARY or DETAILED"
            )),
        }
    }
}

/// A CloudWatch statistic set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticSet {
    /// SampleCount.
    pub count: f64,
    /// Sum.
    pub sum: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// One metric datum to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Metric name.
    pub name: String,
    /// Dimensions, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// Unit, when the metric was described with one.
    pub unit: Option<metrics::Unit>,
    /// The interval's statistics.
    pub stats: StatisticSet,
    /// End of the interval.
    pub timestamp: SystemTime,
}

/// Publisher settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloudWatchConfig {
    /// Namespace (the KCL uses the application name).
    pub namespace: String,
    /// How often accumulated statistics are published (KCL: 10 s).
    pub flush_interval: Duration,
    /// Datums per PutMetricData call (KCL: 20; CloudWatch accepts up to 1,000).
    pub max_datums_per_request: usize,
    /// Datums waiting to be sent at most; beyond it the oldest are dropped.
    pub queue_capacity: usize,
    /// Attempts per PutMetricData call before its datums go back to the queue.
    pub max_attempts: usize,
    /// Longest a shutdown flush may take.
    pub shutdown_timeout: Duration,
    /// Deadline of each PutMetricData call (the SDK sets only a connect timeout); a call past
    /// it counts as a retryable failure.
    pub call_timeout: Duration,
}

impl CloudWatchConfig {
    /// Sets [`namespace`](Self::namespace).
    pub fn with_namespace(mut self, namespace: String) -> Self {
        self.namespace = namespace;
        self
    }

    /// Sets [`flush_interval`](Self::flush_interval).
    pub fn with_flush_interval(mut self, flush_interval: Duration) -> Self {
        self.flush_interval = flush_interval;
        self
    }

    /// Sets [`max_datums_per_request`](Self::max_datums_per_request).
    pub fn with_max_datums_per_request(mut self, max_datums_per_request: usize) -> Self {
        self.max_datums_per_request = max_datums_per_request;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn with_max_attempts(mut self, max_attempts: usize) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    pub fn with_shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }
}

impl CloudWatchConfig {
    /// The KCL's defaults for `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            flush_interval: Duration::from_secs(10),
            max_datums_per_request: 20,
            queue_capacity: 10_000,
            max_attempts: 3,
            shutdown_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        validate_namespace(&self.namespace)?;
        if !(1..=1000).contains(&self.max_datums_per_request) {
            return Err(format!(
                "max_datums_per_request {} must be in 1..=1000",
                self.max_datums_per_request
            ));
        }
        if self.queue_capacity < self.max_datums_per_request {
            return Err("queue_capacity must hold at least one request".into());
        }
        if self.flush_interval.is_zero() || self.max_attempts == 0 || self.call_timeout.is_zero() {
            return Err("flush_interval, max_attempts and call_timeout must be positive".into());
        }
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        if self.flush_interval > YEAR || self.shutdown_timeout > YEAR || self.call_timeout > YEAR {
            return Err(
                "flush_interval, shutdown_timeout and call_timeout must be at most a year".into(),
            );
        }
        Ok(())
    }
}

/// Checks a CloudWatch namespace as PutMetricData does: 1 to 255 characters of
/// `0-9A-Za-z . - _ / # :` and space, at least one not a space, not starting with ':' and not
/// in the reserved `AWS/` namespace.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if namespace.is_empty()
        || namespace.len() > 255
        || namespace.starts_with(':')
        || namespace.starts_with("AWS/")
        || namespace.trim().is_empty()
        || !namespace.chars().all(allowed)
    {
        return Err(format!(
            "CloudWatch namespace {namespace:?} must be 1 to 255 characters of 0-9A-Za-z . - _ / # : and space, not start with ':' or 'AWS/'"
        ));
    }
    Ok(())
}

/// A [`CloudWatchConfig`] that [`CloudWatchPublisher::start`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CloudWatch config: {0}")]
pub struct InvalidConfig(pub String);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod namespace_tests {
    /// Issue 14 §11: `:app` (or > 255 characters) as the namespace panicked the worker.
    #[test]
    fn invalid_namespaces_are_errors_not_panics() {
        for bad in [":app", "", "   ", "AWS/Kinesis", "a\u{e9}", "x\ny"] {
            assert!(super::validate_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(super::validate_namespace(&"a".repeat(256)).is_err());
        for good in ["billing", "my-app_1.prod/kcl#2:x", &"a".repeat(255)] {
            assert!(super::validate_namespace(good).is_ok(), "{good:?}");
        }
    }
}

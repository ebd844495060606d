//! Where datums go: PutMetricData through aws-sdk-cloudwatch.

use async_trait::async_trait;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use crate::Datum;

/// PutMetricData failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PutMetricData failed ({code}): {message}")]
#[non_exhaustive]
pub struct SinkError {
    /// The service's error code, or a transport description.
    pub code: String,
    /// What it said.
    pub message: String,
    /// Whether trying again may succeed (throttling, 5xx, timeouts).
    pub retryable: bool,
}

impl SinkError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Receives batches of datums (at most `max_datums_per_request` each).
///
/// # Contract
///
/// One call is one request: `Ok` means the datums were accepted; an error says with
/// [`SinkError::is_retryable`] whether the publisher should send the same batch again (it
/// retries up to `max_attempts`, then keeps the datums for the next flush with a warning —
/// metrics never block processing). A call may hang: the publisher bounds each one by
/// `call_timeout` and counts a timeout as retryable. Tested against moto (through the test
/// tooling's CBOR proxy) and against a socket that accepts and never answers.
#[async_trait]
pub trait MetricSink: Send + Sync + std::fmt::Debug + 'static {
    /// One PutMetricData call.
    async fn put(&self, namespace: &str, datums: &[Datum]) -> Result<(), SinkError>;
}

/// PutMetricData over aws-sdk-cloudwatch.
#[derive(Debug, Clone)]
pub struct AwsCloudWatch {
    client: aws_sdk_cloudwatch::Client,
}

impl AwsCloudWatch {
    /// A sink using `config`'s region, credentials and endpoint.
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self {
            client: aws_sdk_cloudwatch::Client::new(config),
        }
    }
}

fn unit(u: Option<metrics::Unit>) -> StandardUnit {
    use metrics::Unit as U;
    match u {
        Some(U::Count) => StandardUnit::Count,
        Some(U::Bytes) => StandardUnit::Bytes,
        Some(U::Milliseconds) => StandardUnit::Milliseconds,
        Some(U::Seconds) => StandardUnit::Seconds,
        Some(U::Microseconds) => StandardUnit::Microseconds,
        Some(U::Percent) => StandardUnit::Percent,
        Some(U::CountPerSecond) => StandardUnit::CountSecond,
        Some(U::Kibibytes) => StandardUnit::Kilobytes,
        Some(U::Mebibytes) => StandardUnit::Megabytes,
        Some(U::Gibibytes) => StandardUnit::Gigabytes,
        _ => StandardUnit::None,
    }
}

fn datum(d: &Datum) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(
            d.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .unit(unit(d.unit))
        .timestamp(DateTime::from(d.timestamp))
        .statistic_values(
            StatisticSet::builder()
                .sample_count(d.stats.count)
                .sum(d.stats.sum)
                .minimum(d.stats.min)
                .maximum(d.stats.max)
                .build(),
        )
        .build()
}

#[async_trait]
impl MetricSink for AwsCloudWatch {
    async fn put(&self, namespace: &str, datums: &[Datum]) -> Result<(), SinkError> {
        self.client
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(datums.iter().map(datum).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.code().unwrap_or("").to_string();
                let retryable = status.is_none_or(|s| s >= 500 || s == 429)
                    || code.contains("Throttl")
                    || code == "ServiceUnavailable";
                SinkError {
                    code: if code.is_empty() {
                        status.map_or_else(|| "transport".into(), |s| format!("HTTP {s}"))
                    } else {
                        code
                    },
                    message: e.message().map_or_else(|| format!("{e:?}"), str::to_string),
                    retryable,
                }
            })
    }
}

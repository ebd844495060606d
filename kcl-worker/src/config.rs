//! Worker configuration: an optional TOML file (`KCL_WORKER_CONFIG_FILE`), overridden by
//! `KCL_WORKER_*` environment variables, validated with messages that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use kcl_cloudwatch::MetricsLevel;
use serde::Deserialize;

/// Every setting; environment variable = `KCL_WORKER_` + the upper-cased name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerConfig {
    /// Application name: lease table (unless `lease_table`) and metrics namespace.
    pub(crate) application: String,
    /// Stream names or ARNs, comma-separated in the environment; more than one runs in
    /// multi-stream mode.
    #[serde(deserialize_with = "comma_list")]
    pub(crate) streams: Vec<String>,
    /// `kinesis` (default) or `dynamodb_streams`: then each of `streams` is a DynamoDB stream
    /// ARN or a table name whose current stream is read. A DynamoDB stream ARN alone selects
    /// `dynamodb_streams`.
    #[serde(default)]
    pub(crate) source: Option<String>,
    /// DynamoDB Streams endpoint URL (default: `dynamodb_endpoint` when set, else the region's).
    #[serde(default)]
    pub(crate) dynamodb_streams_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) lease_table: Option<String>,
    #[serde(default)]
    pub(crate) worker_id: Option<String>,
    /// `latest`, `trim_horizon` or `at_timestamp` (with `initial_timestamp`).
    #[serde(default = "default_position")]
    pub(crate) initial_position: String,
    /// For `at_timestamp`: seconds since the epoch (fractions allowed).
    #[serde(default)]
    pub(crate) initial_timestamp: Option<f64>,
    /// What to do with unpacked KPL user records outside the shard's hash range:
    /// `deliver_and_warn` (default), `drop_outside`, `drop_aggregate` (the KCL's) or `off`.
    #[serde(default = "default_hash_range_policy")]
    pub(crate) hash_range_policy: String,
    /// Records trimmed (past retention) before they were read: `stop` (default: the shard
    /// stops, keeps its lease and `/readyz` names it until an operator moves the checkpoint)
    /// or `continue` (counted in `TrimmedData`, processing goes on at the oldest record).
    #[serde(default = "default_trimmed_data")]
    pub(crate) trimmed_data: String,
    #[serde(default)]
    pub(crate) kinesis_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) dynamodb_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) cloudwatch_endpoint: Option<String>,
    /// `NONE`, `SUMMARY` or `DETAILED` (CloudWatch); Prometheus always gets everything.
    #[serde(default = "default_level")]
    pub(crate) metrics_level: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, or `off` (MultiLang mode's
    /// default, as the Java daemon serves nothing).
    #[serde(default = "default_http")]
    pub(crate) http_addr: String,
    /// Graceful drain deadline after SIGTERM/SIGINT, in seconds.
    #[serde(default = "default_deadline")]
    pub(crate) shutdown_deadline_secs: u64,
    #[serde(default = "default_failover")]
    pub(crate) failover_secs: u64,
    #[serde(default = "default_sync")]
    pub(crate) shard_sync_secs: u64,
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub(crate) log_format: String,
    /// Appends every processed record to this file (the chaos run's ledger).
    #[serde(default)]
    pub(crate) ledger_file: Option<PathBuf>,
    /// `polling` (GetRecords, default) or `fanout` (enhanced fan-out: a stream consumer named
    /// after the application per stream, registered at start-up if missing).
    #[serde(default = "default_retrieval")]
    pub(crate) retrieval: String,
    /// AWS region (default: the SDK's chain: `AWS_REGION`, the profile).
    #[serde(default)]
    pub(crate) region: Option<String>,
    /// Polling: GetRecords `maxRecords` (1..=10,000; default 10,000, 1,000 on DynamoDB Streams).
    #[serde(default)]
    pub(crate) max_records: Option<u32>,
    /// Polling: wait after a call that finds the shard caught up, in ms (≥ 200; default 1,500,
    /// 1,000 on DynamoDB Streams).
    #[serde(default)]
    pub(crate) idle_time_between_reads_ms: Option<u64>,
    /// Most leases this worker holds (default: no limit; the KCL's `maxLeasesForWorker`).
    #[serde(default)]
    pub(crate) max_leases_for_worker: Option<usize>,
    /// Most leases stolen in one listing (the KCL's `maxLeasesToStealAtOneTime`).
    #[serde(default)]
    pub(crate) max_leases_to_steal_at_one_time: Option<usize>,
    /// How long a thief waits for the victim of a graceful steal, in ms (≥ the failover time;
    /// default the failover time; the KCL 3.x's `gracefulLeaseHandoffTimeoutMillis`).
    #[serde(default)]
    pub(crate) graceful_handoff_timeout_ms: Option<u64>,
    /// Whether steals wait for the victim's last checkpoint (default true; the KCL 3.x's
    /// `isGracefulLeaseHandoffEnabled`).
    #[serde(default)]
    pub(crate) steal_gracefully: Option<bool>,
}

/// The lease coordinator's settings beyond the failover time, when any is set.
fn coordinator_config(
    raw: &WorkerConfig,
) -> Result<Option<kcl_core::lease::CoordinatorConfig>, ConfigError> {
    if raw.max_leases_for_worker.is_none()
        && raw.max_leases_to_steal_at_one_time.is_none()
        && raw.graceful_handoff_timeout_ms.is_none()
        && raw.steal_gracefully.is_none()
    {
        return Ok(None);
    }
    // The scheduler replaces the worker id with its own.
    let mut c =
        kcl_core::lease::CoordinatorConfig::new(raw.worker_id.as_deref().unwrap_or("worker"))
            .with_failover_time(Duration::from_secs(raw.failover_secs));
    if let Some(n) = raw.max_leases_for_worker {
        c = c.with_max_leases_for_worker(n);
    }
    if let Some(n) = raw.max_leases_to_steal_at_one_time {
        c = c.with_max_leases_to_steal_at_one_time(n);
    }
    if let Some(ms) = raw.graceful_handoff_timeout_ms {
        c = c.with_graceful_handoff_timeout(Duration::from_millis(ms));
    }
    if let Some(g) = raw.steal_gracefully {
        c = c.with_steal_gracefully(g);
    }
    c.validate().map_err(|e| ConfigError::Invalid {
        field: "max_leases_for_worker / max_leases_to_steal_at_one_time / graceful_handoff_timeout_ms",
        reason: e.to_string(),
    })?;
    Ok(Some(c))
}

fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

fn default_hash_range_policy() -> String {
    "deliver_and_warn".into()
}
fn default_trimmed_data() -> String {
    "stop".into()
}
fn default_position() -> String {
    "latest".into()
}
fn default_level() -> String {
    "DETAILED".into()
}
fn default_http() -> String {
    "0.0.0.0:8080".into()
}
fn default_deadline() -> u64 {
    30
}
fn default_failover() -> u64 {
    10
}
fn default_sync() -> u64 {
    60
}
fn default_log_format() -> String {
    "json".into()
}
fn default_retrieval() -> String {
    "polling".into()
}

/// A worker's validated settings (from the file and `KCL_WORKER_*`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) raw: WorkerConfig,
    /// `raw.streams`, parsed (same order): Kinesis streams, or DynamoDB stream ARNs.
    pub(crate) streams: Vec<kcl_core::model::StreamIdentity>,
    /// DynamoDB Streams: tables whose current stream is read (resolved at start-up), in
    /// addition to `streams`.
    pub(crate) tables: Vec<String>,
    /// Read DynamoDB Streams instead of Kinesis.
    pub(crate) dynamodb_streams: bool,
    pub(crate) initial_position: kcl_core::model::InitialPosition,
    pub(crate) metrics_level: MetricsLevel,
    /// `None`: serve nothing.
    pub(crate) http_addr: Option<SocketAddr>,
    /// Lease coordinator settings beyond the failover time, when any is set.
    pub(crate) coordinator: Option<kcl_core::lease::CoordinatorConfig>,
    pub(crate) shutdown_deadline: Duration,
    pub(crate) failover: Duration,
    pub(crate) shard_sync: Duration,
    pub(crate) json_logs: bool,
    pub(crate) fan_out: bool,
    pub(crate) hash_range_policy: Option<kcl_core::aggregation::HashRangePolicy>,
    pub(crate) trimmed_data: kcl_core::retrieval::TrimmedDataPolicy,
    pub(crate) polling: kcl_core::retrieval::PollingConfig,
}

/// A bad configuration, with the setting it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or environment could not be read or parsed.
    #[error("configuration: {0}")]
    Load(String),
    /// A setting has a value that cannot work.
    #[error("configuration: {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

pub(crate) fn load() -> Result<Settings, ConfigError> {
    load_over(None)
}

/// [`load`], over `base` settings (TOML, e.g. from a MultiLang properties file): the file named
/// by `KCL_WORKER_CONFIG_FILE` and the environment override them.
pub(crate) fn load_over(base: Option<&str>) -> Result<Settings, ConfigError> {
    let mut figment = Figment::new();
    if let Some(base) = base {
        figment = figment.merge(Toml::string(base));
    }
    if let Ok(path) = std::env::var("KCL_WORKER_CONFIG_FILE") {
        let p = std::path::Path::new(&path);
        if !p.exists() {
            return Err(ConfigError::Load(format!(
                "KCL_WORKER_CONFIG_FILE {path} does not exist"
            )));
        }
        if !p.is_file() {
            return Err(ConfigError::Load(format!(
                "KCL_WORKER_CONFIG_FILE {path} is not a file"
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // KCL_WORKER_LOG is the log filter, read before the settings.
    let figment = figment.merge(Env::prefixed("KCL_WORKER_").ignore(&["CONFIG_FILE", "LOG"]));
    let raw: WorkerConfig = figment.extract().map_err(|e| {
        ConfigError::Load(
            e.into_iter()
                .map(|e| match &e.kind {
                    // Say where to set it: figment names only the field.
                    figment::error::Kind::MissingField(field) => format!(
                        "missing setting '{field}': set KCL_WORKER_{} or '{field}' in the file named by KCL_WORKER_CONFIG_FILE",
                        field.to_ascii_uppercase()
                    ),
                    _ => e.to_string().replace("`", "'"),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    validate(raw)
}

pub(crate) fn validate(raw: WorkerConfig) -> Result<Settings, ConfigError> {
    let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
    if raw.application.trim().is_empty() {
        return Err(invalid("application", "must not be empty".into()));
    }
    if raw.streams.is_empty() {
        return Err(invalid(
            "streams",
            "name at least one stream (KCL_WORKER_STREAMS=a,b)".into(),
        ));
    }
    let is_dynamodb_arn = |s: &str| s.trim().starts_with("arn:") && s.contains(":dynamodb:");
    let dynamodb_streams = match raw
        .source
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => raw.streams.iter().any(|s| is_dynamodb_arn(s)),
        Some("kinesis") => false,
        Some("dynamodb_streams") => true,
        Some(other) => {
            return Err(invalid(
                "source",
                format!("{other:?} is not kinesis or dynamodb_streams"),
            ));
        }
    };
    let (mut streams, mut tables) = (Vec::new(), Vec::new());
    for name in raw.streams.iter().map(|s| s.trim()) {
        if !dynamodb_streams {
            streams.push(
                kcl_core::model::StreamIdentity::parse(name)
                    .map_err(|e| invalid("streams", e.to_string()))?,
            );
        } else if name.starts_with("arn:") {
            streams.push(
                kcl_dynamodb_streams::stream(name)
                    .map_err(|e| invalid("streams", e.to_string()))?,
            );
        } else if (3..=255).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            tables.push(name.to_string());
        } else {
            return Err(invalid(
                "streams",
                format!(
                    "{name:?} is neither a DynamoDB stream ARN nor a table name (3 to 255 of a-z A-Z 0-9 _ . -)"
                ),
            ));
        }
    }
    let initial_position = match raw.initial_position.to_ascii_lowercase().as_str() {
        "latest" => kcl_core::model::InitialPosition::Latest,
        "trim_horizon" => kcl_core::model::InitialPosition::TrimHorizon,
        "at_timestamp" => {
            let t = raw.initial_timestamp.ok_or_else(|| {
                invalid(
                    "initial_timestamp",
                    "at_timestamp needs KCL_WORKER_INITIAL_TIMESTAMP (seconds since the epoch)"
                        .into(),
                )
            })?;
            if !(t.is_finite() && (0.0..=4_102_444_800.0).contains(&t)) {
                return Err(invalid(
                    "initial_timestamp",
                    format!("{t} is not a time between 1970 and 2100 in seconds since the epoch"),
                ));
            }
            kcl_core::model::InitialPosition::AtTimestamp(
                std::time::UNIX_EPOCH + Duration::from_secs_f64(t),
            )
        }
        other => {
            return Err(invalid(
                "initial_position",
                format!("{other:?} is not latest, trim_horizon or at_timestamp"),
            ));
        }
    };
    if raw.initial_timestamp.is_some()
        && !matches!(
            initial_position,
            kcl_core::model::InitialPosition::AtTimestamp(_)
        )
    {
        return Err(invalid(
            "initial_timestamp",
            "is set but initial_position is not at_timestamp".into(),
        ));
    }
    use kcl_core::aggregation::HashRangePolicy as H;
    let hash_range_policy = match raw.hash_range_policy.to_ascii_lowercase().as_str() {
        "deliver_and_warn" => Some(H::DeliverAndWarn),
        "drop_outside" => Some(H::DropOutside),
        "drop_aggregate" => Some(H::DropAggregate),
        "off" => None,
        other => {
            return Err(invalid(
                "hash_range_policy",
                format!("{other:?} is not deliver_and_warn, drop_outside, drop_aggregate or off"),
            ));
        }
    };
    use kcl_core::retrieval::TrimmedDataPolicy as T;
    let trimmed_data = match raw.trimmed_data.to_ascii_lowercase().as_str() {
        "stop" => T::Stop,
        "continue" => T::ContinueAtTrimHorizon,
        other => {
            return Err(invalid(
                "trimmed_data",
                format!("{other:?} is not stop or continue"),
            ));
        }
    };
    for (field, endpoint) in [
        ("kinesis_endpoint", &raw.kinesis_endpoint),
        ("dynamodb_endpoint", &raw.dynamodb_endpoint),
        ("dynamodb_streams_endpoint", &raw.dynamodb_streams_endpoint),
        ("cloudwatch_endpoint", &raw.cloudwatch_endpoint),
    ] {
        if let Some(e) = endpoint {
            check_endpoint(e).map_err(|reason| invalid(field, reason))?;
        }
    }
    // DynamoDB table names: 3 to 255 of [a-zA-Z0-9_.-].
    let (table_field, table) = match &raw.lease_table {
        Some(t) => ("lease_table", t),
        None => ("application", &raw.application),
    };
    if !(3..=255).contains(&table.len())
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(invalid(
            table_field,
            format!(
                "{table:?} is not a DynamoDB table name (3 to 255 of a-z A-Z 0-9 _ . -); it names the lease table"
            ),
        ));
    }
    let metrics_level: MetricsLevel = raw
        .metrics_level
        .parse()
        .map_err(|e| invalid("metrics_level", e))?;
    if metrics_level != MetricsLevel::None {
        // The application name is the CloudWatch namespace.
        kcl_cloudwatch::validate_namespace(&raw.application).map_err(|e| {
            invalid(
                "application",
                format!("{e} (it is the metrics namespace; or set metrics_level NONE)"),
            )
        })?;
    }
    let http_addr = match raw.http_addr.trim() {
        off if off.is_empty() || off.eq_ignore_ascii_case("off") => None,
        addr => Some(addr.parse().map_err(|e| {
            invalid(
                "http_addr",
                format!(
                    "{:?}: {e} (an address such as 0.0.0.0:8080, or off)",
                    raw.http_addr
                ),
            )
        })?),
    };
    for (field, v) in [
        ("shutdown_deadline_secs", raw.shutdown_deadline_secs),
        ("failover_secs", raw.failover_secs),
        ("shard_sync_secs", raw.shard_sync_secs),
    ] {
        if v == 0 {
            return Err(invalid(field, "must be at least 1".into()));
        }
        if Duration::from_secs(v) > kcl_core::limits::MAX_SETTING_DURATION {
            return Err(invalid(
                field,
                format!(
                    "{v} is more than a year ({} s)",
                    kcl_core::limits::MAX_SETTING_DURATION.as_secs()
                ),
            ));
        }
    }
    if raw.failover_secs < 3 {
        return Err(invalid(
            "failover_secs",
            "must be at least 3 (renewals run every failover/3)".into(),
        ));
    }
    let json_logs = match raw.log_format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(invalid(
                "log_format",
                format!("{other:?} is not json or text"),
            ));
        }
    };
    let fan_out = match raw.retrieval.to_ascii_lowercase().as_str() {
        "polling" => false,
        "fanout" | "fan-out" | "efo" => true,
        other => {
            return Err(invalid(
                "retrieval",
                format!("{other:?} is not polling or fanout"),
            ));
        }
    };
    if dynamodb_streams && fan_out {
        return Err(invalid(
            "retrieval",
            "DynamoDB Streams has no enhanced fan-out: use polling".into(),
        ));
    }
    if dynamodb_streams
        && matches!(
            initial_position,
            kcl_core::model::InitialPosition::AtTimestamp(_)
        )
    {
        return Err(invalid(
            "initial_position",
            "DynamoDB Streams has no AT_TIMESTAMP: use latest or trim_horizon".into(),
        ));
    }
    let polling = {
        let mut p = if dynamodb_streams {
            kcl_core::retrieval::PollingConfig::dynamodb_streams()
        } else {
            kcl_core::retrieval::PollingConfig::default()
        };
        if let Some(n) = raw.max_records {
            p.max_records = n;
        }
        if let Some(ms) = raw.idle_time_between_reads_ms {
            p.idle_time_between_reads = Duration::from_millis(ms);
        }
        p.validate()
            .map_err(|e| invalid("max_records / idle_time_between_reads_ms", e))?;
        p
    };
    Ok(Settings {
        polling,
        streams,
        tables,
        dynamodb_streams,
        hash_range_policy,
        trimmed_data,
        fan_out,
        initial_position,
        metrics_level,
        http_addr,
        coordinator: coordinator_config(&raw)?,
        shutdown_deadline: Duration::from_secs(raw.shutdown_deadline_secs),
        failover: Duration::from_secs(raw.failover_secs),
        shard_sync: Duration::from_secs(raw.shard_sync_secs),
        json_logs,
        raw,
    })
}

/// An endpoint must be an absolute http(s) URL with a host: anything else would be reported as
/// unreachable after retries instead of as the configuration error it is.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: axum::http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{endpoint:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?} has no host"));
    }
    Ok(())
}

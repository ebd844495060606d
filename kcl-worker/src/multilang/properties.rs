//! The Java MultiLangDaemon's properties file: `key = value` lines (`:` also separates, `#` and
//! `!` start comments, a trailing `\` continues a line). The keys the libraries' samples use
//! become worker settings (`KCL_WORKER_*` variables still override them); keys that change
//! nothing here are named in one warning; keys whose meaning kcl-rs cannot honour are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{ChildCommand, MultiLangConfig};
use crate::config::ConfigError;

/// Parses the properties format.
pub(crate) fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':']).unwrap_or(entry.len());
        let key = entry[..split].trim().to_string();
        let value = entry.get(split + 1..).unwrap_or("").trim().to_string();
        if !key.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

/// How kcl-rs treats a property the Java MultiLangDaemon (KCL 2.x or 3.x) reads. Values it
/// cannot honour are refused by `load` with the property's name and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// Becomes a worker setting.
    Setting,
    /// Accepted with no counterpart to set, for the reason given (named in one warning).
    NoEffect(&'static str),
}

use Meaning::{NoEffect, Setting};

const TABLE_OPTION: Meaning = NoEffect(
    "kcl-worker creates a missing table on-demand; set table options with `kclctl table create|upgrade`",
);
const THREADS: Meaning = NoEffect("one task per shard, no thread pools");
const NO_OWN_TABLES: Meaning =
    NoEffect("kcl-rs keeps no coordinator-state or worker-metrics table");
const WORKER_METRICS: Meaning =
    NoEffect("balancing weighs each lease's throughput (throughputKBps) by kcl-rs's own rule");
const ADAPTIVE_READS: Meaning =
    NoEffect("the read cadence adapts by itself (caught-up shards wait, throttles back off)");

/// Every property of the Java daemon's configuration (`MultiLangDaemonConfiguration` and the
/// beans it delegates to, KCL 2.x and 3.x), and kcl-rs's own (`cloudWatchEndpoint`).
pub(crate) const PROPERTIES: &[(&str, Meaning)] = &[
    ("executableName", Setting),
    ("applicationName", Setting),
    ("streamName", Setting),
    ("streamArn", Setting),
    ("tableName", Setting),
    ("workerId", Setting),
    ("initialPositionInStream", Setting),
    ("regionName", Setting),
    ("kinesisEndpoint", Setting),
    ("dynamoDBEndpoint", Setting),
    ("cloudWatchEndpoint", Setting),
    ("failoverTimeMillis", Setting),
    ("shardSyncIntervalMillis", Setting),
    ("maxRecords", Setting),
    ("idleTimeBetweenReadsInMillis", Setting),
    ("timeoutInSeconds", Setting),
    ("shutdownGraceMillis", Setting),
    ("metricsLevel", Setting),
    ("retrievalMode", Setting),
    ("maxLeasesForWorker", Setting),
    ("maxLeasesToStealAtOneTime", Setting),
    ("gracefulLeaseHandoffTimeoutMillis", Setting),
    ("isGracefulLeaseHandoffEnabled", Setting),
    ("AwsCredentialsProvider", Setting),
    ("AWSCredentialsProvider", Setting),
    ("AwsCredentialsProviderDynamoDB", Setting),
    ("AwsCredentialsProviderCloudWatch", Setting),
    ("callProcessRecordsEvenForEmptyRecordList", Setting),
    (
        "processingLanguage",
        NoEffect("informational; the child is executableName as given"),
    ),
    (
        "parentShardPollIntervalMillis",
        NoEffect("a child shard starts within 0.5 s of its parents ending"),
    ),
    (
        "cleanupLeasesUponShardCompletion",
        NoEffect("always on: a finished lease is deleted once its children started"),
    ),
    (
        "ignoreUnexpectedChildShards",
        NoEffect("child shards are always leased"),
    ),
    (
        "taskBackoffTimeMillis",
        NoEffect("a failed batch is retried with backoff from 200 ms to 30 s"),
    ),
    (
        "metricsBufferTimeMillis",
        NoEffect("CloudWatch metrics are published every 10 s"),
    ),
    (
        "metricsMaxQueueSize",
        NoEffect("the CloudWatch queue is bounded; the oldest datums are dropped and counted"),
    ),
    (
        "metricsEnabledDimensions",
        NoEffect("dimensions follow metricsLevel"),
    ),
    (
        "validateSequenceNumberBeforeCheckpointing",
        NoEffect("checkpoints are always checked against the records delivered"),
    ),
    (
        "logWarningForTaskAfterMillis",
        NoEffect("a child that does not answer within timeoutInSeconds is replaced"),
    ),
    ("maxActiveThreads", THREADS),
    ("maxLeaseRenewalThreads", THREADS),
    ("maxGetRecordsThreadPool", THREADS),
    ("retryGetRecordsInSeconds", ADAPTIVE_READS),
    ("millisBehindLatestThresholdForReducedTps", ADAPTIVE_READS),
    (
        "listShardsBackoffTimeInMillis",
        NoEffect("ListShards retries back off by kcl-rs's retry policy"),
    ),
    (
        "maxListShardsRetryAttempts",
        NoEffect("ListShards retries back off by kcl-rs's retry policy"),
    ),
    (
        "shardPrioritization",
        NoEffect("every held shard is read at once"),
    ),
    (
        "skipShardSyncAtWorkerInitializationIfLeasesExist",
        NoEffect("only the fleet's leader syncs shards"),
    ),
    (
        "schedulerInitializationBackoffTimeMillis",
        NoEffect("start-up checks retry with backoff, then exit with a code"),
    ),
    (
        "leaseAssignmentIntervalMillis",
        NoEffect("the leader lists at every lease expiry"),
    ),
    (
        "enablePriorityLeaseAssignment",
        NoEffect("expired leases are taken first"),
    ),
    (
        "leaseTableScanTotalSegments",
        NoEffect("listings are paged Scans, one segment"),
    ),
    (
        "clientVersionConfig",
        NoEffect("kcl-rs reads KCL 2.x and 3.x tables as they are"),
    ),
    (
        "migrateAllEntitiesToLeaseTable",
        NoEffect("kcl-rs reads KCL 2.x and 3.x tables as they are"),
    ),
    (
        "tableMigrationCompleteBakeTimeSeconds",
        NoEffect("kcl-rs reads KCL 2.x and 3.x tables as they are"),
    ),
    ("billingMode", TABLE_OPTION),
    ("initialLeaseTableReadCapacity", TABLE_OPTION),
    ("initialLeaseTableWriteCapacity", TABLE_OPTION),
    ("leaseTableDeletionProtectionEnabled", TABLE_OPTION),
    ("leaseTablePitrEnabled", TABLE_OPTION),
    (
        "inMemoryWorkerMetricsCaptureFrequencyMillis",
        WORKER_METRICS,
    ),
    ("workerMetricsReporterFreqInMillis", WORKER_METRICS),
    ("noOfPersistedMetricsPerWorkerMetrics", WORKER_METRICS),
    ("disableWorkerMetrics", WORKER_METRICS),
    ("maxThroughputPerHostKBps", WORKER_METRICS),
    ("dampeningPercentage", WORKER_METRICS),
    ("reBalanceThresholdPercentage", WORKER_METRICS),
    ("allowThroughputOvershoot", WORKER_METRICS),
    ("varianceBalancingFrequency", WORKER_METRICS),
    ("workerMetricsTableName", NO_OWN_TABLES),
    ("workerMetricsBillingMode", NO_OWN_TABLES),
    ("workerMetricsReadCapacity", NO_OWN_TABLES),
    ("workerMetricsWriteCapacity", NO_OWN_TABLES),
    ("workerMetricsPointInTimeRecoveryEnabled", NO_OWN_TABLES),
    ("workerMetricsDeletionProtectionEnabled", NO_OWN_TABLES),
    ("workerMetricsTags", NO_OWN_TABLES),
    ("coordinatorStateTableName", NO_OWN_TABLES),
    ("coordinatorStateBillingMode", NO_OWN_TABLES),
    ("coordinatorStateReadCapacity", NO_OWN_TABLES),
    ("coordinatorStateWriteCapacity", NO_OWN_TABLES),
    ("coordinatorStatePointInTimeRecoveryEnabled", NO_OWN_TABLES),
    ("coordinatorStateDeletionProtectionEnabled", NO_OWN_TABLES),
    ("coordinatorStateTags", NO_OWN_TABLES),
];

/// Nested properties of the daemon's SDK client and fan-out beans, by prefix.
const PREFIXES: &[(&str, Meaning)] = &[
    (
        "kinesisClient.",
        NoEffect(
            "SDK clients are configured by kinesisEndpoint, dynamoDBEndpoint, regionName and the environment",
        ),
    ),
    (
        "dynamoDbClient.",
        NoEffect(
            "SDK clients are configured by kinesisEndpoint, dynamoDBEndpoint, regionName and the environment",
        ),
    ),
    (
        "cloudWatchClient.",
        NoEffect(
            "SDK clients are configured by kinesisEndpoint, dynamoDBEndpoint, regionName and the environment",
        ),
    ),
    (
        "fanoutConfig.",
        NoEffect(
            "with retrievalMode = FANOUT the stream consumer is named after the application and registered if missing",
        ),
    ),
];

/// What kcl-rs does with `key`; `None`: not a property of the Java daemon.
pub(crate) fn meaning_of(key: &str) -> Option<Meaning> {
    PROPERTIES
        .iter()
        .chain(PREFIXES)
        .find(|(k, _)| *k == key || (k.ends_with('.') && key.starts_with(k)))
        .map(|(_, m)| *m)
}

/// Properties that, set, make the Java daemon's default retrieval mode polling.
const POLLING_PROPERTIES: &[&str] = &[
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "retryGetRecordsInSeconds",
    "maxGetRecordsThreadPool",
    "millisBehindLatestThresholdForReducedTps",
];

/// What a properties file configures: the worker settings as TOML (merged under the
/// environment), how to run children, and the keys that were ignored.
#[derive(Debug)]
pub(crate) struct FromProperties {
    pub(crate) toml: String,
    pub(crate) multilang: MultiLangConfig,
    /// Properties accepted with no effect, each with why (one warning).
    pub(crate) ignored: Vec<String>,
    /// Decisions worth a line in the log (the retrieval mode and what chose it).
    pub(crate) notes: Vec<String>,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn millis(key: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.parse::<u64>()
        .map_err(|_| refuse(key, format!("{v:?} is not a whole number of milliseconds")))
}

pub(crate) fn load(path: &Path) -> Result<FromProperties, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Load(format!("cannot read {}: {e}", path.display())))?;
    let props = parse(&text);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let get = |k: &str| props.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut toml = Vec::new();
    let quoted = |v: &str| serde_json::to_string(v).expect("a string serializes");

    let executable = get("executableName").ok_or_else(|| {
        refuse(
            "executableName",
            "the properties file must name the child's executable",
        )
    })?;
    let mut words = executable.split_whitespace().map(str::to_string);
    let program = words.next().expect("not empty");
    // A relative program path is the daemon's: relative to the properties file.
    let relative = program.contains('/') && !Path::new(&program).is_absolute();
    let program = if relative || dir.join(&program).is_file() {
        dir.join(&program).to_string_lossy().into_owned()
    } else {
        program
    };
    let command = ChildCommand {
        program,
        args: words.collect(),
        dir: dir.clone(),
    };

    let application = get("applicationName").ok_or_else(|| {
        refuse(
            "applicationName",
            "the properties file must set applicationName",
        )
    })?;
    toml.push(format!("application = {}", quoted(application)));
    let is_dynamodb = |v: &str| v.starts_with("arn:") && v.contains(":dynamodb:");
    let stream = match (get("streamName"), get("streamArn")) {
        // The Java DynamoDB Streams adapter's applications name the table's stream by its ARN.
        (_, Some(arn)) if is_dynamodb(arn) => arn.to_string(),
        (Some(name), _) if is_dynamodb(name) => name.to_string(),
        (Some(name), Some(arn)) => {
            let arn_name = arn.rsplit('/').next().unwrap_or_default();
            if arn_name != name {
                return Err(refuse(
                    "streamArn",
                    format!("names stream {arn_name:?}, but streamName is {name:?}"),
                ));
            }
            // The name, resolved against the configured endpoint and region (the samples'
            // ARN carries a placeholder account and region).
            name.to_string()
        }
        (Some(name), None) => name.to_string(),
        (None, Some(arn)) => arn.to_string(),
        (None, None) => return Err(refuse("streamName", "set streamName or streamArn")),
    };
    toml.push(format!("streams = {}", quoted(&stream)));
    if let Some(p) = get("initialPositionInStream") {
        match p.to_ascii_uppercase().as_str() {
            "TRIM_HORIZON" | "LATEST" => toml.push(format!("initial_position = {}", quoted(p))),
            _ => {
                return Err(refuse(
                    "initialPositionInStream",
                    format!(
                        "{p:?}: only TRIM_HORIZON and LATEST can be set in a properties file (KCL_WORKER_INITIAL_POSITION=at_timestamp with KCL_WORKER_INITIAL_TIMESTAMP for a timestamp)"
                    ),
                ));
            }
        }
    }
    if let Some(r) = get("regionName") {
        toml.push(format!("region = {}", quoted(r)));
    }
    if let Some(v) = get("failoverTimeMillis") {
        let ms = millis("failoverTimeMillis", v)?;
        toml.push(format!("failover_secs = {}", ms.div_ceil(1000).max(1)));
    }
    if let Some(v) = get("shardSyncIntervalMillis") {
        let ms = millis("shardSyncIntervalMillis", v)?;
        toml.push(format!("shard_sync_secs = {}", ms.div_ceil(1000).max(1)));
    }
    if let Some(v) = get("maxRecords") {
        let n: u32 = v
            .parse()
            .map_err(|_| refuse("maxRecords", format!("{v:?} is not a number")))?;
        toml.push(format!("max_records = {n}"));
    }
    if let Some(v) = get("idleTimeBetweenReadsInMillis") {
        toml.push(format!(
            "idle_time_between_reads_ms = {}",
            millis("idleTimeBetweenReadsInMillis", v)?
        ));
    }
    if let Some(v) = get("workerId") {
        toml.push(format!("worker_id = {}", quoted(v)));
    }
    if let Some(v) = get("tableName") {
        toml.push(format!("lease_table = {}", quoted(v)));
    }
    // The Java daemon serves nothing over HTTP: two daemons on one host must not collide on a
    // port. KCL_WORKER_HTTP_ADDR turns health and metrics on.
    toml.push("http_addr = \"off\"".to_string());
    if let Some(v) = get("metricsLevel") {
        match v.to_ascii_uppercase().as_str() {
            level @ ("NONE" | "SUMMARY" | "DETAILED") => {
                toml.push(format!("metrics_level = {}", quoted(level)));
            }
            _ => {
                return Err(refuse(
                    "metricsLevel",
                    format!("{v:?} is not NONE, SUMMARY or DETAILED"),
                ));
            }
        }
    }
    let mut notes = Vec::new();
    let polling_set: Vec<&str> = POLLING_PROPERTIES
        .iter()
        .copied()
        .filter(|k| get(k).is_some())
        .collect();
    let dynamodb_streams = is_dynamodb(&stream);
    let retrieval = match get("retrievalMode").map(str::to_ascii_uppercase).as_deref() {
        // DynamoDB Streams is read by polling only (the adapter ignores retrievalMode too).
        _ if dynamodb_streams => {
            notes.push(
                "retrievalMode: polling (DynamoDB Streams has no enhanced fan-out)".to_string(),
            );
            "polling"
        }
        Some("FANOUT") => "fanout",
        Some("POLLING") => "polling",
        // The Java daemon's DEFAULT: fan-out, unless a polling property is set.
        None | Some("DEFAULT") if polling_set.is_empty() => {
            notes.push("retrievalMode: enhanced fan-out (the Java daemon's default when no polling property is set; retrievalMode = POLLING polls)".to_string());
            "fanout"
        }
        None | Some("DEFAULT") => {
            notes.push(format!(
                "retrievalMode: polling (the Java daemon's default when a polling property is set: {})",
                polling_set.join(", ")
            ));
            "polling"
        }
        Some(_) => {
            return Err(refuse(
                "retrievalMode",
                format!(
                    "{:?} is not FANOUT, POLLING or DEFAULT",
                    get("retrievalMode").unwrap_or_default()
                ),
            ));
        }
    };
    toml.push(format!("retrieval = {}", quoted(retrieval)));
    if let Some(v) = get("shutdownGraceMillis") {
        let ms = millis("shutdownGraceMillis", v)?;
        if ms > 0 {
            toml.push(format!("shutdown_deadline_secs = {}", ms.div_ceil(1000)));
        }
    }
    for (key, field) in [
        ("maxLeasesForWorker", "max_leases_for_worker"),
        (
            "maxLeasesToStealAtOneTime",
            "max_leases_to_steal_at_one_time",
        ),
    ] {
        if let Some(v) = get(key) {
            let n: i64 = v
                .parse()
                .map_err(|_| refuse(key, format!("{v:?} is not a number")))?;
            // The Java KCL's "no limit" is Integer.MAX_VALUE; any value that large means it.
            if n <= 0 {
                return Err(refuse(key, format!("{v:?} must be at least 1")));
            }
            if n < i64::from(i32::MAX) {
                toml.push(format!("{field} = {n}"));
            }
        }
    }
    if let Some(v) = get("gracefulLeaseHandoffTimeoutMillis") {
        toml.push(format!(
            "graceful_handoff_timeout_ms = {}",
            millis("gracefulLeaseHandoffTimeoutMillis", v)?
        ));
    }
    if let Some(v) = get("isGracefulLeaseHandoffEnabled") {
        let g: bool = v.to_ascii_lowercase().parse().map_err(|_| {
            refuse(
                "isGracefulLeaseHandoffEnabled",
                format!("{v:?} is not true or false"),
            )
        })?;
        toml.push(format!("steal_gracefully = {g}"));
    }
    for (key, field) in [
        ("kinesisEndpoint", "kinesis_endpoint"),
        ("dynamoDBEndpoint", "dynamodb_endpoint"),
        ("cloudWatchEndpoint", "cloudwatch_endpoint"),
    ] {
        if let Some(v) = get(key) {
            toml.push(format!("{field} = {}", quoted(v)));
        }
    }
    let timeout = match get("timeoutInSeconds") {
        Some(v) => {
            Duration::from_secs(v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                refuse(
                    "timeoutInSeconds",
                    format!("{v:?} is not a positive number"),
                )
            })?)
        }
        None => Duration::from_secs(300),
    };
    // Keys whose meaning cannot be honoured.
    // `AwsCredentialsProvider` (KCL 3.x samples) or `AWSCredentialsProvider` (KCL 2.x).
    for key in [
        "AwsCredentialsProvider",
        "AWSCredentialsProvider",
        "AwsCredentialsProviderDynamoDB",
        "AwsCredentialsProviderCloudWatch",
    ] {
        if let Some(p) = get(key)
            && p != "DefaultCredentialsProvider"
            && p != "DefaultAWSCredentialsProviderChain"
        {
            return Err(refuse(
                key,
                format!(
                    "{p:?}: kcl-rs uses the default credentials chain (environment, profile, web identity, container, instance)"
                ),
            ));
        }
    }
    if get("callProcessRecordsEvenForEmptyRecordList") == Some("true") {
        return Err(refuse(
            "callProcessRecordsEvenForEmptyRecordList",
            "true is not supported in MultiLang mode (children get only non-empty batches)",
        ));
    }
    let ignored = props
        .keys()
        .filter_map(|k| match meaning_of(k) {
            Some(Setting) => None,
            Some(NoEffect(why)) => Some(format!("{k}: {why}")),
            None => Some(format!("{k}: not a property of the KCL MultiLangDaemon")),
        })
        .collect();
    Ok(FromProperties {
        toml: toml.join("\n"),
        multilang: MultiLangConfig { command, timeout },
        ignored,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_properties_format_with_comments_separators_and_continuations() {
        let p = parse(
            "# comment\n! also\nexecutableName = python3 app.py\nstreamName: orders\n  regionName=us-east-1\nlong = a \\\n  b\n\nempty =\n",
        );
        assert_eq!(p["executableName"], "python3 app.py");
        assert_eq!(p["streamName"], "orders");
        assert_eq!(p["regionName"], "us-east-1");
        assert_eq!(p["long"], "a b");
        assert_eq!(p["empty"], "");
    }

    #[test]
    fn a_dynamodb_stream_arn_reads_dynamodb_streams_by_polling() {
        let dir = std::env::temp_dir().join(format!("kcl-props-ddb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("adapter.properties");
        let arn =
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000";
        std::fs::write(
            &file,
            format!("executableName = app.py\nstreamArn = {arn}\nstreamName = orders\napplicationName = OrdersApp\ninitialPositionInStream = TRIM_HORIZON\n"),
        )
        .unwrap();
        let got = load(&file).unwrap();
        assert!(
            got.toml.contains(&format!("streams = \"{arn}\"")),
            "{}",
            got.toml
        );
        assert!(got.toml.contains("retrieval = \"polling\""), "{}", got.toml);
        use figment::providers::Format;
        let raw: crate::config::WorkerConfig = figment::Figment::new()
            .merge(figment::providers::Toml::string(&got.toml))
            .extract()
            .unwrap();
        let settings = crate::config::validate(raw).unwrap();
        assert!(settings.dynamodb_streams);
        assert_eq!(settings.streams[0].arn.as_deref(), Some(arn));
    }

    #[test]
    fn the_kclpy_sample_maps_to_worker_settings() {
        let dir = std::env::temp_dir().join(format!("kcl-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sample.properties");
        std::fs::write(
            &file,
            "executableName = sample_kclpy_app.py\nstreamArn = arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample\nstreamName = kclpysample\napplicationName = PythonKCLSample\nAwsCredentialsProvider = DefaultCredentialsProvider\nprocessingLanguage = python/3.8\ninitialPositionInStream = TRIM_HORIZON\nregionName = us-east-1\nfailoverTimeMillis = 2500\nkinesisEndpoint = http://127.0.0.1:4567\nfrobnicate = yes\n",
        )
        .unwrap();
        let got = load(&file).unwrap();
        assert!(
            got.toml.contains("application = \"PythonKCLSample\""),
            "{}",
            got.toml
        );
        assert!(got.toml.contains("streams = \"kclpysample\""));
        assert!(got.toml.contains("failover_secs = 3"));
        assert!(
            got.toml
                .contains("kinesis_endpoint = \"http://127.0.0.1:4567\"")
        );
        assert_eq!(got.multilang.command.program, "sample_kclpy_app.py");
        assert_eq!(
            got.ignored,
            [
                "frobnicate: not a property of the KCL MultiLangDaemon",
                "processingLanguage: informational; the child is executableName as given",
            ]
        );
        // No polling property in the sample: the Java daemon reads by enhanced fan-out.
        assert!(got.toml.contains("retrieval = \"fanout\""), "{}", got.toml);
        assert!(got.toml.contains("http_addr = \"off\""), "{}", got.toml);

        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAwsCredentialsProvider = ProfileCredentialsProvider\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("AwsCredentialsProvider"), "{err}");
        // KCL 2.x's spelling, with the SDK v1 name of the default chain, is accepted.
        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAWSCredentialsProvider = DefaultAWSCredentialsProviderChain\n").unwrap();
        assert!(load(&file).unwrap().ignored.is_empty());
        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAwsCredentialsProviderDynamoDB = ProfileCredentialsProvider\n").unwrap();
        assert!(
            load(&file)
                .unwrap_err()
                .to_string()
                .contains("AwsCredentialsProviderDynamoDB")
        );
        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAWSCredentialsProvider = STSAssumeRoleSessionCredentialsProvider\n").unwrap();
        assert!(load(&file).is_err());
        std::fs::write(&file, "applicationName = a\nstreamName = s\n").unwrap();
        assert!(
            load(&file)
                .unwrap_err()
                .to_string()
                .contains("executableName")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Loads `extra` over a minimal file; the worker settings it makes must validate.
    fn load_with(extra: &str) -> Result<FromProperties, ConfigError> {
        // One directory per call: tests run in parallel, and a name shared by two calls let
        // one remove the other's file (seen in a test run).
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kcl-props-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.properties");
        std::fs::write(
            &file,
            format!("executableName = x\napplicationName = app\nstreamName = s\n{extra}\n"),
        )
        .unwrap();
        let got = load(&file);
        let _ = std::fs::remove_dir_all(dir);
        let got = got?;
        crate::config::load_over(Some(&got.toml))?;
        Ok(got)
    }

    /// One case per property that becomes a setting: what it writes. Every `Setting` of
    /// [`PROPERTIES`] must have a case, so a property added later cannot go untested.
    #[test]
    fn every_property_that_is_a_setting_sets_what_it_names() {
        let cases: &[(&str, &str, &str)] = &[
            ("executableName", "x", ""),
            ("applicationName", "app", "application = \"app\""),
            ("streamName", "s", "streams = \"s\""),
            (
                "streamArn",
                "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                "streams = \"s\"",
            ),
            ("tableName", "leases", "lease_table = \"leases\""),
            ("workerId", "w1", "worker_id = \"w1\""),
            (
                "initialPositionInStream",
                "LATEST",
                "initial_position = \"LATEST\"",
            ),
            ("regionName", "eu-west-1", "region = \"eu-west-1\""),
            (
                "kinesisEndpoint",
                "http://127.0.0.1:1",
                "kinesis_endpoint = \"http://127.0.0.1:1\"",
            ),
            (
                "dynamoDBEndpoint",
                "http://127.0.0.1:2",
                "dynamodb_endpoint = \"http://127.0.0.1:2\"",
            ),
            (
                "cloudWatchEndpoint",
                "http://127.0.0.1:3",
                "cloudwatch_endpoint = \"http://127.0.0.1:3\"",
            ),
            ("failoverTimeMillis", "20000", "failover_secs = 20"),
            ("shardSyncIntervalMillis", "30000", "shard_sync_secs = 30"),
            ("maxRecords", "500", "max_records = 500"),
            (
                "idleTimeBetweenReadsInMillis",
                "700",
                "idle_time_between_reads_ms = 700",
            ),
            ("timeoutInSeconds", "7", ""),
            (
                "shutdownGraceMillis",
                "12000",
                "shutdown_deadline_secs = 12",
            ),
            ("metricsLevel", "none", "metrics_level = \"NONE\""),
            ("retrievalMode", "POLLING", "retrieval = \"polling\""),
            ("maxLeasesForWorker", "4", "max_leases_for_worker = 4"),
            (
                "maxLeasesToStealAtOneTime",
                "2",
                "max_leases_to_steal_at_one_time = 2",
            ),
            (
                "gracefulLeaseHandoffTimeoutMillis",
                "30000",
                "graceful_handoff_timeout_ms = 30000",
            ),
            (
                "isGracefulLeaseHandoffEnabled",
                "false",
                "steal_gracefully = false",
            ),
            ("AwsCredentialsProvider", "DefaultCredentialsProvider", ""),
            (
                "AWSCredentialsProvider",
                "DefaultAWSCredentialsProviderChain",
                "",
            ),
            (
                "AwsCredentialsProviderDynamoDB",
                "DefaultCredentialsProvider",
                "",
            ),
            (
                "AwsCredentialsProviderCloudWatch",
                "DefaultCredentialsProvider",
                "",
            ),
            ("callProcessRecordsEvenForEmptyRecordList", "false", ""),
        ];
        for (key, meaning) in PROPERTIES {
            if *meaning == Setting {
                assert!(
                    cases.iter().any(|(k, _, _)| k == key),
                    "no case for the setting {key}"
                );
            }
        }
        for (key, value, writes) in cases {
            let got = load_with(&format!("{key} = {value}"))
                .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
            assert!(got.toml.contains(writes), "{key} = {value}: {}", got.toml);
            assert!(got.ignored.is_empty(), "{key}: {:?}", got.ignored);
        }
        assert_eq!(
            load_with("timeoutInSeconds = 7").unwrap().multilang.timeout,
            Duration::from_secs(7)
        );
        // Integer.MAX_VALUE is the Java KCL's "no limit".
        let got = load_with("maxLeasesForWorker = 2147483647").unwrap();
        assert!(!got.toml.contains("max_leases_for_worker"), "{}", got.toml);
    }

    #[test]
    fn every_other_property_is_named_with_why_it_changes_nothing() {
        for (key, meaning) in PROPERTIES {
            let NoEffect(why) = meaning else { continue };
            let got = load_with(&format!("{key} = 1")).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(got.ignored, [format!("{key}: {why}")]);
        }
        for key in [
            "kinesisClient.endpointOverride",
            "dynamoDbClient.region",
            "cloudWatchClient.region",
            "fanoutConfig.consumerName",
        ] {
            let got = load_with(&format!("{key} = x")).unwrap();
            assert_eq!(got.ignored.len(), 1, "{key}");
            assert!(!got.ignored[0].contains("not a property"), "{key}");
        }
    }

    #[test]
    fn values_that_cannot_be_honoured_are_refused_by_name() {
        for (extra, names) in [
            ("metricsLevel = VERBOSE", "metricsLevel"),
            ("retrievalMode = PUSH", "retrievalMode"),
            ("maxLeasesForWorker = 0", "maxLeasesForWorker"),
            (
                "maxLeasesToStealAtOneTime = many",
                "maxLeasesToStealAtOneTime",
            ),
            (
                "isGracefulLeaseHandoffEnabled = maybe",
                "isGracefulLeaseHandoffEnabled",
            ),
            ("shutdownGraceMillis = soon", "shutdownGraceMillis"),
            (
                "initialPositionInStream = AT_TIMESTAMP",
                "initialPositionInStream",
            ),
            (
                "callProcessRecordsEvenForEmptyRecordList = true",
                "callProcessRecordsEvenForEmptyRecordList",
            ),
            (
                "AwsCredentialsProviderCloudWatch = X",
                "AwsCredentialsProviderCloudWatch",
            ),
        ] {
            let err = load_with(extra)
                .err()
                .unwrap_or_else(|| panic!("{extra} accepted"));
            assert!(err.to_string().contains(names), "{extra}: {err}");
        }
        // A hand-off timeout below the failover time is refused by the worker's settings.
        let err = load_with("gracefulLeaseHandoffTimeoutMillis = 1000")
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("graceful_handoff_timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn the_java_default_retrieval_is_fan_out_unless_a_polling_property_is_set() {
        assert!(
            load_with("")
                .unwrap()
                .toml
                .contains("retrieval = \"fanout\"")
        );
        assert!(
            load_with("retrievalMode = default")
                .unwrap()
                .toml
                .contains("retrieval = \"fanout\"")
        );
        let got = load_with("idleTimeBetweenReadsInMillis = 500").unwrap();
        assert!(got.toml.contains("retrieval = \"polling\""), "{}", got.toml);
        assert!(
            got.notes[0].contains("idleTimeBetweenReadsInMillis"),
            "{:?}",
            got.notes
        );
        assert!(
            load_with("retrievalMode = FANOUT\nmaxRecords = 100")
                .unwrap()
                .toml
                .contains("retrieval = \"fanout\"")
        );
    }
}

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

/// Keys read by the Java daemon that change nothing in kcl-rs (its behaviour is the same or
/// better by default): named in one warning.
const UNUSED: &[&str] = &[
    "processingLanguage",
    "parentShardPollIntervalMillis",
    "cleanupLeasesUponShardCompletion",
    "taskBackoffTimeMillis",
    "metricsBufferTimeMillis",
    "metricsMaxQueueSize",
    "validateSequenceNumberBeforeCheckpointing",
    "maxActiveThreads",
    "clientVersionConfig",
    "maxLeasesForWorker",
    "maxLeasesToStealAtOneTime",
    "gracefulLeaseHandoffTimeoutMillis",
    "isGracefulLeaseHandoffEnabled",
];

/// What a properties file configures: the worker settings as TOML (merged under the
/// environment), how to run children, and the keys that were ignored.
#[derive(Debug)]
pub(crate) struct FromProperties {
    pub(crate) toml: String,
    pub(crate) multilang: MultiLangConfig,
    pub(crate) ignored: Vec<String>,
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
    let stream = match (get("streamName"), get("streamArn")) {
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
    if let Some(p) = get("AwsCredentialsProvider").or(get("AWSCredentialsProvider"))
        && p != "DefaultCredentialsProvider"
        && p != "DefaultAWSCredentialsProviderChain"
    {
        return Err(refuse(
            "AwsCredentialsProvider",
            format!(
                "{p:?}: kcl-rs uses the default credentials chain (environment, profile, web identity, container, instance)"
            ),
        ));
    }
    if get("callProcessRecordsEvenForEmptyRecordList") == Some("true") {
        return Err(refuse(
            "callProcessRecordsEvenForEmptyRecordList",
            "true is not supported in MultiLang mode (children get only non-empty batches)",
        ));
    }
    let known = [
        "executableName",
        "applicationName",
        "streamName",
        "streamArn",
        "initialPositionInStream",
        "regionName",
        "failoverTimeMillis",
        "shardSyncIntervalMillis",
        "maxRecords",
        "idleTimeBetweenReadsInMillis",
        "workerId",
        "kinesisEndpoint",
        "dynamoDBEndpoint",
        "cloudWatchEndpoint",
        "timeoutInSeconds",
        "AwsCredentialsProvider",
        "AWSCredentialsProvider",
        "callProcessRecordsEvenForEmptyRecordList",
    ];
    let ignored = props
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            if UNUSED.contains(&k.as_str()) {
                k.clone()
            } else {
                format!("{k} (unknown)")
            }
        })
        .collect();
    Ok(FromProperties {
        toml: toml.join("\n"),
        multilang: MultiLangConfig { command, timeout },
        ignored,
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
        assert_eq!(got.ignored, ["frobnicate (unknown)", "processingLanguage"]);

        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAwsCredentialsProvider = ProfileCredentialsProvider\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("AwsCredentialsProvider"), "{err}");
        // KCL 2.x's spelling, with the SDK v1 name of the default chain, is accepted.
        std::fs::write(&file, "executableName = x\napplicationName = a\nstreamName = s\nAWSCredentialsProvider = DefaultAWSCredentialsProviderChain\n").unwrap();
        assert!(load(&file).unwrap().ignored.is_empty());
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
}

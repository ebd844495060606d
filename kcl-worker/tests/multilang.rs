//! MultiLang mode with the real client library: the unmodified `sample_kclpy_app.py` of PyPI
//! `amazon-kclpy` 3.2.0 and its `sample.properties` (endpoints, a unique stream and application,
//! a short failover time added at the end) run under `kcl-worker --properties-file` on
//! kinesis-local + moto. Plain records and KPL aggregates, a shard split: every record reaches
//! the child, the parent's lease ends at SHARD_END (the child's `shardEnded` checkpoint), and on
//! SIGTERM each child's `shutdownRequested` checkpoint lands at its shard's last record.
//! Plus children that misbehave: one that crashes mid-batch, one that prints garbage, one that
//! never answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use kcl_core::aggregation::Aggregator;
use kcl_core::lease::LeaseStore;
use kcl_core::model::ExtendedSequenceNumber;
use kcl_tests::{create_stream, emulator, emulator_config, unique, wait_active};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kclpy sources and the venv `python` (scripts/tools.sh kclpy), or a loud skip locally.
fn kclpy() -> Option<(PathBuf, PathBuf)> {
    let src = repo().join(".tools/kclpy/amazon_kclpy-3.2.0");
    let bin = repo().join(".tools/kclpy-venv/bin");
    if src.join("amazon_kclpy/kcl.py").is_file() && bin.join("python").exists() {
        return Some((src, bin));
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("amazon-kclpy is not installed: run scripts/tools.sh kclpy (./scripts/test does)");
    }
    eprintln!("\n*** SKIPPED: amazon-kclpy is not installed (scripts/tools.sh kclpy) ***\n");
    None
}

struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(properties: &Path, bin: &Path, src: &Path) -> Self {
        Self::start_with(properties, bin, &[("PYTHONPATH", src.to_path_buf())])
    }

    fn start_with(properties: &Path, bin: &Path, env: &[(&str, PathBuf)]) -> Self {
        let quiet = [
            ("KCL_WORKER_METRICS_LEVEL", "NONE"),
            ("KCL_WORKER_HTTP_ADDR", "127.0.0.1:0"),
        ];
        Self::spawn(properties, bin, env, &quiet)
    }

    /// As a user replacing the Java daemon runs it: no `KCL_WORKER_*` variable but the log
    /// format (the properties file says everything).
    fn start_as_the_daemon(properties: &Path, bin: &Path, env: &[(&str, PathBuf)]) -> Self {
        Self::spawn(properties, bin, env, &[])
    }

    fn spawn(
        properties: &Path,
        bin: &Path,
        env: &[(&str, PathBuf)],
        settings: &[(&str, &str)],
    ) -> Self {
        let log = properties.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcl-worker"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KCL_WORKER_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(["--properties-file", properties.to_str().unwrap()])
            .env("PATH", path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .env("KCL_WORKER_LOG_FORMAT", "text")
            .envs(settings.iter().copied())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("kcl-worker starts");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) {
        let by = Instant::now() + Duration::from_secs(90);
        loop {
            let log = self.log();
            if check(&log) {
                return;
            }
            assert!(Instant::now() < by, "never {what}:\n{log}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn sigterm(mut self) -> (i32, String) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let by = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                let _ = std::fs::remove_file(&self.log);
                return (status.code().unwrap_or(-1), log);
            }
            assert!(
                Instant::now() < by,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Worker {
    /// A failed assertion must not leave the worker (and its children) running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with `app` (copied, permissions kept) and a properties file: the kclpy sample's
/// own text followed by `extra` lines (later keys win, as in Java properties).
fn app_dir(app: &Path, base: &str, extra: &[(&str, String)]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("multilang"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(app, dir.join(app.file_name().unwrap())).unwrap();
    let mut text = base.to_string();
    text.push('\n');
    for (k, v) in extra {
        text.push_str(&format!("{k} = {v}\n"));
    }
    std::fs::write(dir.join("app.properties"), text).unwrap();
    dir
}

fn settings(stream: &str, app: &str, kinesis: &str, dynamo: &str) -> Vec<(&'static str, String)> {
    vec![
        ("streamName", stream.to_string()),
        (
            "streamArn",
            format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"),
        ),
        ("applicationName", app.to_string()),
        ("kinesisEndpoint", kinesis.to_string()),
        ("dynamoDBEndpoint", dynamo.to_string()),
        ("failoverTimeMillis", "3000".into()),
        ("idleTimeBetweenReadsInMillis", "250".into()),
    ]
}

/// A child application for the split scenario.
struct ChildApp {
    /// Copied next to the properties file.
    file: PathBuf,
    /// The properties the application ships with (the scenario appends its own).
    base_properties: String,
    /// `executableName`, when the base does not name it.
    executable: Option<String>,
    /// `PATH` prefix and `PYTHONPATH` / `NODE_PATH` for the child.
    path: PathBuf,
    env: Vec<(&'static str, PathBuf)>,
    /// Logged by the child once per record it processed.
    per_record: &'static str,
    /// Logged by the child on `shutdownRequested`.
    on_shutdown: &'static str,
}

/// Plain records and KPL aggregates, a split, more records: every record reaches the child,
/// the parent ends at SHARD_END, SIGTERM exits 0 with each child shard checkpointed at its last
/// record by the child's `shutdownRequested` checkpoint.
async fn split_scenario(kinesis: &str, dynamo: &str, child: &ChildApp) {
    let config = emulator_config(kinesis).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = unique("multilang");
    create_stream(&client, &stream, 1).await;

    // Before the split: 10 plain records and 4 aggregates of 5.
    let mut by_shard: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut put = |shard: String, seq: String, subs: u64| {
        let e = by_shard.entry(shard).or_default();
        for sub in 0..subs {
            e.push((seq.clone(), sub));
        }
    };
    let mut users = 0;
    for i in 0..10 {
        let out = client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("plain-{i}")))
            .send()
            .await
            .unwrap();
        put(out.shard_id().into(), out.sequence_number().into(), 1);
        users += 1;
    }
    for a in 0..4 {
        let mut agg = Aggregator::new();
        for i in 0..5 {
            agg.add(&format!("a{a}-{i}"), None, format!("agg-{a}-{i}").into())
                .unwrap();
        }
        let packed = agg.flush().unwrap();
        let out = client
            .put_record()
            .stream_name(&stream)
            .partition_key(&packed.partition_key)
            .data(Blob::new(packed.data.to_vec()))
            .send()
            .await
            .unwrap();
        put(out.shard_id().into(), out.sequence_number().into(), 5);
        users += 5;
    }
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&client, &stream).await;
    for i in 0..20 {
        let out = client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("child-{i}"))
            .data(Blob::new(format!("after-{i}")))
            .send()
            .await
            .unwrap();
        put(out.shard_id().into(), out.sequence_number().into(), 1);
        users += 1;
    }

    let app = unique("multilang-app");
    let mut extra = settings(&stream, &app, kinesis, dynamo);
    if let Some(e) = &child.executable {
        extra.push(("executableName", e.clone()));
        extra.push(("initialPositionInStream", "TRIM_HORIZON".into()));
    }
    let dir = app_dir(&child.file, &child.base_properties, &extra);
    let worker = Worker::start_with(&dir.join("app.properties"), &child.path, &child.env);
    worker
        .wait_for("every record at the child", |log| {
            log.matches(child.per_record).count() >= users
        })
        .await;
    let store =
        kcl_dynamo_leases::DynamoLeaseStore::from_config(&emulator_config(dynamo).await, &app);
    // The parent ends at SHARD_END through the child's shardEnded checkpoint.
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let parent = store.get("shardId-000000000000").await.unwrap();
        if parent.is_some_and(|l| l.checkpoint == ExtendedSequenceNumber::ShardEnd) {
            break;
        }
        assert!(
            Instant::now() < by,
            "parent never at SHARD_END:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, log) = worker.sigterm().await;
    assert_eq!(code, 0, "drained:\n{log}");
    assert!(
        log.matches(child.on_shutdown).count() >= 2,
        "each child got shutdownRequested:\n{log}"
    );
    // Each child shard's lease: its last record, as the child's shutdownRequested checkpoint.
    for (shard, records) in &by_shard {
        if shard == "shardId-000000000000" {
            continue;
        }
        let (seq, sub) = records
            .iter()
            .max_by_key(|(s, sub)| (kcl_core::model::SequenceNumber::new(s).unwrap(), *sub))
            .unwrap();
        let lease = store.get(shard).await.unwrap().expect("child lease");
        assert_eq!(
            lease.checkpoint,
            ExtendedSequenceNumber::Sequence {
                sequence: kcl_core::model::SequenceNumber::new(seq).unwrap(),
                sub_sequence: *sub,
            },
            "{shard}:\n{log}"
        );
        assert!(lease.owner.is_none(), "released");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unmodified_kclpy_sample_runs_on_kcl_rs() {
    kcl_tests::init_logging();
    let (Some(kinesis), Some(dynamo), Some((src, bin))) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
        kclpy(),
    ) else {
        return;
    };
    let sample = src.join("samples");
    let child = ChildApp {
        file: sample.join("sample_kclpy_app.py"),
        base_properties: std::fs::read_to_string(sample.join("sample.properties")).unwrap(),
        executable: None,
        path: bin,
        env: vec![("PYTHONPATH", src.clone())],
        per_record: "Record (Partition Key:",
        on_shutdown: "Shutdown has been requested, checkpointing.",
    };
    split_scenario(&kinesis, &dynamo, &child).await;
}

/// A processor written against npm `aws-kcl` 2.3.2 the way its README shows.
const NODE_PROCESSOR: &str = r#"
'use strict';
var kcl = require('aws-kcl');

var recordProcessor = {
  initialize: function(initializeInput, completeCallback) {
    completeCallback();
  },
  processRecords: function(processRecordsInput, completeCallback) {
    var records = processRecordsInput.records;
    var sequenceNumber;
    for (var i = 0; i < records.length; ++i) {
      sequenceNumber = records[i].sequenceNumber;
      var data = Buffer.from(records[i].data, 'base64').toString();
      process.stderr.write('node processed ' + data + ' at ' + sequenceNumber + '/' + records[i].subSequenceNumber + '\n');
    }
    if (!sequenceNumber) {
      completeCallback();
      return;
    }
    // As the README does: at the batch's last sequence number (aws-kcl sends no
    // sub-sequence, so inside an aggregate this is its first user record).
    processRecordsInput.checkpointer.checkpoint(sequenceNumber, function(err, checkpointed) {
      completeCallback();
    });
  },
  leaseLost: function(leaseLostInput, completeCallback) {
    completeCallback();
  },
  shardEnded: function(shardEndedInput, completeCallback) {
    shardEndedInput.checkpointer.checkpoint(function(err) {
      completeCallback();
    });
  },
  shutdownRequested: function(shutdownRequestedInput, completeCallback) {
    process.stderr.write('node shutdown requested\n');
    shutdownRequestedInput.checkpointer.checkpoint(function(err) {
      completeCallback();
    });
  }
};

kcl(recordProcessor).run();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_on_npm_aws_kcl_runs_on_kcl_rs() {
    kcl_tests::init_logging();
    let (Some(kinesis), Some(dynamo)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let modules = repo().join(".tools/aws-kcl/node_modules");
    if !modules.join("aws-kcl/index.js").is_file() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("aws-kcl is not installed: run scripts/tools.sh aws-kcl (./scripts/test does)");
        }
        eprintln!("\n*** SKIPPED: aws-kcl is not installed (scripts/tools.sh aws-kcl) ***\n");
        return;
    }
    let file = std::env::temp_dir()
        .join(unique("node-app"))
        .with_extension("js");
    std::fs::write(&file, NODE_PROCESSOR).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let child = ChildApp {
        file: file.clone(),
        base_properties: String::new(),
        executable: Some(format!("node {name}")),
        path: PathBuf::from("/usr/bin"),
        env: vec![("NODE_PATH", modules)],
        per_record: "node processed ",
        on_shutdown: "node shutdown requested",
    };
    split_scenario(&kinesis, &dynamo, &child).await;
    let _ = std::fs::remove_file(file);
}

/// A kclpy child that checkpoints after each record and misbehaves once, at the record "bad":
/// `crash` exits, `garbage` prints a line that is not the protocol and then a JSON object that
/// is not a message, `hang` never answers. A marker file makes its successor behave.
const MISBEHAVING: &str = r#"
import os, sys, time
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

MODE = sys.argv[1]
MARK = os.path.join(os.getcwd(), MODE + ".done")

class P(processor.RecordProcessorBase):
    def initialize(self, initialize_input):
        pass

    def process_records(self, process_records_input):
        for r in process_records_input.records:
            data = r.binary_data.decode()
            if data == "bad" and not os.path.exists(MARK):
                open(MARK, "w").close()
                if MODE == "crash":
                    os._exit(3)
                if MODE == "garbage":
                    print("this line is not the protocol")
                    print('{"action": "dance"}')
                    sys.stdout.flush()
                time.sleep(3600)
            sys.stderr.write("processed %s\n" % data)
            process_records_input.checkpointer.checkpoint(r.sequence_number, r.sub_sequence_number)

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()

if __name__ == "__main__":
    kcl.KCLProcess(P()).run()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_prints_garbage_or_hangs_is_replaced_and_nothing_is_lost() {
    kcl_tests::init_logging();
    let (Some(kinesis), Some(dynamo), Some((src, bin))) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
        kclpy(),
    ) else {
        return;
    };
    let config = emulator_config(&kinesis).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    for (mode, expected) in [
        ("crash", "the child process exited"),
        ("garbage", "the child process broke the protocol"),
        (
            "hang",
            "the child process did not answer processRecords within 2s",
        ),
    ] {
        let stream = unique(&format!("kclpy-{mode}"));
        create_stream(&client, &stream, 1).await;
        let values = ["r0", "r1", "bad", "r3", "r4", "r5"];
        let mut last = String::new();
        for v in values {
            let out = client
                .put_record()
                .stream_name(&stream)
                .partition_key("k")
                .data(Blob::new(v))
                .send()
                .await
                .unwrap();
            last = out.sequence_number().to_string();
        }
        let script = std::env::temp_dir()
            .join(unique("misbehaving"))
            .with_extension("py");
        std::fs::write(&script, MISBEHAVING).unwrap();
        let app = unique(&format!("kclpy-{mode}-app"));
        let mut extra = settings(&stream, &app, &kinesis, &dynamo);
        extra.push(("executableName", format!("python misbehaving.py {mode}")));
        extra.push(("timeoutInSeconds", "2".into()));
        extra.push(("initialPositionInStream", "TRIM_HORIZON".into()));
        let dir = app_dir(&script, "", &extra);
        std::fs::rename(
            dir.join(script.file_name().unwrap()),
            dir.join("misbehaving.py"),
        )
        .unwrap();
        let worker = Worker::start(&dir.join("app.properties"), &bin, &src);
        worker
            .wait_for(&format!("{mode}: every record processed"), |log| {
                values
                    .iter()
                    .all(|v| log.contains(&format!("processed {v}")))
            })
            .await;
        let store =
            kcl_dynamo_leases::DynamoLeaseStore::from_config(&emulator_config(&dynamo).await, &app);
        let by = Instant::now() + Duration::from_secs(30);
        loop {
            let lease = store.get("shardId-000000000000").await.unwrap();
            if lease.is_some_and(|l| {
                l.checkpoint.sequence().map(|s| s.to_string()) == Some(last.clone())
            }) {
                break;
            }
            assert!(
                Instant::now() < by,
                "{mode}: checkpoint never at the last record:\n{}",
                worker.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (code, log) = worker.sigterm().await;
        assert_eq!(code, 0, "{mode}: drained:\n{log}");
        assert!(
            log.contains(expected),
            "{mode}: the typed failure is logged:\n{log}"
        );
        // The failed child checkpointed r0 and r1: its successor resumed at "bad".
        assert_eq!(log.matches("processed r0").count(), 1, "{mode}:\n{log}");
        assert_eq!(log.matches("processed bad").count(), 1, "{mode}:\n{log}");
        if mode == "garbage" {
            assert!(
                log.contains("this line is not the protocol"),
                "{mode}: logged, skipped"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_file(script);
    }
}

/// Two applications, and two workers of one, on one host with the daemon's properties alone:
/// the Java daemon binds no port, so neither may kcl-rs (before, the second exited 64 on
/// `0.0.0.0:8080`). `metricsLevel = NONE` (a daemon property) keeps CloudWatch out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_run_side_by_side_on_one_host() {
    kcl_tests::init_logging();
    let (Some(kinesis), Some(dynamo), Some((src, bin))) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
        kclpy(),
    ) else {
        return;
    };
    let config = emulator_config(&kinesis).await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = unique("multilang-side");
    create_stream(&client, &stream, 2).await;
    let records = 20;
    for i in 0..records {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("side-{i}")))
            .send()
            .await
            .unwrap();
    }
    let sample = src.join("samples");
    let base = std::fs::read_to_string(sample.join("sample.properties")).unwrap();
    let env = [("PYTHONPATH", src.clone())];
    let mut workers = Vec::new();
    for app in [unique("side-a"), unique("side-b")] {
        for worker in ["w1", "w2"] {
            if workers.len() == 3 {
                break; // two workers of the first application, one of the second
            }
            let mut extra = settings(&stream, &app, &kinesis, &dynamo);
            extra.push(("metricsLevel", "NONE".into()));
            extra.push(("workerId", format!("{app}-{worker}")));
            let dir = app_dir(&sample.join("sample_kclpy_app.py"), &base, &extra);
            workers.push((
                app.clone(),
                Worker::start_as_the_daemon(&dir.join("app.properties"), &bin, &env),
            ));
        }
    }
    // Each application processes every record: the first split across its two workers.
    let by = Instant::now() + Duration::from_secs(90);
    loop {
        let mut done = true;
        for app in [&workers[0].0, &workers[2].0] {
            let seen: usize = workers
                .iter()
                .filter(|(a, _)| a == app)
                .map(|(_, w)| w.log().matches("Record (Partition Key:").count())
                .sum();
            done &= seen >= records;
        }
        // And each daemon holds a shard and runs its child: all three work, not just start.
        done &= workers
            .iter()
            .all(|(_, w)| w.log().contains("child process started"));
        if done {
            break;
        }
        for (_, w) in &mut workers {
            if let Some(status) = w.child.try_wait().unwrap() {
                panic!("a daemon exited ({status}) beside the others:\n{}", w.log());
            }
        }
        assert!(
            Instant::now() < by,
            "not every record processed by both applications:\n{}",
            workers
                .iter()
                .map(|(_, w)| w.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (_, w) in workers {
        let (code, log) = w.sigterm().await;
        assert_eq!(code, 0, "drained:\n{log}");
    }
}

/// A kclpy child written for the Java DynamoDB Streams adapter: each record's data is the
/// stream record as JSON; it logs the change and checkpoints after each record.
const CHANGES: &str = r#"
import json, sys
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

class P(processor.RecordProcessorBase):
    def initialize(self, initialize_input):
        pass

    def process_records(self, process_records_input):
        for r in process_records_input.records:
            change = json.loads(r.binary_data)
            image = change["dynamodb"].get("NewImage", {})
            version = image.get("version", {}).get("N", "-")
            sys.stderr.write("change %s %s %s %s\n" % (
                change["eventName"], change["dynamodb"]["Keys"]["id"]["S"], version,
                change["dynamodb"]["SequenceNumber"]))
            process_records_input.checkpointer.checkpoint(r.sequence_number, r.sub_sequence_number)

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()

if __name__ == "__main__":
    kcl.KCLProcess(P()).run()
"#;

/// Issue 28 §6 and acceptance: a kclpy processor written for the Java adapter reads a table's
/// changes unchanged — two daemons, the first SIGTERMed halfway through 1,000 changes (inserts,
/// updates, deletes over 10 items): every change processed once, in order per item, the lease
/// checkpointed at the last change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kclpy_processor_for_the_adapter_reads_a_table_s_changes() {
    kcl_tests::init_logging();
    let (Some(dynamo), Some((src, bin))) = (emulator("KCL_DYNAMODB_ENDPOINT"), kclpy()) else {
        return;
    };
    let client = aws_sdk_dynamodb::Client::new(&emulator_config(&dynamo).await);
    let table = unique("kclpy-ddbs");
    let arn = kcl_tests::create_table(
        &client,
        &table,
        Some(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages),
    )
    .await
    .expect("a stream ARN");
    let script = std::env::temp_dir()
        .join(unique("changes"))
        .with_extension("py");
    std::fs::write(&script, CHANGES).unwrap();
    let app = unique("kclpy-ddbs-app");
    let extra = vec![
        ("executableName", "python changes.py".to_string()),
        ("streamArn", arn.clone()),
        ("applicationName", app.clone()),
        ("dynamoDBEndpoint", dynamo.clone()),
        ("regionName", "us-east-1".into()),
        ("initialPositionInStream", "TRIM_HORIZON".into()),
        ("failoverTimeMillis", "3000".into()),
        ("idleTimeBetweenReadsInMillis", "250".into()),
    ];
    let dir = app_dir(&script, "", &extra);
    std::fs::rename(
        dir.join(script.file_name().unwrap()),
        dir.join("changes.py"),
    )
    .unwrap();
    let properties = dir.join("app.properties");
    let first = Worker::start(&properties, &bin, &src);
    first
        .wait_for("the first daemon holding the lease", |log| {
            log.contains("shard consumer processing")
        })
        .await;
    let mut first = Some(first);
    let second_properties = dir.join("second.properties");
    std::fs::copy(&properties, &second_properties).unwrap();
    let second = Worker::start(&second_properties, &bin, &src);

    // 1,000 changes over 10 items (kcl_tests::write_change: every fifth a delete).
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_log = None;
    for n in 0..1000u64 {
        let id = format!("item-{}", n % 10);
        let version = versions.entry(id.clone()).or_insert(0);
        kcl_tests::write_change(&client, &table, &id, *version).await;
        *version += 1;
        if n == 500 {
            let (code, log) = first.take().expect("stopped once").sigterm().await;
            assert_eq!(code, 0, "the first daemon drained:\n{log}");
            first_log = Some(log);
        }
    }
    second
        .wait_for("every change processed", |log| {
            let both = format!("{}{log}", first_log.as_deref().unwrap_or_default());
            both.matches("change ").count() >= 1000
        })
        .await;
    let (code, second_log) = second.sigterm().await;
    assert_eq!(code, 0, "the second daemon drained:\n{second_log}");
    let first_log = first_log.unwrap();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_sequence = 0u128;
    for log in [&first_log, &second_log] {
        for line in log
            .lines()
            .filter_map(|l| l.split_once("change ").map(|(_, c)| c))
        {
            // The child's line, as the daemon logs it (fields may follow).
            let f: Vec<&str> = line.split(' ').collect();
            let [kind, id, version, sequence, ..] = f[..] else {
                continue;
            };
            let sequence = sequence.trim_end_matches(|c: char| !c.is_ascii_digit());
            seen.entry(id.to_string())
                .or_default()
                .push(format!("{kind}:{version}"));
            last_sequence = last_sequence.max(sequence.parse().expect("a sequence number"));
        }
    }
    assert!(
        first_log.contains("change "),
        "the first daemon processed changes"
    );
    assert!(
        second_log.contains("change "),
        "the second daemon took over"
    );
    for (id, changes) in &seen {
        let expected: Vec<String> = (0..100).map(kcl_tests::expected_change).collect();
        assert_eq!(changes, &expected, "{id}: each change once, in order");
    }
    assert_eq!(seen.len(), 10);
    let store =
        kcl_dynamo_leases::DynamoLeaseStore::from_config(&emulator_config(&dynamo).await, &app);
    let lease = store.list().await.unwrap().leases.pop().unwrap();
    assert_eq!(
        lease.checkpoint.sequence().map(ToString::to_string),
        Some(last_sequence.to_string()),
        "checkpointed at the last change"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(script);
}

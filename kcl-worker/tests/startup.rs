//! The worker binary's start-up and bad input, as an orchestrator sees them: each problem gives
//! one message naming it and a sysexits code; a SIGTERM during start-up exits 0; corrupt lease
//! items are named and skipped while the worker goes on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_core::lease::LeaseStore;
use kcl_tests::{create_stream, emulator, emulator_config, lease_table, unique};

/// The worker binary under test: the built-in one, or a user's worker whose tests include this
/// file (`examples/custom-worker/tests/startup.rs`).
fn worker_bin() -> &'static str {
    option_env!("CARGO_BIN_EXE_kcl-worker")
        .or(option_env!("CARGO_BIN_EXE_kcl-custom-worker"))
        .expect("a worker binary of this package")
}

/// The worker with only the given settings (nothing inherited from a developer's environment).
fn worker(settings: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(worker_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("KCL_WORKER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KCL_WORKER_LOG_FORMAT", "text")
        .env("KCL_WORKER_METRICS_LEVEL", "NONE")
        .env("KCL_WORKER_HTTP_ADDR", "127.0.0.1:0")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in settings {
        cmd.env(format!("KCL_WORKER_{k}"), v);
        // The custom worker's output file (one line per record) plays the ledger's part.
        if *k == "LEDGER_FILE" {
            cmd.env("CUSTOM_WORKER_OUTPUT", v);
        }
    }
    cmd
}

/// Runs to completion (bounded): exit code and everything it printed.
fn finish(mut cmd: Command) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("kcl-worker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().expect("exited, not killed"), text)
}

/// A loopback port nothing listens on (now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An endpoint nothing answers on.
fn closed_port() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Starts the worker with its output going to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    cmd.stderr(Stdio::from(file.try_clone().expect("log handle")))
        .stdout(Stdio::from(file))
        .spawn()
        .expect("kcl-worker starts")
}

/// Waits (up to 60 s) until the log contains `needle`.
async fn wait_for_log(log: &Path, needle: &str) -> String {
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < by, "never logged {needle:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(unique(name))
        .with_extension("log")
}

#[test]
fn a_long_application_name_and_a_directory_as_config_file_are_named() {
    let long = "a".repeat(256);
    let (code, out) = finish(worker(&[("APPLICATION", &long), ("STREAMS", "s")]));
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("application"), "{out}");
    let dir = std::env::temp_dir();
    let (code, out) = finish(worker(&[
        ("APPLICATION", "app"),
        ("STREAMS", "s"),
        ("CONFIG_FILE", dir.to_str().unwrap()),
    ]));
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("not a file"), "{out}");
}

#[test]
fn a_missing_setting_names_its_environment_variable() {
    let (code, out) = finish(worker(&[("STREAMS", "s")]));
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("KCL_WORKER_APPLICATION"), "{out}");
}

#[test]
fn invalid_and_unknown_settings_are_named() {
    // (setting, value, what the message must name)
    for (setting, value, named) in [
        ("FAILOVER_SECS", "1", "failover_secs"),
        ("FAILOVR_SECS", "5", "failovr_secs"),
        ("INITIAL_POSITION", "yesterday", "initial_position"),
        ("RETRIEVAL", "pigeon", "retrieval"),
        // Issue 14 §11: these panicked (exit 101, 70) or were taken for unreachable endpoints.
        ("APPLICATION", ":app", "application"),
        ("FAILOVER_SECS", "9223372036854775807", "failover_secs"),
        (
            "SHUTDOWN_DEADLINE_SECS",
            "18446744073709551615",
            "shutdown_deadline_secs",
        ),
        ("KINESIS_ENDPOINT", "http://", "kinesis_endpoint"),
        ("DYNAMODB_ENDPOINT", "ftp://x", "dynamodb_endpoint"),
        ("INITIAL_POSITION", "at_timestamp", "initial_timestamp"),
        ("HASH_RANGE_POLICY", "maybe", "hash_range_policy"),
        ("TRIMMED_DATA", "skip", "trimmed_data"),
        ("STREAMS", "orders,bad name", "streams"),
        (
            "STREAMS",
            "arn:aws:kinesis:us-east-1:123:stream/orders",
            "account id",
        ),
    ] {
        let (code, out) = finish(worker(&[
            ("APPLICATION", "app"),
            ("STREAMS", "s"),
            (setting, value),
        ]));
        assert_eq!(code, 64, "{setting}: {out}");
        assert!(out.contains(named), "{setting}: {out}");
    }
}

#[test]
fn missing_credentials_exit_77() {
    let mut cmd = worker(&[
        ("APPLICATION", "app"),
        ("STREAMS", "s"),
        ("KINESIS_ENDPOINT", &closed_port()),
    ]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/kcl-worker-test")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/kcl-worker-test",
        );
    let (code, out) = finish(cmd);
    assert_eq!(code, 77, "{out}");
    assert!(out.to_ascii_lowercase().contains("credentials"), "{out}");
}

#[test]
fn an_unreachable_endpoint_at_start_up_exits_69_after_retries() {
    let endpoint = closed_port();
    let (code, out) = finish(worker(&[
        ("APPLICATION", "app"),
        ("STREAMS", "s"),
        ("KINESIS_ENDPOINT", &endpoint),
    ]));
    assert_eq!(code, 69, "{out}");
    assert!(out.contains("Kinesis unreachable"), "{out}");
    assert_eq!(
        out.matches("start-up check failed; retrying").count(),
        4,
        "{out}"
    );
}

#[tokio::test]
async fn sigterm_during_start_up_exits_0() {
    let log = log_path("kcl-worker-term-at-start");
    let endpoint = closed_port();
    let mut child = spawn_logged(
        worker(&[
            ("APPLICATION", "app"),
            ("STREAMS", "s"),
            ("KINESIS_ENDPOINT", &endpoint),
        ]),
        &log,
    );
    // Retrying the first check: well inside start-up.
    wait_for_log(&log, "start-up check failed; retrying").await;
    sigterm(&child);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("stopped during start-up"), "{text}");
    let _ = std::fs::remove_file(log);
}

#[tokio::test]
async fn an_unknown_stream_exits_66() {
    let Some(kinesis) = emulator("KCL_KINESIS_ENDPOINT") else {
        return;
    };
    let (code, out) = finish(worker(&[
        ("APPLICATION", "app"),
        ("STREAMS", &unique("no-such-stream")),
        ("KINESIS_ENDPOINT", &kinesis),
    ]));
    assert_eq!(code, 66, "{out}");
    assert!(out.contains("stream not found"), "{out}");
}

/// A lease table with a corrupt item: the worker names it, skips it, takes the good lease, is
/// ready, and drains on SIGTERM as usual.
#[tokio::test]
async fn a_corrupt_lease_item_is_named_and_skipped() {
    let (Some(kinesis), Some(dynamo)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let client = aws_sdk_kinesis::Client::new(&emulator_config(&kinesis).await);
    let stream = unique("corrupt-leases");
    create_stream(&client, &stream, 1).await;
    let store = lease_table(&dynamo, "corrupt-leases").await;
    let table = store.table().to_string();
    aws_sdk_dynamodb::Client::new(&emulator_config(&dynamo).await)
        .put_item()
        .table_name(&table)
        .item("leaseKey", AttributeValue::S("shardId-999999999999".into()))
        .item("leaseCounter", AttributeValue::S("not a number".into()))
        .item("checkpoint", AttributeValue::S("TRIM_HORIZON".into()))
        .send()
        .await
        .expect("put the corrupt item");

    let log = log_path("kcl-worker-corrupt-lease");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_logged(
        worker(&[
            ("APPLICATION", "app"),
            ("LEASE_TABLE", &table),
            ("STREAMS", &stream),
            ("WORKER_ID", "w"),
            ("INITIAL_POSITION", "trim_horizon"),
            ("KINESIS_ENDPOINT", &kinesis),
            ("DYNAMODB_ENDPOINT", &dynamo),
            ("FAILOVER_SECS", "3"),
            ("HTTP_ADDR", &addr),
        ]),
        &log,
    );
    let text = wait_for_log(&log, "lease gained").await;
    let warning = text
        .lines()
        .find(|l| l.contains("malformed lease"))
        .unwrap_or_else(|| panic!("no malformed-lease warning:\n{text}"));
    assert!(warning.contains("shardId-999999999999"), "{warning}");
    assert!(warning.contains("leaseCounter"), "{warning}");
    let leases = store.list().await.unwrap();
    assert_eq!(leases.malformed.len(), 1);
    let good: Vec<_> = leases.leases.iter().map(|l| l.owner.as_deref()).collect();
    assert_eq!(good, vec![Some("w")], "the good lease is taken");
    sigterm(&child);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        store.list().await.unwrap().leases[0].owner.is_none(),
        "released on drain"
    );
    let _ = std::fs::remove_file(log);
}

/// `KCL_WORKER_RETRIEVAL=fanout` on kinesis-local: the consumer is registered at start-up, every
/// record arrives through SubscribeToShard, and the worker drains on SIGTERM.
#[tokio::test]
async fn the_worker_reads_by_enhanced_fan_out() {
    let (Some(kinesis), Some(dynamo)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let client = aws_sdk_kinesis::Client::new(&emulator_config(&kinesis).await);
    let stream = unique("worker-efo");
    create_stream(&client, &stream, 2).await;
    let app = unique("worker-efo-app");
    let log = log_path("kcl-worker-efo");
    let ledger = log_path("kcl-worker-efo-ledger");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_logged(
        worker(&[
            ("APPLICATION", &app),
            ("STREAMS", &stream),
            ("WORKER_ID", "w"),
            ("INITIAL_POSITION", "trim_horizon"),
            ("RETRIEVAL", "fanout"),
            ("KINESIS_ENDPOINT", &kinesis),
            ("DYNAMODB_ENDPOINT", &dynamo),
            ("FAILOVER_SECS", "3"),
            ("HTTP_ADDR", &addr),
            ("LEDGER_FILE", ledger.to_str().unwrap()),
        ]),
        &log,
    );
    let text = wait_for_log(&log, "enhanced fan-out consumer ready").await;
    assert!(
        text.contains(&app),
        "the consumer is named after the application"
    );
    for v in 0..20 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{}", v % 4))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("v{v}")))
            .send()
            .await
            .unwrap();
    }
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&ledger).unwrap_or_default();
        if lines.lines().count() >= 20 {
            break;
        }
        assert!(
            Instant::now() < by,
            "{} of 20 records by fan-out:\n{}",
            lines.lines().count(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text.matches("fan-out subscription started").count(),
        2,
        "one subscription per shard:\n{log_text}"
    );
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(ledger);
}

/// Issue 28 §6 and acceptance: the worker consumes a DynamoDB table's stream by configuration —
/// the table name (its current stream looked up at start-up) — and records each change as the
/// adapter's JSON; a table without a stream exits 66 naming it. Two worker processes, 1,000
/// changes, a SIGTERM hand-off halfway: every change once, in order per item.
#[tokio::test]
async fn the_worker_reads_a_dynamodb_table_s_stream_by_table_name() {
    let Some(dynamo) = emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    let client = aws_sdk_dynamodb::Client::new(&emulator_config(&dynamo).await);
    let without = unique("worker-ddbs-nostream");
    kcl_tests::create_table(&client, &without, None).await;
    let (code, text) = finish(worker(&[
        ("APPLICATION", &unique("worker-ddbs-app")),
        ("SOURCE", "dynamodb_streams"),
        ("STREAMS", &without),
        ("DYNAMODB_ENDPOINT", &dynamo),
    ]));
    assert_eq!(code, 66, "{text}");
    assert!(
        text.contains("has no stream") && text.contains(&without),
        "{text}"
    );

    let table = unique("worker-ddbs");
    kcl_tests::create_table(
        &client,
        &table,
        Some(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages),
    )
    .await;
    let app = unique("worker-ddbs-app");
    let start = |name: &str| {
        let log = log_path(&format!("kcl-worker-ddbs-{name}"));
        let ledger = log_path(&format!("kcl-worker-ddbs-ledger-{name}"));
        let child = spawn_logged(
            worker(&[
                ("APPLICATION", &app),
                ("SOURCE", "dynamodb_streams"),
                ("STREAMS", &table),
                ("WORKER_ID", name),
                ("INITIAL_POSITION", "trim_horizon"),
                ("DYNAMODB_ENDPOINT", &dynamo),
                ("FAILOVER_SECS", "3"),
                ("IDLE_TIME_BETWEEN_READS_MS", "200"),
                ("LEDGER_FILE", ledger.to_str().unwrap()),
            ]),
            &log,
        );
        (child, log, ledger)
    };
    let (first, first_log, first_ledger) = start("w1");
    wait_for_log(&first_log, "shard consumer processing").await;
    let (mut second, second_log, second_ledger) = start("w2");
    // 1,000 changes over 40 items: inserts, updates, and every fifth change a delete; the first
    // worker is SIGTERMed halfway.
    let mut versions: std::collections::BTreeMap<String, u64> = Default::default();
    let mut first = Some(first);
    for n in 0..1000u64 {
        let id = format!("item-{}", n % 40);
        let version = versions.entry(id.clone()).or_insert(0);
        kcl_tests::write_change(&client, &table, &id, *version).await;
        *version += 1;
        if n == 500 {
            let mut child = first.take().expect("once");
            sigterm(&child);
            assert_eq!(child.wait().unwrap().code(), Some(0), "w1 drained");
        }
    }
    let read = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&first_ledger).unwrap_or_default(),
            std::fs::read_to_string(&second_ledger).unwrap_or_default()
        )
    };
    let by = Instant::now() + Duration::from_secs(90);
    while read().lines().count() < 1000 {
        assert!(
            Instant::now() < by,
            "{} of 1,000 changes:\n{}",
            read().lines().count(),
            std::fs::read_to_string(&second_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&second);
    assert_eq!(second.wait().unwrap().code(), Some(0), "w2 drained");
    // Each change arrives as the adapter's JSON (the custom worker writes it upper-cased, so
    // it is read lower-cased): every change once, in order per item, from both workers.
    let (first_lines, lines) = (
        std::fs::read_to_string(&first_ledger).unwrap_or_default(),
        read(),
    );
    assert!(first_lines.lines().count() > 0, "w1 processed changes");
    assert!(
        lines.lines().count() > first_lines.lines().count(),
        "w2 took over"
    );
    let mut per_item: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut sequences = std::collections::BTreeSet::new();
    for line in lines.lines() {
        let lower = line.to_lowercase();
        let json = &lower[lower.find('{').unwrap()..=lower.rfind('}').unwrap()];
        let change: serde_json::Value = serde_json::from_str(json).expect("the adapter's JSON");
        let d = &change["dynamodb"];
        assert!(
            sequences.insert(d["sequencenumber"].as_str().unwrap().to_string()),
            "a change processed twice: {line}"
        );
        let version = d["newimage"]["version"]["n"].as_str().unwrap_or("-");
        per_item
            .entry(d["keys"]["id"]["s"].as_str().unwrap().to_string())
            .or_default()
            .push(format!(
                "{}:{version}",
                change["eventname"].as_str().unwrap()
            ));
        // kcl-worker's ledger line: worker stream shard sequence sub-sequence partition-key
        // data time; the partition key is the sequence number, as the Java adapter sets it.
        if option_env!("CARGO_BIN_EXE_kcl-worker").is_some() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(
                fields[3], fields[5],
                "partition key = sequence number: {line}"
            );
        }
    }
    assert_eq!(per_item.len(), 40);
    for (id, changes) in &per_item {
        let expected: Vec<String> = (0..25)
            .map(|v| kcl_tests::expected_change(v).to_lowercase())
            .collect();
        assert_eq!(changes, &expected, "{id}: every change once, in order");
    }
    for f in [first_log, second_log, first_ledger, second_ledger] {
        let _ = std::fs::remove_file(f);
    }
}

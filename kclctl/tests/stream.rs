//! `kclctl` on kinesis-local + moto with a worker running: a replay between two times across a
//! split, `--lag`, `watch`, and a rewind to a timestamp while the worker runs — the ledger shows
//! the worker re-processing from the new position, nothing lost, and no checkpoint of the old
//! owner lands after the rewind.
//!
//! (The rewind's position is checked exactly: kinesis-local refuses an iterator at a sequence
//! number it does not hold, so a rewind names the last record before the time.)

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use kcl_core::lease::{Lease, LeaseStore};
use kcl_core::model::{
    ExtendedSequenceNumber, InitialPosition, SequenceNumber, ShardId, StreamIdentity,
};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_core::testing::RecordingLedger;
use kcl_tests::{create_stream, emulator, emulator_config, lease_table, unique, wait_active};
use tokio_util::sync::CancellationToken;

struct Endpoints {
    kinesis: String,
    dynamodb: String,
}

async fn kclctl(e: &Endpoints, args: &[&str]) -> (bool, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kclctl"))
        .args(args)
        .env("KCL_WORKER_KINESIS_ENDPOINT", &e.kinesis)
        .env("KCL_WORKER_DYNAMODB_ENDPOINT", &e.dynamodb)
        .env("KCL_WORKER_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("kclctl {args:?} did not finish within 120 s"))
        .expect("run kclctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What was put: data (also the partition key) → (shard, sequence number).
type Sent = BTreeMap<String, (String, String)>;

async fn put(client: &aws_sdk_kinesis::Client, stream: &str, sent: &mut Sent, data: &str) {
    let out = client
        .put_record()
        .stream_name(stream)
        .partition_key(data)
        .data(Blob::new(data.as_bytes()))
        .send()
        .await
        .expect("PutRecord");
    sent.insert(
        data.to_string(),
        (
            out.shard_id().to_string(),
            out.sequence_number().to_string(),
        ),
    );
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn epoch(t: SystemTime) -> String {
    format!(
        "{:.3}",
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    )
}

fn by_shard<'a>(sent: &'a Sent, prefix: &str) -> BTreeMap<&'a str, Vec<(&'a str, &'a str)>> {
    let mut out: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (data, (shard, seq)) in sent.range(prefix.to_string()..) {
        if data.starts_with(prefix) {
            out.entry(shard).or_default().push((data, seq));
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|(_, seq)| SequenceNumber::new(seq).unwrap());
    }
    out
}

/// `kclctl leases APP --lag --json`: the lease objects.
async fn leases_with_lag(e: &Endpoints, app: &str, stream: &str) -> Vec<serde_json::Value> {
    let args = [
        "leases",
        app,
        "--lag",
        "--stream",
        stream,
        "--observe",
        "0s",
        "--json",
    ];
    let (ok, out, err) = kclctl(e, &args).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["leases"].as_array().unwrap().clone()
}

async fn lease_of(store: &dyn LeaseStore, shard: &str) -> Lease {
    store.get(shard).await.unwrap().expect("lease exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_lag_watch_and_a_rewind_to_a_timestamp_while_a_worker_runs() {
    let (Some(kinesis), Some(dynamodb)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    kcl_tests::init_logging();
    let e = Endpoints { kinesis, dynamodb };
    let client = aws_sdk_kinesis::Client::new(&emulator_config(&e.kinesis).await);
    let stream = unique("cli-stream");
    create_stream(&client, &stream, 1).await;
    let mut sent = Sent::new();
    let gap = || tokio::time::sleep(Duration::from_millis(1200));

    // a* before t1; b* between t1 and t2 (a split in the middle); c* after t2.
    for i in 0..4 {
        put(&client, &stream, &mut sent, &format!("a{i}")).await;
    }
    gap().await;
    let t1 = SystemTime::now();
    gap().await;
    for i in 0..4 {
        put(&client, &stream, &mut sent, &format!("b{i:02}")).await;
    }
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    wait_active(&client, &stream).await;
    for i in 4..12 {
        put(&client, &stream, &mut sent, &format!("b{i:02}")).await;
    }
    gap().await;
    let t2 = SystemTime::now();
    gap().await;
    for i in 0..12 {
        put(&client, &stream, &mut sent, &format!("c{i:02}")).await;
    }
    assert_eq!(by_shard(&sent, "c").len(), 2, "c* landed in both children");

    // Replay the window into its own application: exactly b*, in order per shard.
    let replay_app = unique("cli-replay");
    let (from, until) = (rfc3339(t1), epoch(t2));
    let replay = [
        "replay",
        "--as",
        &replay_app,
        "--stream",
        &stream,
        "--from",
        &from,
        "--until",
        &until,
        "--text",
    ];
    let (ok, out, err) = kclctl(&e, &replay).await;
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mut got: Vec<&str> = lines.iter().map(|l| l["data"].as_str().unwrap()).collect();
    got.sort();
    let window: Vec<&str> = sent
        .keys()
        .filter(|k| k.starts_with('b'))
        .map(String::as_str)
        .collect();
    assert_eq!(got, window, "exactly the window: {out}");
    for l in &lines {
        let data = l["data"].as_str().unwrap();
        assert_eq!(l["shard_id"], sent[data].0.as_str());
        assert_eq!(l["sequence_number"], sent[data].1.as_str());
        assert_eq!(l["partition_key"], data);
    }
    for (shard, records) in by_shard(&sent, "b") {
        let printed: Vec<&str> = lines
            .iter()
            .filter(|l| l["shard_id"] == shard)
            .map(|l| l["data"].as_str().unwrap())
            .collect();
        let put_order: Vec<&str> = records.iter().map(|(d, _)| *d).collect();
        assert_eq!(printed, put_order, "shard order of {shard}");
    }
    assert!(err.contains("replayed 12 records"), "{err}");
    // The replay's table is its own: a second run is refused unless it resumes (then: nothing
    // left to replay).
    let (ok, _, err) = kclctl(&e, &replay).await;
    assert!(!ok && err.contains("--resume"), "{err}");
    let (ok, out, err) = kclctl(&e, &[&replay[..], &["--resume"]].concat()).await;
    assert!(ok && out.is_empty(), "{out}{err}");
    assert!(err.contains("replayed 0 records"), "{err}");
    // The replay stopped at t2: its children's checkpoints are behind the tip.
    for l in &leases_with_lag(&e, &replay_app, &stream).await {
        if l["shard_id"] == "shardId-000000000000" {
            assert_eq!(l["millis_behind_latest"], serde_json::Value::Null, "ended");
        } else {
            assert!(
                l["millis_behind_latest"].as_u64().unwrap() > 0,
                "behind the c* records: {l}"
            );
        }
    }

    // A live application on its own worker processes everything.
    let store = Arc::new(lease_table(&e.dynamodb, "cli-live").await);
    let app = store.table().to_string();
    let ledger = RecordingLedger::new();
    let scheduler = SchedulerBuilder::new(StreamIdentity::from_name(&stream), &app)
        .worker_id("live-worker")
        .lease_store(store.clone())
        .kinesis(Arc::new(kcl_aws::AwsKinesis::new(
            &emulator_config(&e.kinesis).await,
        )))
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .processor_factory(ledger.factory())
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    let caught_up = |sent: &Sent| {
        let store = store.clone();
        let last: BTreeMap<String, String> = sent
            .values()
            .map(|(shard, seq)| (shard.clone(), seq.clone()))
            .fold(BTreeMap::new(), |mut m, (shard, seq)| {
                let e = m.entry(shard).or_insert_with(String::new);
                if e.is_empty()
                    || SequenceNumber::new(&seq).unwrap() > SequenceNumber::new(e).unwrap()
                {
                    *e = seq;
                }
                m
            });
        async move {
            let by = Instant::now() + Duration::from_secs(90);
            loop {
                let mut done = true;
                for (shard, seq) in &last {
                    let Some(l) = store.get(shard).await.unwrap() else {
                        // A parent's lease is deleted once its children are processing.
                        done &= shard == "shardId-000000000000"
                            && store.get("shardId-000000000001").await.unwrap().is_some();
                        continue;
                    };
                    let at = match &l.checkpoint {
                        ExtendedSequenceNumber::Sequence { sequence, .. } => sequence.to_string(),
                        ExtendedSequenceNumber::ShardEnd => seq.clone(),
                        _ => String::new(),
                    };
                    done &= &at == seq && l.owner.is_some() || l.is_shard_end();
                }
                if done {
                    return;
                }
                if Instant::now() >= by {
                    let leases = store.list().await.unwrap().leases;
                    panic!("never caught up to {last:?}: {leases:#?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    caught_up(&sent).await;

    for l in &leases_with_lag(&e, &app, &stream).await {
        if l["shard_id"] != "shardId-000000000000" {
            assert_eq!(l["owner"], "live-worker");
            assert_eq!(l["millis_behind_latest"], 0, "caught up: {l}");
        }
    }
    let (ok, out, err) = kclctl(
        &e,
        &[
            "leases",
            &app,
            "--lag",
            "--stream",
            &stream,
            "--observe",
            "0s",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("BEHIND"), "a lag column: {out}");

    let (ok, out, err) = kclctl(
        &e,
        &[
            "watch",
            &app,
            "--count",
            "2",
            "--every",
            "200ms",
            "--observe",
            "0s",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let frames: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per refresh"))
        .collect();
    assert_eq!(frames.len(), 2, "{out}");
    for f in &frames {
        assert_eq!(f["balance"]["workers"]["live-worker"], 2, "{f}");
        assert_eq!(f["balance"]["max_minus_min"], 0);
        assert_eq!(f["leases"].as_array().unwrap().len(), 3);
    }

    let (ok, out, err) = kclctl(&e, &["watch", &app, "--count", "1", "--observe", "0s"]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{app} — 3 leases, refreshed every 2s\n")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["live-worker", "2"])),
        "leases per worker: {out}"
    );
    assert!(out.ends_with("balance: max − min = 0\n"), "{out}");
    assert!(!out.contains('\u{1b}'), "no escape codes when piped");

    // The human views with a worker running (the README shows this output: --nocapture).
    let (ok, leases_text, err) = kclctl(
        &e,
        &[
            "leases",
            &app,
            "--observe",
            "2s",
            "--lag",
            "--stream",
            &stream,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, lineage_text, err) = kclctl(&e, &["lineage", &app]).await;
    assert!(ok, "{err}");
    assert_eq!(
        lineage_text,
        "shardId-000000000000  ended  live-worker\n├── shardId-000000000001  processing  live-worker\n└── shardId-000000000002  processing  live-worker\n"
    );
    for child in ["shardId-000000000001", "shardId-000000000002"] {
        let line = leases_text
            .lines()
            .find(|l| l.trim_start().starts_with(child))
            .unwrap_or_else(|| panic!("{child} in {leases_text}"));
        assert!(
            line.contains("live-worker") && line.contains("processing") && line.contains("0 ms"),
            "{line}"
        );
    }
    println!(
        "$ kclctl leases APP --observe 2s --lag --stream S\n{leases_text}\n$ kclctl lineage APP\n{lineage_text}"
    );

    // Rewind the child with the most c* records to t2 while the worker runs.
    let c_by_shard = by_shard(&sent, "c");
    let (shard, c_records) = c_by_shard
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(s, v)| {
            let owned: Vec<(String, String)> = v
                .iter()
                .map(|(d, q)| (d.to_string(), q.to_string()))
                .collect();
            (s.to_string(), owned)
        })
        .unwrap();
    let before = lease_of(store.as_ref(), &shard).await;
    let (ok, out, err) = kclctl(
        &e,
        &[
            "rewind",
            &app,
            "--shard",
            &shard,
            "--to",
            "timestamp",
            &rfc3339(t2),
            "--stream",
            &stream,
            "--apply",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["applied"], true, "{v}");
    let rewound = lease_of(store.as_ref(), &shard).await;
    // The last record before t2 in that shard (a checkpoint must name a record that exists).
    let expected = by_shard(&sent, "b")
        .get(shard.as_str())
        .and_then(|b| b.last())
        .map_or(ExtendedSequenceNumber::TrimHorizon, |(_, seq)| {
            ExtendedSequenceNumber::Sequence {
                sequence: SequenceNumber::new(seq).unwrap(),
                sub_sequence: 0,
            }
        });
    assert_eq!(rewound.checkpoint, expected, "the last record before t2");
    assert_eq!(rewound.owner, None);
    assert!(rewound.counter > before.counter);
    // New records right away: the old owner may still read them before it notices, but none
    // of its checkpoints may land.
    let mut d_sent = Sent::new();
    for i in 0..6 {
        put(&client, &stream, &mut d_sent, &format!("d{i}")).await;
    }
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let l = lease_of(store.as_ref(), &shard).await;
        if l.counter == rewound.counter {
            assert_eq!(
                l.checkpoint, rewound.checkpoint,
                "an old-owner checkpoint landed"
            );
        } else if l.owner.is_some() {
            break;
        }
        assert!(Instant::now() < by, "nobody took the rewound lease");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sent.extend(d_sent);
    caught_up(&sent).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    // The ledger: every record at least once in order per key; the rewound shard's c* twice
    // (re-processed from t2), its b* once (before the new position), the lease loss seen.
    let mut expected = BTreeMap::new();
    for data in sent.keys() {
        expected.insert((stream.clone(), data.clone()), vec![data.clone()]);
    }
    ledger.check(&expected).unwrap();
    let processed = ledger.by_key();
    let times = |data: &str| processed[&(stream.clone(), data.to_string())].len();
    for (data, _) in &c_records {
        assert_eq!(times(data), 2, "{data} re-processed after the rewind");
    }
    for (data, _) in &by_shard(&sent, "b")[shard.as_str()] {
        assert_eq!(times(data), 1, "{data} is before the rewind position");
    }
    assert!(
        ledger
            .lost()
            .iter()
            .any(|i| i.shard_id == ShardId::new(&shard)),
        "the old owner was told it lost the lease"
    );
}

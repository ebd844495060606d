//! `kclctl` against moto: leases, lineage, rewind (fenced), release and delete-app, human and JSON.

use std::process::Stdio;

use kcl_core::lease::{Lease, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, SequenceNumber, ShardId};

async fn kclctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kclctl"))
        .args(args)
        .env("KCL_WORKER_DYNAMODB_ENDPOINT", endpoint)
        .env("KCL_WORKER_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run kclctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seq(n: u128) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::Sequence {
        sequence: SequenceNumber::from_u128(n),
        sub_sequence: 0,
    }
}

#[tokio::test]
async fn leases_lineage_rewind_release_and_delete_on_a_split_table() {
    let Some(endpoint) = kcl_tests::emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    let store = kcl_tests::lease_table(&endpoint, "cli").await;
    let app = store.table().to_string();
    let mut parent = Lease::new(&ShardId::from_index(0), ExtendedSequenceNumber::ShardEnd);
    parent.child_shard_ids = vec![ShardId::from_index(1), ShardId::from_index(2)];
    let mut left = Lease::new(&ShardId::from_index(1), seq(500));
    left.parent_shard_ids = vec![ShardId::from_index(0)];
    let mut right = Lease::new(&ShardId::from_index(2), ExtendedSequenceNumber::TrimHorizon);
    right.parent_shard_ids = vec![ShardId::from_index(0)];
    for l in [&parent, &left, &right] {
        store.create_if_absent(l).await.unwrap();
    }
    // A worker owns the left child.
    let got = store.get(&left.key).await.unwrap().unwrap();
    let owned = store.take(&got, "w1").await.unwrap();

    let (ok, out, err) = kclctl(&endpoint, &["leases", &app, "--observe", "0s"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("SHARD") && out.contains("STATE"), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("shardId-000000000001"))
        .unwrap();
    assert!(
        line.contains("w1") && line.contains("500") && line.contains("processing"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("shardId-000000000000") && l.contains("ended"))
    );
    assert!(!out.contains('\u{1b}'), "no colour when piped: {out:?}");

    let (ok, out, err) = kclctl(&endpoint, &["leases", &app, "--observe", "1s", "--json"]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let leases = v["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 3);
    let l1 = leases
        .iter()
        .find(|l| l["shard_id"] == "shardId-000000000001")
        .unwrap();
    assert_eq!(l1["owner"], "w1");
    assert_eq!(l1["checkpoint"], "500");
    assert_eq!(l1["state"], "processing");
    assert_eq!(l1["parents"][0], "shardId-000000000000");
    assert_eq!(l1["counter_unchanged_whole_observation"], true);
    assert!(l1["counter_unchanged_secs"].as_f64().unwrap() >= 1.0);
    let l2 = leases
        .iter()
        .find(|l| l["shard_id"] == "shardId-000000000002")
        .unwrap();
    assert_eq!(l2["state"], "unowned");

    let (ok, out, err) = kclctl(&endpoint, &["lineage", &app]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "shardId-000000000000  ended\n├── shardId-000000000001  processing  w1\n└── shardId-000000000002  unowned\n"
    );
    let (_, out, _) = kclctl(&endpoint, &["lineage", &app, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["children"].as_array().unwrap().len(), 2);

    // Rewind: a dry run writes nothing; a SHARD_END lease is refused without --force.
    let (ok, out, err) = kclctl(
        &endpoint,
        &["rewind", &app, "--all", "--to", "trim-horizon"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("dry run"), "{out}");
    assert!(out.contains("SHARD_END (use --force)"), "{out}");
    assert_eq!(store.get(&left.key).await.unwrap().unwrap(), owned);
    let (ok, out, err) = kclctl(
        &endpoint,
        &[
            "rewind",
            &app,
            "--shard",
            "shardId-000000000001",
            "--to",
            "sequence",
            "100/3",
            "--apply",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["applied"], true);
    let rewound = store.get(&left.key).await.unwrap().unwrap();
    assert_eq!(
        rewound.checkpoint,
        ExtendedSequenceNumber::Sequence {
            sequence: SequenceNumber::from_u128(100),
            sub_sequence: 3
        }
    );
    assert_eq!(rewound.owner, None, "the owner lost the lease");
    // The old owner's view is fenced: its next renewal and checkpoint fail.
    assert!(store.renew(&owned).await.unwrap_err().is_lost());
    assert!(
        store
            .checkpoint(&owned, kcl_core::lease::CheckpointUpdate::Commit(seq(900)))
            .await
            .unwrap_err()
            .is_lost()
    );

    // Release asks first; with --yes it releases.
    let got = store.get(&right.key).await.unwrap().unwrap();
    store.take(&got, "w2").await.unwrap();
    let (ok, _, err) = kclctl(&endpoint, &["release", &app, "--worker", "w2"]).await;
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, out, err) = kclctl(&endpoint, &["release", &app, "--worker", "w2", "--yes"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("released shardId-000000000002 (was w2)"),
        "{out}"
    );
    assert_eq!(store.get(&right.key).await.unwrap().unwrap().owner, None);

    let (ok, _, _) = kclctl(&endpoint, &["delete-app", &app]).await;
    assert!(!ok, "refused without --yes");
    let (ok, out, err) = kclctl(&endpoint, &["delete-app", &app, "--yes"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted lease table"));
    let (ok, _, err) = kclctl(&endpoint, &["leases", &app, "--observe", "0s"]).await;
    assert!(!ok && err.contains(&app), "{err}");
}

#[tokio::test]
async fn table_create_show_upgrade_and_protection() {
    let Some(endpoint) = kcl_tests::emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    let app = kcl_tests::unique("cli-table");
    let (ok, _, err) = kclctl(&endpoint, &["table", "show", &app]).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = kclctl(
        &endpoint,
        &["table", "create", &app, "--provisioned", "0,5"],
    )
    .await;
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = kclctl(&endpoint, &["table", "create", &app, "--tag", "novalue"]).await;
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");

    let (ok, out, err) = kclctl(
        &endpoint,
        &[
            "table",
            "create",
            &app,
            "--provisioned",
            "7,3",
            "--pitr",
            "--deletion-protection",
            "--tag",
            "team=streams",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("created lease table {app}\n")),
        "{out}"
    );
    assert!(
        out.contains("billing                 provisioned (7 read, 3 write units)"),
        "{out}"
    );
    assert!(out.contains("owner index             LeaseOwnerToLeaseKeyIndex (ACTIVE)"));
    assert!(out.contains("point-in-time recovery  on"), "{out}");
    assert!(out.contains("deletion protection     on"), "{out}");
    assert!(
        out.contains("tags                    team=streams"),
        "{out}"
    );
    let (ok, _, err) = kclctl(&endpoint, &["table", "create", &app]).await;
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, out, err) = kclctl(&endpoint, &["table", "show", &app, "--json"]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["table"], app.as_str());
    assert_eq!(v["deletion_protection"], true);
    assert_eq!(v["tags"]["team"], "streams");
    // Deletion protection holds against delete-app, and the error says why.
    let (ok, _, err) = kclctl(&endpoint, &["delete-app", &app, "--yes"]).await;
    assert!(
        !ok && err.to_lowercase().contains("deletion protection"),
        "{err}"
    );

    // A table as the KCL 2.x creates it: no index, nothing on. Upgrade shows, then adds.
    let plain = kcl_tests::lease_table(&endpoint, "cli-plain").await;
    let plain = plain.table().to_string();
    let (ok, out, err) = kclctl(&endpoint, &["table", "show", &plain]).await;
    assert!(ok, "{err}");
    assert!(out.contains("owner index             missing"), "{out}");
    let args = ["table", "upgrade", &plain, "--pitr", "--tag", "env=prod"];
    let (ok, out, err) = kclctl(&endpoint, &args).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "dry run (nothing written; --apply makes these changes):\n  would create index LeaseOwnerToLeaseKeyIndex\n  would enable point-in-time recovery\n  would tag env=prod\n"
    );
    let (_, out, _) = kclctl(&endpoint, &["table", "show", &plain, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["lease_owner_index"],
        serde_json::Value::Null,
        "dry run wrote nothing"
    );
    let (ok, out, err) = kclctl(&endpoint, &[&args[..], &["--apply", "--json"]].concat()).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applied"], true);
    assert_eq!(v["changes"].as_array().unwrap().len(), 3);
    let (_, out, _) = kclctl(&endpoint, &["table", "show", &plain, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["lease_owner_index"], "ACTIVE");
    assert_eq!(v["point_in_time_recovery"], true);
    assert_eq!(v["tags"]["env"], "prod");
    assert_eq!(v["billing"], "on-demand");
    let (ok, out, _) = kclctl(&endpoint, &args).await;
    assert!(ok);
    assert_eq!(out, format!("table {plain} already has everything asked\n"));
    let (ok, _, err) = kclctl(&endpoint, &["delete-app", &plain, "--yes"]).await;
    assert!(ok, "{err}");
}

/// Issue 28 §7: the leases and lineage of a DynamoDB Streams application (lease items as the Java
/// adapter writes them, single- and multi-stream), with `--lag` read from the table's stream.
#[tokio::test]
async fn leases_lag_and_lineage_of_a_dynamodb_streams_application() {
    use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
    use kcl_core::kinesis::KinesisDataPlane;
    use kcl_core::model::StartingPosition;
    let Some(endpoint) = kcl_tests::emulator("KCL_DYNAMODB_ENDPOINT") else {
        return;
    };
    let config = kcl_tests::emulator_config(&endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = kcl_tests::unique("cli-ddbs");
    let arn = kcl_tests::create_table(&client, &table, Some(StreamViewType::NewImage))
        .await
        .expect("a stream ARN");
    for i in 0..5 {
        client
            .put_item()
            .table_name(&table)
            .item("id", AttributeValue::S(format!("k{i}")))
            .send()
            .await
            .unwrap();
    }
    let stream = kcl_dynamodb_streams::stream(&arn).unwrap();
    let plane = kcl_dynamodb_streams::DynamoDbStreams::new(&config);
    let shard = plane
        .list_all_shards(&stream, None)
        .await
        .unwrap()
        .remove(0)
        .id;
    let it = plane
        .get_shard_iterator(&stream, &shard, &StartingPosition::TrimHorizon)
        .await
        .unwrap();
    let records = plane.get_records(&it, 1000).await.unwrap().records;
    // A finished parent from before a rotation, and the open shard checkpointed at change 1.
    let parent = "shardId-00000001000000000000-0000abcd";
    for multi in [false, true] {
        let store = kcl_tests::lease_table(&endpoint, "cli-ddbs-leases").await;
        let app = store.table().to_string();
        let stream_name = format!("123456789012:{}:1", stream.name);
        let key = |id: &str| {
            if multi {
                format!("{stream_name}:{id}")
            } else {
                id.to_string()
            }
        };
        for it in [
            kcl_tests::adapter_lease_item(
                &key(parent),
                "SHARD_END",
                None,
                None,
                multi.then_some((stream_name.as_str(), parent)),
            ),
            kcl_tests::adapter_lease_item(
                &key(shard.as_str()),
                &records[1].sequence_number.to_string(),
                Some("java-adapter-worker"),
                Some(parent),
                multi.then_some((stream_name.as_str(), shard.as_str())),
            ),
        ] {
            client
                .put_item()
                .table_name(&app)
                .set_item(Some(it))
                .send()
                .await
                .unwrap();
        }
        let mut args = vec!["leases", &app, "--observe", "0s", "--lag", "--json"];
        if !multi {
            args.extend(["--stream", &arn]);
        }
        let (ok, out, err) = kclctl(&endpoint, &args).await;
        assert!(ok, "multi = {multi}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v["leases"].as_array().unwrap();
        let open = rows
            .iter()
            .find(|r| r["shard_id"] == shard.as_str())
            .expect("the open shard's lease");
        assert_eq!(open["owner"], "java-adapter-worker");
        assert!(
            open["millis_behind_latest"].is_u64(),
            "multi = {multi}: lag read from the table's stream: {open}"
        );
        let (ok, out, err) = kclctl(&endpoint, &["lineage", &app]).await;
        assert!(ok, "{err}");
        // Multi-stream lineage names whole lease keys.
        let (first, second) = out.split_once('\n').expect("two lines");
        assert!(
            first.ends_with(&format!("{}  ended", key(parent)))
                && second.starts_with(&format!("└── {}  processing", key(shard.as_str()))),
            "multi = {multi}: {out}"
        );
    }
}

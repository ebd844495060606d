//! Cross-check against an independent implementation: aggregates made and unpacked by the Python
//! `aws-kinesis-agg` library (scripts/agg_vectors.py) must unpack identically here.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kcl_core::aggregation::Deaggregator;
use kcl_core::model::{Record, SequenceNumber};
use serde_json::Value;

fn vectors() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_python_vector_deaggregates_identically() {
    let vectors = vectors();
    assert!(
        vectors.len() >= 14,
        "expected the checked-in vectors, found {}",
        vectors.len()
    );
    let arrival = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let mut compared = 0;
    for (name, v) in &vectors {
        let record = Record {
            data: STANDARD
                .decode(v["aggregate"].as_str().unwrap())
                .unwrap()
                .into(),
            partition_key: "outer".into(),
            sequence_number: SequenceNumber::new(v["sequence_number"].as_str().unwrap()).unwrap(),
            sub_sequence_number: 0,
            explicit_hash_key: None,
            approximate_arrival_timestamp: arrival,
            aggregated: false,
        };
        let (users, report) = Deaggregator::new().deaggregate([record]);
        let expected = v["expected"].as_array().unwrap();
        assert_eq!(
            users.len(),
            expected.len(),
            "{name}: number of user records"
        );
        for (i, (got, want)) in users.iter().zip(expected).enumerate() {
            let ctx = format!("{name}[{i}]");
            assert_eq!(
                &*got.partition_key,
                want["partition_key"].as_str().unwrap(),
                "{ctx} partition key"
            );
            assert_eq!(
                got.explicit_hash_key.as_deref(),
                want["explicit_hash_key"].as_str(),
                "{ctx} explicit hash key"
            );
            assert_eq!(
                got.data,
                STANDARD.decode(want["data"].as_str().unwrap()).unwrap(),
                "{ctx} data"
            );
            assert_eq!(
                got.sequence_number.to_string(),
                want["sequence_number"].as_str().unwrap(),
                "{ctx} sequence"
            );
            assert_eq!(
                got.sub_sequence_number,
                want["sub_sequence_number"].as_u64().unwrap(),
                "{ctx} sub-sequence"
            );
            assert_eq!(
                got.aggregated,
                want["aggregated"].as_bool().unwrap(),
                "{ctx} aggregated flag"
            );
            assert_eq!(
                got.approximate_arrival_timestamp, arrival,
                "{ctx} arrival time"
            );
            compared += 1;
        }
        if name.starts_with("not_agg") {
            assert_eq!(report.aggregates, 0, "{name}");
            assert_eq!(report.plain + report.malformed, 1, "{name}");
        } else {
            assert_eq!(report.aggregates, 1, "{name}");
        }
    }
    assert!(compared > 6000, "compared {compared} user records");
}

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use proptest::prelude::*;
use prost::Message;

use super::proto::{self, SubRecord, Tag};
use super::*;
use crate::model::{HashKeyRange, Record, SequenceNumber};

fn kinesis_record(data: Bytes) -> Record {
    Record {
        data,
        partition_key: "outer".into(),
        sequence_number: SequenceNumber::new("12345").unwrap(),
        sub_sequence_number: 0,
        explicit_hash_key: None,
        approximate_arrival_timestamp: SystemTime::UNIX_EPOCH,
        aggregated: false,
    }
}

fn frame(message: &proto::AggregatedRecord) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    message.encode(&mut buf).unwrap();
    let digest = Md5::digest(&buf[4..]);
    buf.put_slice(&digest);
    buf.freeze()
}

fn sub(pk: u64, ehk: Option<u64>, data: &'static str) -> SubRecord {
    SubRecord {
        partition_key_index: Some(pk),
        explicit_hash_key_index: ehk,
        data: Some(Bytes::from(data)),
        tags: vec![],
    }
}

fn message(records: Vec<SubRecord>) -> proto::AggregatedRecord {
    proto::AggregatedRecord {
        partition_key_table: vec!["a".into(), "b".into()],
        explicit_hash_key_table: vec!["0".into()],
        records,
    }
}

/// Deaggregates one Kinesis record, asserting it passes through unchanged.
fn assert_passes_through(data: Bytes, malformed: bool) {
    let record = kinesis_record(data);
    let (out, report) = Deaggregator::new().deaggregate([record.clone()]);
    assert_eq!(out, vec![record]);
    assert_eq!(report.malformed, u64::from(malformed));
    assert_eq!(report.plain, u64::from(!malformed));
    assert_eq!(report.user_records, 1);
}

#[test]
fn bad_aggregates_pass_through_whole_and_are_counted() {
    assert_passes_through(Bytes::from_static(b"plain"), false);
    assert_passes_through(Bytes::from_static(b""), false);
    assert_passes_through(Bytes::from_static(&[0xF3, 0x89, 0x9A]), false);
    let mut exactly_digest = MAGIC.to_vec();
    exactly_digest.extend([0u8; 16]);
    assert_passes_through(exactly_digest.into(), true);
    let good = frame(&message(vec![sub(0, None, "x")]));
    let mut flipped = good.to_vec();
    flipped[6] ^= 1;
    assert_passes_through(flipped.into(), true);
    // Valid MD5 over bytes that are not protobuf.
    let garbage = [0xFFu8; 10];
    let mut bad_proto = MAGIC.to_vec();
    bad_proto.extend(garbage);
    bad_proto.extend(Md5::digest(garbage));
    assert_passes_through(bad_proto.into(), true);
    // Indexes outside their tables: the KCL would deliver the first record and lose the rest.
    assert_passes_through(
        frame(&message(vec![sub(0, None, "ok"), sub(2, None, "bad pk")])),
        true,
    );
    assert_passes_through(
        frame(&message(vec![
            sub(0, None, "ok"),
            sub(1, Some(1), "bad ehk"),
        ])),
        true,
    );
    // Missing required fields.
    let mut no_data = sub(0, None, "");
    no_data.data = None;
    assert_passes_through(frame(&message(vec![no_data])), true);
    let mut no_pk = sub(0, None, "x");
    no_pk.partition_key_index = None;
    assert_passes_through(frame(&message(vec![no_pk])), true);
    let mut bad_tag = sub(0, None, "x");
    bad_tag.tags.push(Tag {
        key: None,
        value: Some("v".into()),
    });
    assert_passes_through(frame(&message(vec![bad_tag])), true);
}

/// Issue 14 §8: explicit hash keys that are not a decimal in [0, 2^128) were delivered as valid.
#[test]
fn invalid_explicit_hash_keys_make_the_aggregate_malformed() {
    for bad in [
        "not-a-number",
        "-1",
        "+5",
        "",
        "340282366920938463463374607431768211456",
    ] {
        let mut m = message(vec![sub(0, Some(0), "x")]);
        m.explicit_hash_key_table = vec![bad.into()];
        let data = frame(&m);
        assert!(
            matches!(
                unpack(&kinesis_record(data.clone())),
                Err(NotAggregate::InvalidExplicitHashKey { index: 0, .. })
            ),
            "{bad:?}"
        );
        assert_passes_through(data, true);
    }
    let mut m = message(vec![sub(0, Some(0), "x")]);
    m.explicit_hash_key_table = vec!["340282366920938463463374607431768211455".into()];
    assert_eq!(unpack(&kinesis_record(frame(&m))).unwrap().len(), 1);
}

#[test]
fn reports_reasons() {
    let r = kinesis_record(frame(&message(vec![sub(5, None, "x")])));
    assert!(matches!(
        unpack(&r),
        Err(NotAggregate::IndexOutOfRange {
            sub_record: 0,
            index: 5,
            table_len: 2,
            ..
        })
    ));
    assert_eq!(
        unpack(&kinesis_record("plain".into())),
        Err(NotAggregate::NoMagic)
    );
}

#[test]
fn empty_aggregate_delivers_nothing_but_is_counted() {
    let (out, report) = Deaggregator::new().deaggregate([kinesis_record(frame(&message(vec![])))]);
    assert!(out.is_empty());
    assert_eq!(
        (
            report.aggregates,
            report.empty_aggregates,
            report.user_records
        ),
        (1, 1, 0)
    );
}

#[test]
fn tags_are_tolerated() {
    let mut tagged = sub(1, Some(0), "x");
    tagged.tags.push(Tag {
        key: Some("k".into()),
        value: None,
    });
    let users = unpack(&kinesis_record(frame(&message(vec![tagged])))).unwrap();
    assert_eq!(&*users[0].partition_key, "b");
    assert_eq!(users[0].explicit_hash_key.as_deref(), Some("0"));
}

#[test]
fn hash_range_policies_are_explicit() {
    // Partition key "a" and "b" hash far apart; take a range holding only "a"'s hash.
    let ha = crate::routing::partition_key_hash("a");
    let range = HashKeyRange { start: ha, end: ha };
    let rec = kinesis_record(frame(&message(vec![
        sub(0, None, "1"),
        sub(1, None, "2"),
        sub(0, None, "3"),
    ])));
    let run = |policy| {
        Deaggregator::new()
            .with_hash_range_check(range, policy)
            .deaggregate([rec.clone()])
    };
    let (out, report) = run(HashRangePolicy::DeliverAndWarn);
    assert_eq!(out.len(), 3);
    assert_eq!(
        (report.hash_range_outside, report.hash_range_dropped),
        (1, 0)
    );
    let (out, report) = run(HashRangePolicy::DropOutside);
    assert_eq!(
        out.iter()
            .map(|r| r.sub_sequence_number)
            .collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(
        (
            report.hash_range_outside,
            report.hash_range_dropped,
            report.user_records
        ),
        (1, 1, 2)
    );
    let (out, report) = run(HashRangePolicy::DropAggregate);
    assert!(out.is_empty());
    assert_eq!(
        (report.hash_range_outside, report.hash_range_dropped),
        (1, 3)
    );
    let (out, report) = Deaggregator::new()
        .with_hash_range_check(HashKeyRange::FULL, HashRangePolicy::DropAggregate)
        .deaggregate([rec]);
    assert_eq!((out.len(), report.hash_range_outside), (3, 0));
}

#[test]
fn aggregator_respects_its_limit_and_rejects_bad_input() {
    let mut agg = Aggregator::with_max_bytes(1000);
    let mut packed = Vec::new();
    for i in 0..100 {
        if let Some(a) = agg
            .add(&format!("key-{i}"), None, Bytes::from(vec![1u8; 50]))
            .unwrap()
        {
            packed.push(a);
        }
    }
    packed.extend(agg.flush());
    assert!(packed.len() > 5);
    assert_eq!(packed.iter().map(|a| a.user_records).sum::<usize>(), 100);
    for a in &packed {
        assert!(
            a.data.len() + a.partition_key.len() <= 1000,
            "{} bytes",
            a.data.len()
        );
    }
    assert!(matches!(
        agg.add("k", None, Bytes::from(vec![0u8; 1000])),
        Err(AggregationError::RecordTooLarge { .. })
    ));
    assert_eq!(
        agg.add("", None, Bytes::new()),
        Err(AggregationError::InvalidPartitionKey)
    );
    assert!(matches!(
        agg.add("k", Some("x"), Bytes::new()),
        Err(AggregationError::InvalidExplicitHashKey(_))
    ));
    assert!(agg.flush().is_none());
}

proptest! {
    #[test]
    fn round_trip(records in prop::collection::vec(
        ("\\PC{1,20}", prop::option::of(any::<u128>()), prop::collection::vec(any::<u8>(), 0..300)), 1..60),
        max in 600usize..20_000)
    {
        let mut agg = Aggregator::with_max_bytes(max);
        let mut packed = Vec::new();
        for (pk, ehk, data) in &records {
            let ehk = ehk.map(|h| h.to_string());
            if let Some(a) = agg.add(pk, ehk.as_deref(), Bytes::from(data.clone())).unwrap() {
                packed.push(a);
            }
        }
        packed.extend(agg.flush());
        let mut users = Vec::new();
        for a in &packed {
            prop_assert!(a.data.len() + a.partition_key.len() <= max);
            let (u, report) = Deaggregator::new().deaggregate([kinesis_record(a.data.clone())]);
            prop_assert_eq!(report.malformed, 0);
            prop_assert!(u.iter().enumerate().all(|(i, r)| r.sub_sequence_number == i as u64 && r.aggregated));
            users.extend(u);
        }
        prop_assert_eq!(users.len(), records.len());
        for (u, (pk, ehk, data)) in users.iter().zip(&records) {
            prop_assert_eq!(&*u.partition_key, pk.as_str());
            let want = ehk.map(|h| h.to_string());
            prop_assert_eq!(u.explicit_hash_key.as_deref(), want.as_deref());
            prop_assert_eq!(&u.data[..], &data[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_lose_nothing(mut data in prop::collection::vec(any::<u8>(), 0..400), magic: bool) {
        if magic && data.len() >= 4 {
            data[..4].copy_from_slice(&MAGIC);
        }
        let (out, report) = Deaggregator::new().deaggregate([kinesis_record(data.into())]);
        prop_assert_eq!(report.kinesis_records, 1);
        prop_assert!(!out.is_empty() || report.empty_aggregates == 1);
    }
}

//! Arbitrary bytes as a Kinesis record, half the time behind a valid KPL magic and MD5 so the
//! fuzzer reaches the protobuf decoder. Deaggregation must never panic, and must lose nothing:
//! the output is the record itself, or user records numbered 0..n from a valid aggregate.
#![no_main]

use bytes::{BufMut, BytesMut};
use kcl_core::aggregation::{Deaggregator, HashRangePolicy, MAGIC, unpack};
use kcl_core::model::{HashKeyRange, Record, SequenceNumber};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, body)) = input.split_first() else { return };
    let data = if mode & 1 == 1 {
        // Frame the body as a well-formed envelope: magic, message, MD5 of the message.
        let mut buf = BytesMut::new();
        buf.put_slice(&MAGIC);
        buf.put_slice(body);
        buf.put_slice(&md5_of(body));
        buf.freeze()
    } else {
        bytes::Bytes::copy_from_slice(body)
    };
    let record = Record {
        data,
        partition_key: "pk".into(),
        sequence_number: SequenceNumber::new("49590338271490256608559692538361571095921575989136588898").unwrap(),
        sub_sequence_number: 0,
        explicit_hash_key: None,
        approximate_arrival_timestamp: std::time::SystemTime::UNIX_EPOCH,
        aggregated: false,
    };
    let half = HashKeyRange { start: 0, end: u128::MAX / 2 };
    let policy = [HashRangePolicy::DeliverAndWarn, HashRangePolicy::DropOutside, HashRangePolicy::DropAggregate]
        [usize::from(mode >> 1) % 3];
    let (out, report) = Deaggregator::new().with_hash_range_check(half, policy).deaggregate([record.clone()]);
    match unpack(&record) {
        Ok(users) => {
            assert!(users.iter().enumerate().all(|(i, u)| u.sub_sequence_number == i as u64 && u.aggregated));
            assert_eq!(report.aggregates, 1);
            assert_eq!(out.len() as u64 + report.hash_range_dropped, users.len() as u64);
        }
        Err(_) => assert_eq!(out, vec![record]),
    }
});

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(bytes).into()
}

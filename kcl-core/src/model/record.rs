//! Records as delivered to record processors.

use std::time::SystemTime;

use bytes::Bytes;
use bytestring::ByteString;

use super::{ExtendedSequenceNumber, SequenceNumber};

/// One user record.
///
/// Records read from a shard are either plain Kinesis records (`aggregated == false`,
/// sub-sequence 0) or user records unpacked from a KPL aggregate, which share their Kinesis
/// record's sequence number and arrival time and are told apart by `sub_sequence_number`.
/// `data` is a reference-counted slice of the bytes read from Kinesis: records are never copied
/// on the way to the processor, and keys are UTF-8 views of the same buffers (`ByteString`
/// dereferences to `str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The payload.
    pub data: Bytes,
    /// The partition key the producer chose.
    pub partition_key: ByteString,
    /// Sequence number of the Kinesis record (shared by all user records of one aggregate).
    pub sequence_number: SequenceNumber,
    /// Index inside the KPL aggregate, 0 for records that were not aggregated.
    pub sub_sequence_number: u64,
    /// Decimal 128-bit hash key the producer set instead of hashing the partition key.
    pub explicit_hash_key: Option<ByteString>,
    /// When Kinesis accepted the record.
    pub approximate_arrival_timestamp: SystemTime,
    /// Whether this user record came out of a KPL aggregate.
    pub aggregated: bool,
}

impl Record {
    /// A plain record (not aggregated: sub-sequence 0, no explicit hash key) that arrived now,
    /// e.g. for unit tests of processors.
    pub fn new(
        sequence_number: SequenceNumber,
        partition_key: impl Into<ByteString>,
        data: Bytes,
    ) -> Self {
        Self {
            data,
            partition_key: partition_key.into(),
            sequence_number,
            sub_sequence_number: 0,
            explicit_hash_key: None,
            approximate_arrival_timestamp: SystemTime::now(),
            aggregated: false,
        }
    }

    /// The record's position, for checkpointing.
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::Sequence {
            sequence: self.sequence_number.clone(),
            sub_sequence: self.sub_sequence_number,
        }
    }

    /// The 128-bit hash key that routes this record: the explicit hash key when set (and valid),
    /// else MD5 of the UTF-8 partition key read as a big-endian unsigned integer.
    pub fn effective_hash_key(&self) -> Option<u128> {
        match &self.explicit_hash_key {
            Some(ehk) => crate::routing::parse_explicit_hash_key(ehk),
            None => Some(crate::routing::partition_key_hash(&self.partition_key)),
        }
    }
}

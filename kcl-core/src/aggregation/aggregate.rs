//! Packing user records into KPL aggregates (producer side).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::Message;
use prost::encoding::encoded_len_varint;

use super::proto::{self, SubRecord};
use super::{DIGEST_LEN, MAGIC};
use crate::routing;

/// Largest Kinesis record an aggregate may become (data plus partition key): 1 MiB, the Kinesis
/// record limit the KPL and `aws-kinesis-agg` pack up to.
pub const DEFAULT_MAX_AGGREGATE_BYTES: usize = 1024 * 1024;

/// Why a user record cannot be aggregated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregationError {
    /// The record alone does not fit in an aggregate of the configured size.
    #[error("user record of {size} bytes does not fit in an aggregate of at most {max} bytes")]
    RecordTooLarge {
        /// Encoded size the record needs.
        size: usize,
        /// The aggregate size limit.
        max: usize,
    },
    /// The partition key is empty or longer than 256 characters.
    #[error("partition key must have 1 to 256 characters")]
    InvalidPartitionKey,
    /// The explicit hash key is not a decimal in `0..2¹²⁸`.
    #[error("explicit hash key {0:?} is not a decimal in 0..2^128")]
    InvalidExplicitHashKey(String),
}

/// A finished aggregate, ready for PutRecord(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatedRecord {
    /// Partition key to put the aggregate with (the first user record's).
    pub partition_key: String,
    /// Explicit hash key to put the aggregate with (the first user record's, if it had one), so
    /// the aggregate lands in the shard of its first user record.
    pub explicit_hash_key: Option<String>,
    /// Magic, protobuf message and MD5.
    pub data: Bytes,
    /// Number of user records inside.
    pub user_records: usize,
}

/// Packs user records into aggregates no larger than a limit.
///
/// ```
/// use kcl_core::aggregation::{Aggregator, unpack};
/// # use kcl_core::model::*;
/// let mut agg = Aggregator::new();
/// assert!(agg.add("key-1", None, "one".into())?.is_none());
/// agg.add("key-2", None, "two".into())?;
/// let packed = agg.flush().expect("two records pending");
/// assert_eq!(packed.user_records, 2);
/// # let record = Record { data: packed.data, partition_key: "key-1".into(),
/// #     sequence_number: SequenceNumber::new("1").unwrap(), sub_sequence_number: 0,
/// #     explicit_hash_key: None, approximate_arrival_timestamp: std::time::SystemTime::now(), aggregated: false };
/// assert_eq!(unpack(&record).unwrap()[1].data, "two");
/// # Ok::<(), kcl_core::aggregation::AggregationError>(())
/// ```
#[derive(Debug)]
pub struct Aggregator {
    max_bytes: usize,
    partition_keys: Vec<String>,
    partition_key_index: HashMap<String, u64>,
    hash_keys: Vec<String>,
    hash_key_index: HashMap<String, u64>,
    records: Vec<SubRecord>,
    /// Encoded length of the protobuf message so far.
    message_len: usize,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

fn field_len(payload: usize) -> usize {
    1 + encoded_len_varint(payload as u64) + payload
}

impl Aggregator {
    /// An aggregator packing up to 1 MiB per aggregate.
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_AGGREGATE_BYTES)
    }

    /// An aggregator packing up to `max_bytes` (data plus partition key) per aggregate.
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            partition_keys: Vec::new(),
            partition_key_index: HashMap::new(),
            hash_keys: Vec::new(),
            hash_key_index: HashMap::new(),
            records: Vec::new(),
            message_len: 0,
        }
    }

    /// Number of user records waiting in the current aggregate.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no user record is waiting.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Size of the Kinesis record the current aggregate would make (data plus partition key).
    pub fn size_bytes(&self) -> usize {
        if self.records.is_empty() {
            return 0;
        }
        MAGIC.len() + self.message_len + DIGEST_LEN + self.partition_keys[0].len()
    }

    /// How much adding this record grows the message, and the size the Kinesis record would have.
    fn growth(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> (usize, usize) {
        let mut grow = 0;
        let pk_index = match self.partition_key_index.get(partition_key) {
            Some(i) => *i,
            None => {
                grow += field_len(partition_key.len());
                self.partition_keys.len() as u64
            }
        };
        let mut record_len = 1 + encoded_len_varint(pk_index) + field_len(data_len);
        if let Some(ehk) = explicit_hash_key {
            let ehk_index = match self.hash_key_index.get(ehk) {
                Some(i) => *i,
                None => {
                    grow += field_len(ehk.len());
                    self.hash_keys.len() as u64
                }
            };
            record_len += 1 + encoded_len_varint(ehk_index);
        }
        grow += field_len(record_len);
        let first_key = self
            .partition_keys
            .first()
            .map_or(partition_key.len(), String::len);
        (
            grow,
            MAGIC.len() + self.message_len + grow + DIGEST_LEN + first_key,
        )
    }

    /// Adds a user record. Returns the finished aggregate when this record did not fit in the
    /// current one (the record then starts the next aggregate).
    pub fn add(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: Bytes,
    ) -> Result<Option<AggregatedRecord>, AggregationError> {
        if !(1..=256).contains(&partition_key.chars().count()) {
            return Err(AggregationError::InvalidPartitionKey);
        }
        if let Some(ehk) = explicit_hash_key {
            routing::parse_explicit_hash_key(ehk)
                .ok_or_else(|| AggregationError::InvalidExplicitHashKey(ehk.to_string()))?;
        }
        let (_, alone) = Self::with_max_bytes(self.max_bytes).growth(
            partition_key,
            explicit_hash_key,
            data.len(),
        );
        if alone > self.max_bytes {
            return Err(AggregationError::RecordTooLarge {
                size: alone,
                max: self.max_bytes,
            });
        }
        let flushed =
            if self.growth(partition_key, explicit_hash_key, data.len()).1 > self.max_bytes {
                self.flush()
            } else {
                None
            };
        let (grow, _) = self.growth(partition_key, explicit_hash_key, data.len());
        self.message_len += grow;
        let partition_key_index = Some(intern(
            &mut self.partition_keys,
            &mut self.partition_key_index,
            partition_key,
        ));
        let explicit_hash_key_index =
            explicit_hash_key.map(|k| intern(&mut self.hash_keys, &mut self.hash_key_index, k));
        self.records.push(SubRecord {
            partition_key_index,
            explicit_hash_key_index,
            data: Some(data),
            tags: Vec::new(),
        });
        Ok(flushed)
    }

    /// Finishes the current aggregate, if any user record is waiting.
    pub fn flush(&mut self) -> Option<AggregatedRecord> {
        if self.records.is_empty() {
            return None;
        }
        let explicit_hash_key = self.records[0]
            .explicit_hash_key_index
            .map(|i| self.hash_keys[i as usize].clone());
        let message = proto::AggregatedRecord {
            partition_key_table: self.partition_keys.drain(..).map(Bytes::from).collect(),
            explicit_hash_key_table: self.hash_keys.drain(..).map(Bytes::from).collect(),
            records: std::mem::take(&mut self.records),
        };
        self.partition_key_index.clear();
        self.hash_key_index.clear();
        debug_assert_eq!(message.encoded_len(), self.message_len);
        self.message_len = 0;
        let mut buf = BytesMut::with_capacity(MAGIC.len() + message.encoded_len() + DIGEST_LEN);
        buf.put_slice(&MAGIC);
        message
            .encode(&mut buf)
            .expect("buffer sized to the message");
        let digest = Md5::digest(&buf[MAGIC.len()..]);
        buf.put_slice(&digest);
        Some(AggregatedRecord {
            partition_key: String::from_utf8(message.partition_key_table[0].to_vec())
                .expect("keys were added as strings"),
            explicit_hash_key,
            data: buf.freeze(),
            user_records: message.records.len(),
        })
    }
}

fn intern(table: &mut Vec<String>, index: &mut HashMap<String, u64>, key: &str) -> u64 {
    *index.entry(key.to_string()).or_insert_with(|| {
        table.push(key.to_string());
        table.len() as u64 - 1
    })
}

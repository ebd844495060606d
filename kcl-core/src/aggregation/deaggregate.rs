//! Unpacking KPL aggregates into user records.

use bytestring::ByteString;
use md5::{Digest, Md5};
use prost::Message;
use tracing::warn;

use super::proto::{AggregatedRecord, SubRecord};
use super::{DIGEST_LEN, MAGIC};
use crate::model::{HashKeyRange, Record, ShardId};
use crate::routing;

/// Why a Kinesis record was delivered as it is instead of being unpacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotAggregate {
    /// No KPL magic: an ordinary record.
    #[error("no KPL magic: an ordinary record")]
    NoMagic,
    /// The magic, but no room for a protobuf message and its MD5.
    #[error("KPL magic but only {len} bytes, too short for a message and its MD5")]
    TooShort {
        /// Length of the record data.
        len: usize,
    },
    /// The MD5 trailer does not match the message.
    #[error("MD5 trailer does not match the aggregated message")]
    Md5Mismatch,
    /// The message is not a valid protobuf `AggregatedRecord`.
    #[error("protobuf decode error: {0}")]
    Decode(String),
    /// A required field of a sub-record is missing.
    #[error("sub-record {sub_record} lacks its required field {field}")]
    MissingField {
        /// Index of the sub-record.
        sub_record: usize,
        /// The missing field.
        field: &'static str,
    },
    /// A sub-record refers to a table entry that does not exist.
    #[error("sub-record {sub_record} has {field} {index}, outside a table of {table_len}")]
    IndexOutOfRange {
        /// Index of the sub-record.
        sub_record: usize,
        /// `partition_key_index` or `explicit_hash_key_index`.
        field: &'static str,
        /// The index found.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
    /// An explicit hash key is not a decimal in [0, 2^128): Kinesis could not have routed a
    /// record by it, so the aggregate was not built by a KPL.
    #[error("explicit hash key {index} ({value:?}) is not a decimal in [0, 2^128)")]
    InvalidExplicitHashKey {
        /// Index in the explicit hash key table.
        index: usize,
        /// The key (up to 64 characters).
        value: String,
    },
}

impl NotAggregate {
    /// Whether the record claimed to be an aggregate (had the magic) but was not a valid one.
    pub fn is_malformed(&self) -> bool {
        !matches!(self, Self::NoMagic)
    }
}

/// Unpacks one Kinesis record. On success the user records carry the parent's sequence number
/// and arrival time, sub-sequence numbers `0..n`, their own partition key and explicit hash key,
/// and `aggregated = true`. Data is sliced from the parent's buffer, never copied.
pub fn unpack(record: &Record) -> Result<Vec<Record>, NotAggregate> {
    let mut users = Vec::new();
    unpack_checked(record, None, &mut users)?;
    Ok(users)
}

/// [`unpack`], also telling for each user record whether its hash key lies in `range`
/// (computed once per table entry, not per record).
fn unpack_checked(
    record: &Record,
    range: Option<HashKeyRange>,
    out: &mut Vec<Record>,
) -> Result<Vec<bool>, NotAggregate> {
    let data = &record.data;
    if !data.starts_with(&MAGIC) {
        return Err(NotAggregate::NoMagic);
    }
    // Exactly a digest after the magic is too short, as in the KCL: the message would be empty.
    if data.len() <= MAGIC.len() + DIGEST_LEN {
        return Err(NotAggregate::TooShort { len: data.len() });
    }
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    if Md5::digest(&body)[..] != data[body_end..] {
        return Err(NotAggregate::Md5Mismatch);
    }
    let message =
        AggregatedRecord::decode(body).map_err(|e| NotAggregate::Decode(e.to_string()))?;
    validate(&message)?;
    let AggregatedRecord {
        partition_key_table,
        explicit_hash_key_table,
        records,
    } = message;
    let partition_keys = utf8_table(partition_key_table, "partition key")?;
    let hash_keys = utf8_table(explicit_hash_key_table, "explicit hash key")?;
    if let Some((index, bad)) = hash_keys
        .iter()
        .enumerate()
        .find(|(_, k)| routing::parse_explicit_hash_key(k).is_none())
    {
        return Err(NotAggregate::InvalidExplicitHashKey {
            index,
            value: bad.chars().take(64).collect(),
        });
    }
    let inside = match range {
        None => Vec::new(),
        Some(range) => {
            let check = |hash: Option<u128>| hash.is_some_and(|h| range.contains(h));
            let mut pk_inside: Vec<Option<bool>> = vec![None; partition_keys.len()];
            let ehk_inside: Vec<bool> = hash_keys
                .iter()
                .map(|k| check(routing::parse_explicit_hash_key(k)))
                .collect();
            records
                .iter()
                .map(|sub| match sub.explicit_hash_key_index {
                    Some(e) => ehk_inside[e as usize],
                    None => {
                        let p = sub.partition_key_index.expect("validated") as usize;
                        *pk_inside[p].get_or_insert_with(|| {
                            check(Some(routing::partition_key_hash(&partition_keys[p])))
                        })
                    }
                })
                .collect()
        }
    };
    let mut partition_keys = KeyTable::new(
        partition_keys,
        records.iter().map(|r| r.partition_key_index),
    );
    let mut hash_keys = KeyTable::new(hash_keys, records.iter().map(|r| r.explicit_hash_key_index));
    out.reserve(records.len());
    out.extend(records.into_iter().enumerate().map(|(i, sub)| Record {
        data: sub.data.expect("validated"),
        partition_key: partition_keys.take(sub.partition_key_index.expect("validated")),
        sequence_number: record.sequence_number.clone(),
        sub_sequence_number: i as u64,
        explicit_hash_key: sub.explicit_hash_key_index.map(|x| hash_keys.take(x)),
        approximate_arrival_timestamp: record.approximate_arrival_timestamp,
        aggregated: true,
    }));
    Ok(inside)
}

/// A key table handing out its entries: the last user of an entry gets it moved, the others a
/// clone. With distinct keys (common) that halves the reference-count traffic per user record,
/// which is most of what unpacking costs besides the MD5.
struct KeyTable {
    keys: Vec<ByteString>,
    uses_left: Vec<u32>,
}

impl KeyTable {
    fn new(keys: Vec<ByteString>, indexes: impl Iterator<Item = Option<u64>>) -> Self {
        let mut uses_left = vec![0u32; keys.len()];
        for i in indexes.flatten() {
            uses_left[i as usize] += 1;
        }
        Self { keys, uses_left }
    }

    /// The entry at `index` (validated to be in the table).
    fn take(&mut self, index: u64) -> ByteString {
        let i = index as usize;
        self.uses_left[i] -= 1;
        if self.uses_left[i] == 0 {
            std::mem::take(&mut self.keys[i])
        } else {
            self.keys[i].clone()
        }
    }
}

/// Converts a key table to shared strings, rejecting invalid UTF-8 as the KPL's `string` type does.
fn utf8_table(table: Vec<bytes::Bytes>, what: &str) -> Result<Vec<ByteString>, NotAggregate> {
    table
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            ByteString::try_from(b)
                .map_err(|_| NotAggregate::Decode(format!("{what} table entry {i} is not UTF-8")))
        })
        .collect()
}

/// Checks every sub-record before any is delivered, so an aggregate is either unpacked whole or
/// passed through whole.
fn validate(message: &AggregatedRecord) -> Result<(), NotAggregate> {
    let index = |sub_record: usize, field: &'static str, index: u64, table_len: usize| {
        if index < table_len as u64 {
            Ok(())
        } else {
            Err(NotAggregate::IndexOutOfRange {
                sub_record,
                field,
                index,
                table_len,
            })
        }
    };
    for (
        i,
        SubRecord {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags,
        },
    ) in message.records.iter().enumerate()
    {
        let missing = |field| NotAggregate::MissingField {
            sub_record: i,
            field,
        };
        let pk = partition_key_index.ok_or_else(|| missing("partition_key_index"))?;
        index(
            i,
            "partition_key_index",
            pk,
            message.partition_key_table.len(),
        )?;
        if let Some(ehk) = explicit_hash_key_index {
            index(
                i,
                "explicit_hash_key_index",
                *ehk,
                message.explicit_hash_key_table.len(),
            )?;
        }
        if data.is_none() {
            return Err(missing("data"));
        }
        if tags.iter().any(|t| t.key.is_none()) {
            return Err(missing("tags.key"));
        }
    }
    Ok(())
}

/// What to do with user records whose hash key lies outside the shard's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashRangePolicy {
    /// Deliver them anyway (they will never appear in another shard), with a warning and a count.
    #[default]
    DeliverAndWarn,
    /// Drop only the user records outside the range, with a warning and a count.
    DropOutside,
    /// Drop the whole aggregate if any user record is outside, like the Java KCL — but with a
    /// warning and a count instead of silently.
    DropAggregate,
}

/// Counts of one or more deaggregation calls; add reports with `+=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeaggregationReport {
    /// Kinesis records looked at.
    pub kinesis_records: u64,
    /// User records produced.
    pub user_records: u64,
    /// Valid aggregates unpacked.
    pub aggregates: u64,
    /// Valid aggregates with no user records (nothing to deliver).
    pub empty_aggregates: u64,
    /// Ordinary records (no magic), delivered as they are.
    pub plain: u64,
    /// Records with the magic that were not valid aggregates, delivered as they are.
    pub malformed: u64,
    /// User records whose hash key was outside the shard's range (delivered or dropped per the
    /// policy).
    pub hash_range_outside: u64,
    /// User records dropped by the hash-range policy.
    pub hash_range_dropped: u64,
}

impl std::ops::AddAssign for DeaggregationReport {
    fn add_assign(&mut self, o: Self) {
        self.kinesis_records += o.kinesis_records;
        self.user_records += o.user_records;
        self.aggregates += o.aggregates;
        self.empty_aggregates += o.empty_aggregates;
        self.plain += o.plain;
        self.malformed += o.malformed;
        self.hash_range_outside += o.hash_range_outside;
        self.hash_range_dropped += o.hash_range_dropped;
    }
}

/// Unpacks the records of one shard, counting what it does.
#[derive(Debug, Clone, Default)]
pub struct Deaggregator {
    shard: Option<ShardId>,
    hash_range: Option<(HashKeyRange, HashRangePolicy)>,
}

impl Deaggregator {
    /// A deaggregator with no hash-range check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the shard in warnings.
    pub fn for_shard(mut self, shard: ShardId) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Checks every user record's hash key against `range` and applies `policy` to those
    /// outside. Costs one MD5 per distinct partition key of an aggregate.
    pub fn with_hash_range_check(mut self, range: HashKeyRange, policy: HashRangePolicy) -> Self {
        self.hash_range = Some((range, policy));
        self
    }

    /// Unpacks `records` in order into `out` and returns the counts.
    pub fn deaggregate_into(
        &self,
        records: impl IntoIterator<Item = Record>,
        out: &mut Vec<Record>,
    ) -> DeaggregationReport {
        let mut report = DeaggregationReport::default();
        for record in records {
            report.kinesis_records += 1;
            let before = out.len();
            match unpack_checked(&record, self.hash_range.map(|(r, _)| r), out) {
                Ok(inside) => {
                    report.aggregates += 1;
                    if out.len() == before {
                        report.empty_aggregates += 1;
                    }
                    self.apply_hash_range_policy(&record, before, &inside, out, &mut report);
                    report.user_records += (out.len() - before) as u64;
                }
                Err(reason) => {
                    if reason.is_malformed() {
                        report.malformed += 1;
                        warn!(
                            shard_id = ?self.shard,
                            sequence_number = %record.sequence_number,
                            %reason,
                            "malformed KPL aggregate delivered unchanged as one record"
                        );
                    } else {
                        report.plain += 1;
                    }
                    report.user_records += 1;
                    out.push(record);
                }
            }
        }
        report
    }

    /// Unpacks `records` into a new vector.
    pub fn deaggregate(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> (Vec<Record>, DeaggregationReport) {
        let mut out = Vec::new();
        let report = self.deaggregate_into(records, &mut out);
        (out, report)
    }

    /// Applies the hash-range policy to the user records `out[first..]` just unpacked.
    fn apply_hash_range_policy(
        &self,
        parent: &Record,
        first: usize,
        inside: &[bool],
        out: &mut Vec<Record>,
        report: &mut DeaggregationReport,
    ) {
        let Some((_, policy)) = self.hash_range else {
            return;
        };
        let outside = inside.iter().filter(|x| !**x).count() as u64;
        if outside == 0 {
            return;
        }
        report.hash_range_outside += outside;
        let action = match policy {
            HashRangePolicy::DeliverAndWarn => "delivered",
            HashRangePolicy::DropOutside => {
                report.hash_range_dropped += outside;
                let users = out.split_off(first);
                out.extend(
                    users
                        .into_iter()
                        .zip(inside)
                        .filter(|(_, i)| **i)
                        .map(|(u, _)| u),
                );
                "dropped"
            }
            HashRangePolicy::DropAggregate => {
                report.hash_range_dropped += inside.len() as u64;
                out.truncate(first);
                "dropped with the whole aggregate"
            }
        };
        warn!(
            shard_id = ?self.shard,
            sequence_number = %parent.sequence_number,
            outside,
            total = inside.len(),
            action,
            "user records of a KPL aggregate hash outside the shard's range"
        );
    }
}

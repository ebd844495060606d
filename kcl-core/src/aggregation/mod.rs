//! The KPL aggregate format: many user records packed into one Kinesis record.
//!
//! Layout: the magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the 16-byte MD5 of the
//! protobuf bytes. [`Deaggregator`] unpacks aggregates read from a shard; [`Aggregator`] packs
//! user records on the producer side within the KPL's limits.
//!
//! # What happens to bad input
//! Nothing is lost and nothing panics. A Kinesis record that is not a valid aggregate is delivered
//! unchanged as one record with sub-sequence 0, and counted in the [`DeaggregationReport`] by
//! reason. Records without the magic are ordinary records. Records with the magic but too short,
//! with an MD5 mismatch, a protobuf error, a missing required field, or a partition-key or
//! explicit-hash-key index outside its table are *malformed*: the KCL would deliver part of such an
//! aggregate and lose the rest; kcl-rs delivers the whole Kinesis record unchanged, logs a warning
//! with the sequence number and the reason, and counts it.
//!
//! # Hash-range check
//! The KCL silently drops a whole aggregate when any of its user records hashes outside the
//! shard's range (records aggregated outside the KPL, or across a reshard). kcl-rs makes this
//! explicit: the check is opt-in ([`Deaggregator::with_hash_range_check`]) and its
//! [`HashRangePolicy`] says what happens — deliver and warn (default), drop the outside records,
//! or drop the aggregate like the KCL — always with a warning naming the shard, sequence number
//! and count, and a counter.

mod aggregate;
mod deaggregate;
mod proto;

pub use aggregate::{AggregatedRecord, AggregationError, Aggregator, DEFAULT_MAX_AGGREGATE_BYTES};
pub use deaggregate::{DeaggregationReport, Deaggregator, HashRangePolicy, NotAggregate, unpack};

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

#[cfg(test)]
mod tests;

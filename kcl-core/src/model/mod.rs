//! The stream domain model: shards, sequence numbers, records, positions.

mod position;
mod record;
mod sequence;
mod shard;

pub use bytestring::ByteString;
pub use position::{InitialPosition, StartingPosition};
pub use record::Record;
pub use sequence::{
    ExtendedSequenceNumber, MAX_SEQUENCE_DIGITS, ParseCheckpointError, ParseSequenceNumberError,
    SequenceNumber,
};
pub use shard::{
    ChildShard, HashKeyRange, ParseStreamError, SequenceNumberRange, Shard, ShardId, StreamIdentity,
};

/// Parses a non-negative integer written the one way the KCL and DynamoDB write it: ASCII
/// digits, no sign, no leading zeros (except `0` itself). `None` for anything else.
pub fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

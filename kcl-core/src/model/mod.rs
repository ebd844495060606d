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
pub use shard::{ChildShard, HashKeyRange, SequenceNumberRange, Shard, ShardId, StreamIdentity};

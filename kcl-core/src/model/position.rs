//! Where reading a shard starts.

use std::time::SystemTime;

use super::SequenceNumber;

/// Where a worker starts reading a shard that has no lease yet (the KCL's
/// `InitialPositionInStream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialPosition {
    /// Only records put after the worker starts.
    #[default]
    Latest,
    /// The oldest record still retained.
    TrimHorizon,
    /// The first record that arrived at or after the given time.
    AtTimestamp(SystemTime),
}

/// The five shard-iterator types of GetShardIterator (and the starting positions of
/// SubscribeToShard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingPosition {
    /// At the record with this sequence number.
    AtSequenceNumber(SequenceNumber),
    /// Right after the record with this sequence number.
    AfterSequenceNumber(SequenceNumber),
    /// At the first record that arrived at or after this time.
    AtTimestamp(SystemTime),
    /// At the oldest retained record.
    TrimHorizon,
    /// After the newest record.
    Latest,
}

impl From<InitialPosition> for StartingPosition {
    fn from(p: InitialPosition) -> Self {
        match p {
            InitialPosition::Latest => Self::Latest,
            InitialPosition::TrimHorizon => Self::TrimHorizon,
            InitialPosition::AtTimestamp(t) => Self::AtTimestamp(t),
        }
    }
}

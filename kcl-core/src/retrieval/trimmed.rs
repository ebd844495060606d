//! Records that can no longer be read: trimmed past the stream's retention before this
//! application read them. Never passed over silently.
//!
//! Two ways to find out. A source that says so (DynamoDB Streams' `TrimmedDataAccessException`,
//! [`crate::kinesis::KinesisError::TrimmedData`]) fails the read. Kinesis does not: asked for a
//! trimmed position it answers from the oldest record it still has. So a shard consumer that
//! starts from a sequence checkpoint reads *at* the checkpointed record, and when the first
//! record that comes back is a later one, the checkpoint's record was trimmed and the records
//! between it and the first readable one may have been too ([`TrimmedGap`]).

use std::fmt;
use std::time::SystemTime;

use crate::model::SequenceNumber;

/// A span of a shard that can no longer be read.
///
/// Lost are the records after [`after`](Self::after) and before
/// [`first_readable`](Self::first_readable). Kinesis cannot tell whether any existed (an idle
/// shard's last record is trimmed too), so a gap found by reading means "may have been lost".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrimmedGap {
    /// The last position processed (the checkpoint); `None` when unknown.
    pub after: Option<SequenceNumber>,
    /// The oldest record still readable, when the read found one.
    pub first_readable: Option<SequenceNumber>,
    /// When that record arrived.
    pub first_readable_arrival: Option<SystemTime>,
    /// What the source said, when it said something.
    pub message: Option<String>,
}

impl TrimmedGap {
    /// A gap the source reported (the read failed) after `after`.
    pub fn reported(after: Option<SequenceNumber>, message: impl Into<String>) -> Self {
        Self {
            after,
            first_readable: None,
            first_readable_arrival: None,
            message: Some(message.into()),
        }
    }

    /// A gap found by reading: the record at `after` is gone and `first_readable` came first.
    pub fn found(
        after: SequenceNumber,
        first_readable: SequenceNumber,
        arrival: SystemTime,
    ) -> Self {
        Self {
            after: Some(after),
            first_readable: Some(first_readable),
            first_readable_arrival: Some(arrival),
            message: None,
        }
    }
}

impl fmt::Display for TrimmedGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("records trimmed before they were read: after ")?;
        match &self.after {
            Some(s) => write!(f, "{s}")?,
            None => f.write_str("the start")?,
        }
        match &self.first_readable {
            Some(s) => write!(f, " up to {s} (exclusive)")?,
            None => f.write_str(" up to the trim horizon")?,
        }
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

/// What a shard consumer does when records were trimmed before it read them.
///
/// In both cases the gap is logged at error level with the shard and the lost range and counted
/// in `TrimmedData` (labelled with the outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrimmedDataPolicy {
    /// Stop processing the shard and keep its lease, so no other worker passes over the gap
    /// either: the `ShardStopped` gauge is 1 and the scheduler is not ready (see
    /// [`crate::scheduler::SchedulerStatus::stopped_shards`]) until an operator acts — moves
    /// the checkpoint (`kclctl rewind --to trim-horizon`), which ends the lease and lets a
    /// consumer start there, or restarts the fleet with [`Self::ContinueAtTrimHorizon`].
    #[default]
    Stop,
    /// Count the gap and continue at the oldest record still readable (what the Java KCL and
    /// the DynamoDB Streams adapter do, without saying so).
    ContinueAtTrimHorizon,
}

impl TrimmedDataPolicy {
    /// The label value of the `TrimmedData` metric's `Outcome`.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Self::Stop => "stopped",
            Self::ContinueAtTrimHorizon => "continued",
        }
    }
}

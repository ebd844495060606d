//! Shards: the consumer task per held lease, the processor failure policy, and lineage.

pub(crate) mod consumer;
pub(crate) mod delivery;
mod failure;
pub mod lineage;
pub(crate) mod stopped;

pub use consumer::{CheckpointPolicy, ShutdownReason};
pub use delivery::BatchingWindow;
pub use failure::{DeadLetterHandler, Exhausted, FailurePolicy, ProcessorFailure, RetryLimit};

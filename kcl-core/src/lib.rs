//! kcl-core: consume Amazon Kinesis Data Streams the way the Kinesis Client Library does.
//!
//! This crate holds what every kcl-rs deployment needs, and depends on no AWS SDK crate: the
//! SDK adapters live in `kcl-aws` (Kinesis), `kcl-dynamo-leases`, `kcl-efo` and
//! `kcl-cloudwatch`.
//!
//! - [`error`]: the backend's error kept as the source of every typed error, and [`error::Report`]
//!   to print an error with its sources;
//! - [`model`]: shards, sequence numbers ordered numerically, the KCL's extended sequence numbers
//!   and sentinels, records, starting positions;
//! - [`kinesis`]: the data-plane trait shard consumers read through ([`kinesis::KinesisDataPlane`])
//!   and its typed errors;
//! - `engine` (feature `testing`): an in-memory Kinesis engine (streams, resharding, quotas,
//!   faults, push subscriptions) for running and testing a fleet with no AWS account;
//! - [`aggregation`]: the KPL aggregate format, unpacked and produced;
//! - [`lease`]: leases, the lease-store trait, the lease coordinator, the in-memory store
//!   (feature `testing`) and the conformance suite (feature `conformance`);
//! - [`processor`], [`checkpoint`]: what an application implements and checkpoints with;
//! - [`parallel`]: per-partition-key parallelism inside a shard, with a checkpoint watermark;
//! - [`scheduler`]: runs a worker: shard sync, leases, one consumer task per held lease;
//! - [`retrieval`], [`shard`]: polling, the shard consumer state machine, failure policy,
//!   lineage;
//! - `simulation` (feature `testing`): the deterministic fleet simulation and its ledger;
//! - `testing` (feature `testing`): a real checkpointer for unit-testing processors;
//! - [`telemetry`]: metric names, labels and levels, recorded through the `metrics` facade;
//! - `fault` (feature `testing`): the fault injector the in-memory backends share.

pub mod aggregation;
pub mod checkpoint;
mod clock;
#[cfg(feature = "testing")]
pub mod engine;
pub mod error;
#[cfg(feature = "testing")]
pub mod fault;
pub mod kinesis;
pub mod lease;
pub mod limits;
pub mod model;
pub mod parallel;
pub mod processor;
pub mod retrieval;
pub mod retry;
pub mod routing;
pub mod scheduler;
pub mod shard;
#[cfg(feature = "testing")]
pub mod simulation;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

/// Re-exported so processors need no direct dependency: `#[kcl_core::async_trait]` on an
/// `impl ShardRecordProcessor`.
pub use async_trait::async_trait;
/// Re-exported: the token [`scheduler::Scheduler::run`] stops on.
pub use tokio_util::sync::CancellationToken;

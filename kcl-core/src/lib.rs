//! kcl-core: consume Amazon Kinesis Data Streams the way the Kinesis Client Library does.
//!
//! This crate holds what every kcl-rs deployment needs, and depends on no AWS SDK crate: the
//! SDK adapters live in `kcl-aws` (Kinesis), `kcl-dynamo-leases`, `kcl-efo` and
//! `kcl-cloudwatch`. The guides (getting started, the processing API, testing, running a
//! fleet, migrating from the Java KCL or Lambda) are in the repository's `docs/`.
//!
//! # A tour
//!
//! An application implements [`processor::ShardRecordProcessor`]: one instance per shard it
//! holds a lease on, called with batches of records and a checkpointer. A
//! [`scheduler::Scheduler`], built by [`scheduler::SchedulerBuilder`] from a stream, an
//! application name, a [`lease::LeaseStore`] and a [`kinesis::KinesisDataPlane`], shares the
//! stream's shards with the other workers of the application through the lease table and runs
//! one task per held shard. In production the store is `kcl_dynamo_leases::DynamoLeaseStore`
//! and the data plane `kcl_aws::AwsKinesis`; with the `testing` feature both run in memory, so
//! a whole fleet runs inside a test:
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
//! use kcl_core::lease::InMemoryLeaseStore;
//! use kcl_core::model::InitialPosition;
//! use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
//! use kcl_core::scheduler::SchedulerBuilder;
//!
//! struct Collect(Arc<Mutex<Vec<String>>>);
//!
//! #[kcl_core::async_trait]
//! impl ShardRecordProcessor for Collect {
//!     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
//!         let data = input.records.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned());
//!         self.0.lock().unwrap().extend(data);
//!         input.checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//!
//! let kinesis = InMemoryKinesis::new();
//! let stream = kinesis.create_stream("orders", 2)?;
//! for i in 0..10 {
//!     kinesis.put_record("orders", PutRecordEntry::new(format!("key-{i}"), format!("order {i}"))).await?;
//! }
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let collected = seen.clone();
//! let scheduler = SchedulerBuilder::new(stream, "orders-app")
//!     .kinesis(Arc::new(kinesis))
//!     .lease_store(Arc::new(InMemoryLeaseStore::new()))
//!     .initial_position(InitialPosition::TrimHorizon)
//!     .processor_factory(move |_: &ShardInfo| Collect(collected.clone()))
//!     .build()?;
//! // Runs until every record was processed, then shuts down gracefully (checkpoints, leases
//! // handed off); under a paused clock this takes no real time.
//! kcl_core::testing::run_until(scheduler, Duration::from_secs(60), || seen.lock().unwrap().len() == 10)
//!     .await?;
//! assert!(seen.lock().unwrap().contains(&"order 7".to_string()));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "testing"))]
//! # fn main() {}
//! ```
//!
//! # Modules
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

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aggregation;
pub mod checkpoint;
mod clock;
#[cfg(feature = "testing")]
pub mod dynamodb_streams;
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

// The working set, from the crate root: what a consumer names to build, process and checkpoint.
pub use checkpoint::{CheckpointError, CheckpointHandle, Checkpointer};
pub use model::{InitialPosition, Record, StreamIdentity};
pub use processor::{
    ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
    ShardRecordProcessorFactory,
};
pub use retrieval::PollingConfig;
pub use scheduler::{
    RetrievalMode, RunEnd, RunReport, Scheduler, SchedulerBuilder, SchedulerError,
};
pub use shard::{BatchingWindow, CheckpointPolicy, Exhausted, FailurePolicy, RetryLimit};

/// Re-exported so processors need no direct dependency: `#[kcl_core::async_trait]` on an
/// `impl ShardRecordProcessor`.
pub use async_trait::async_trait;
/// Re-exported: the token [`scheduler::Scheduler::run`] stops on.
pub use tokio_util::sync::CancellationToken;

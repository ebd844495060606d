//! Leases: how a fleet of workers shares a stream with no other coordinator.
//!
//! - [`Lease`]: every field of the KCL lease table;
//! - [`LeaseStore`]: the table, as an async backend trait with conditional writes (its docs
//!   carry the contract);
//! - [`InMemoryLeaseStore`]: a linearizable in-memory table with fault injection and operation
//!   counts;
//! - [`DeadlineStore`]: any store with a deadline on every call (the coordinator wraps its
//!   store in one, and records each call's latency and failures there);
//! - `conformance` (feature `conformance`): the suite every store runs, through
//!   `kcl_core::lease_store_conformance!`;
//! - the lease coordinator (configured by [`CoordinatorConfig`]): one per worker; renews, detects expiry, takes and balances leases,
//!   hands them off on shutdown, and reports what it gained and lost.

#[cfg(feature = "conformance")]
pub mod conformance;
mod coordinator;
mod deadline;
mod error;
#[cfg(feature = "testing")]
mod memory;
mod model;
mod scope;
mod store;

pub use coordinator::{CoordinatorConfig, CoordinatorConfigError};
/// The lease coordinator the scheduler runs on: an engine part, not a supported API (its call
/// order lives in the scheduler); public for the benchmarks and tests of this repository.
#[doc(hidden)]
pub use coordinator::{
    HeldLeaseError, LeaseCoordinator, LeaseEvent, LeaseFilter, LeaseToken, LostReason,
};
pub use deadline::DeadlineStore;
pub use error::LeaseError;
#[cfg(feature = "testing")]
pub use memory::{InMemoryLeaseStore, LeaseOperation, LeaseStoreStats};
pub use model::{
    CheckpointUpdate, Lease, MultiStreamKey, MultiStreamShard, ParseLeaseKeyError, RenewalStamp,
};
pub use scope::LeaseScope;
pub use store::{LeaseListing, LeaseStore, StoreCapabilities};

/// `KCL_TEST_LOG`-filtered logs in virtual time, for tests of other modules.
#[cfg(test)]
pub(crate) fn coordinator_test_logging() {
    coordinator::tests::init_logging();
}

//! The shared LeaseStore conformance suite against the in-memory store.

use std::sync::Arc;

use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};

kcl_core::lease_store_conformance!(|| async {
    Arc::new(InMemoryLeaseStore::new()) as Arc<dyn LeaseStore>
});

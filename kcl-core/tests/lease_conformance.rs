//! The shared LeaseStore conformance suite against the in-memory store, with and without
//! inboxes (a store that lacks them must say so and refuse posts).

use std::sync::Arc;

use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};

kcl_core::lease_store_conformance!(|| async {
    Arc::new(InMemoryLeaseStore::new()) as Arc<dyn LeaseStore>
});

mod without_inboxes {
    use super::*;

    kcl_core::lease_store_conformance!(|| async {
        Arc::new(InMemoryLeaseStore::new().without_inboxes()) as Arc<dyn LeaseStore>
    });
}

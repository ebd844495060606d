//! The shared LeaseStore conformance suite against DynamoDB on moto, with the same macro as the
//! in-memory store. Each case gets its own table.

use std::sync::Arc;

use kcl_core::lease::LeaseStore;
use kcl_tests::{emulator, lease_table};

async fn store() -> Option<Arc<dyn LeaseStore>> {
    let endpoint = emulator("KCL_DYNAMODB_ENDPOINT")?;
    Some(Arc::new(lease_table(&endpoint, "conformance").await))
}

kcl_core::lease_store_conformance!(store);

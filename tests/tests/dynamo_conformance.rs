//! The shared LeaseStore conformance suite against DynamoDB on moto, with the same macro as the
//! in-memory store. Each case gets its own table.

use std::sync::Arc;

use kcl_core::lease::LeaseStore;
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use kcl_tests::{emulator, emulator_config, unique};

async fn store() -> Option<Arc<dyn LeaseStore>> {
    let endpoint = emulator("KCL_DYNAMODB_ENDPOINT")?;
    let config = emulator_config(&endpoint).await;
    let store = DynamoLeaseStore::from_config(&config, unique("conformance"));
    store
        .create_table_if_missing(&TableOptions::default())
        .await
        .expect("create the lease table");
    Some(Arc::new(store))
}

kcl_core::lease_store_conformance!(store);

//! The shared LeaseStore conformance suite against DynamoDB on moto, with the same macro as the
//! in-memory store. Each case gets its own table. Run twice: as moto answers, and with failed
//! conditions stripped of the old item, as some DynamoDB-compatible services answer them.

use std::sync::Arc;

use kcl_core::lease::LeaseStore;
use kcl_tests::{emulator, lease_table, lease_table_without_old_items};

async fn store() -> Option<Arc<dyn LeaseStore>> {
    let endpoint = emulator("KCL_DYNAMODB_ENDPOINT")?;
    Some(Arc::new(lease_table(&endpoint, "conformance").await))
}

kcl_core::lease_store_conformance!(store);

mod without_old_items {
    use super::*;

    async fn store() -> Option<Arc<dyn LeaseStore>> {
        let endpoint = emulator("KCL_DYNAMODB_ENDPOINT")?;
        Some(Arc::new(
            lease_table_without_old_items(&endpoint, "conformance-no-old").await,
        ))
    }

    kcl_core::lease_store_conformance!(store);

    /// The interceptor really strips the item: a failed condition on an existing lease comes
    /// back without it, and the store still answers ConditionFailed (not NotFound).
    #[tokio::test]
    async fn a_stale_write_is_a_failed_condition_not_a_missing_lease() {
        let Some(store) = store().await else { return };
        let lease = kcl_core::lease::Lease::new(
            &kcl_core::model::ShardId::from_index(0),
            kcl_core::model::ExtendedSequenceNumber::TrimHorizon,
        );
        store.create_if_absent(&lease).await.unwrap();
        let taken = store.take(&lease, "w1").await.unwrap();
        let stale = store.take(&lease, "w2").await;
        assert!(
            matches!(
                stale,
                Err(kcl_core::lease::LeaseError::ConditionFailed { .. })
            ),
            "{stale:?}"
        );
        assert_eq!(store.get(&lease.key).await.unwrap(), Some(taken));
    }
}

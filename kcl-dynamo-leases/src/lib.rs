//! DynamoDB lease table for kcl-rs.
//!
//! [`DynamoLeaseStore`] implements kcl-core's `LeaseStore` over `aws-sdk-dynamodb` and reads and
//! writes the Java KCL 2.x/3.x lease item schema attribute for attribute ([`item::attr`]), so a
//! Java fleet's table can be taken over without losing checkpoints. Every write that can race is
//! a conditional `UpdateItem`/`PutItem`/`DeleteItem`; reads that decide anything are strongly
//! consistent; `list` pages through `Scan`. An item that does not parse is reported with its key
//! (`LeaseError::Malformed`) and skipped — it never stops a worker.
//!
//! ```no_run
//! # async fn example() -> Result<(), kcl_core::lease::LeaseError> {
//! use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
//! let config = aws_types::SdkConfig::builder().build();
//! let store = DynamoLeaseStore::from_config(&config, "my-application");
//! store.create_table_if_missing(&TableOptions::default()).await?;
//! # Ok(()) }
//! ```

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
pub mod item;
mod store;
mod table;

pub use store::DynamoLeaseStore;
pub use table::{
    Billing, LEASE_OWNER_INDEX, LeaseTable, TableChange, TableDescription, TableOptions,
};

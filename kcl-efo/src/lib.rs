//! Enhanced fan-out retrieval for kcl-rs.
//!
//! This crate will hold stream-consumer registration (RegisterStreamConsumer, wait until ACTIVE)
//! and a records publisher over `SubscribeToShard` that the scheduler can use in place of polling
//! with one configuration switch. The in-memory shard engine in kcl-core already offers a push
//! subscription with SubscribeToShard semantics, so this crate's tests can drive expiry, errors and
//! shard end deterministically. Until that work lands the crate is intentionally empty.

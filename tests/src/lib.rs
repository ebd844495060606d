//! Cross-crate and end-to-end tests of kcl-rs.
//!
//! The tests live in `tests/tests/`. They drive the public APIs the way an application does: the
//! in-memory engine through the data-plane trait today, the scheduler and the AWS backends on
//! emulators as those land. Shared helpers for checking what a run delivered live here.

use std::collections::BTreeMap;

use kcl_core::model::Record;

/// Groups user records by partition key, keeping their order, with each record's data as text.
pub fn by_partition_key(records: &[Record]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        out.entry(r.partition_key.to_string())
            .or_default()
            .push(String::from_utf8_lossy(&r.data).into_owned());
    }
    out
}

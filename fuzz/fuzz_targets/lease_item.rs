//! A lease table item built from fuzz input: attribute names mostly from the KCL's schema (so
//! the parser's checks are reached), values of every DynamoDB type with fuzzed text. Parsing
//! never panics, and whatever parses writes back (`to_item`) as an item that parses to the same
//! lease: nothing read from a table is changed by our own write of it.
#![no_main]

use arbitrary::Arbitrary;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kcl_dynamo_leases::item::{Item, attr, from_item, to_item};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 20] = [
    attr::LEASE_KEY,
    attr::LEASE_OWNER,
    attr::LEASE_COUNTER,
    attr::CHECKPOINT,
    attr::CHECKPOINT_SUB,
    attr::OWNER_SWITCHES,
    attr::PENDING,
    attr::PENDING_SUB,
    attr::PENDING_STATE,
    attr::PARENTS,
    attr::CHILDREN,
    attr::STARTING_HASH_KEY,
    attr::ENDING_HASH_KEY,
    attr::CHECKPOINT_OWNER,
    attr::THROUGHPUT,
    attr::STREAM_NAME,
    attr::SHARD_ID,
    attr::ENTITY_TYPE,
    "leaseKey",
    "somethingElse",
];

#[derive(Arbitrary, Debug)]
enum Value {
    S(String),
    N(String),
    B(Vec<u8>),
    Ss(Vec<String>),
    Bool(bool),
    Null,
}

#[derive(Arbitrary, Debug)]
struct Attribute {
    name: u8,
    value: Value,
}

fuzz_target!(|attrs: Vec<Attribute>| {
    let mut item = Item::new();
    for a in attrs {
        let value = match a.value {
            Value::S(v) => AttributeValue::S(v),
            Value::N(v) => AttributeValue::N(v),
            Value::B(v) => AttributeValue::B(Blob::new(v)),
            Value::Ss(v) => AttributeValue::Ss(v),
            Value::Bool(v) => AttributeValue::Bool(v),
            Value::Null => AttributeValue::Null(true),
        };
        item.insert(NAMES[usize::from(a.name) % NAMES.len()].to_string(), value);
    }
    if let Ok(lease) = from_item(&item) {
        let again = from_item(&to_item(&lease)).expect("a lease we write must read back");
        assert_eq!(again, lease);
    }
});

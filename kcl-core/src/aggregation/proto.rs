//! The KPL's protobuf messages (proto2), decoded with prost. Fields the schema marks `required`
//! are `Option`s here so a missing one is detected instead of silently defaulted.

use bytes::Bytes;

/// `AggregatedRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregatedRecord {
    // Strings on the wire; decoded as zero-copy slices and checked for UTF-8 once, when
    // converted to `ByteString`s that share the aggregate's buffer: no allocation per key.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(crate) partition_key_table: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub(crate) explicit_hash_key_table: Vec<Bytes>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) records: Vec<SubRecord>,
}

/// `Record` inside an aggregate.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SubRecord {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub(crate) explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub(crate) data: Option<Bytes>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) tags: Vec<Tag>,
}

/// `Tag` (carried, never interpreted).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tag {
    #[prost(string, optional, tag = "1")]
    pub(crate) key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) value: Option<String>,
}

//! A string as a multi-stream lease key (`account:stream:creationEpoch:shardId`). Parsing never
//! panics, and a key that parses is canonical: it prints back as the very same text, so lookups
//! by the key's text and by its parts agree.
#![no_main]

use kcl_core::lease::MultiStreamKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|key: &str| {
    if let Ok(k) = key.parse::<MultiStreamKey>() {
        assert_eq!(k.to_string(), key);
        assert_eq!(format!("{}:{}", k.stream_identifier(), k.shard_id), key);
        assert_eq!(key.parse::<MultiStreamKey>().unwrap(), k);
    }
});

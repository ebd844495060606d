//! How Kinesis maps a record to a shard: MD5 of the partition key, or an explicit hash key.

use md5::{Digest, Md5};

/// MD5 of the UTF-8 partition key, read as a big-endian unsigned 128-bit integer.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Parses an explicit hash key: a decimal integer in `0..2¹²⁸`.
pub fn parse_explicit_hash_key(key: &str) -> Option<u128> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// The hash key that routes a record: the explicit hash key if given, else the partition key's
/// MD5. `None` when the explicit hash key is not a valid 128-bit decimal.
pub fn effective_hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> Option<u128> {
    match explicit_hash_key {
        Some(k) => parse_explicit_hash_key(k),
        None => Some(partition_key_hash(partition_key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_routing_matches_known_values() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(partition_key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(partition_key_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn explicit_hash_keys_are_validated() {
        assert_eq!(parse_explicit_hash_key("0"), Some(0));
        assert_eq!(
            parse_explicit_hash_key(&u128::MAX.to_string()),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_explicit_hash_key("-1"), None);
        assert_eq!(parse_explicit_hash_key(""), None);
        assert_eq!(effective_hash_key("a", Some("5")), Some(5));
    }
}

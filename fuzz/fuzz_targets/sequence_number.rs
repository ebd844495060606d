//! Two strings as sequence numbers and checkpoints. Parsing never panics; a number that parses
//! prints in canonical form and reads back equal; the packed-decimal ordering agrees with the
//! ordering of the numbers' values (compared here as digit strings without leading zeros).
#![no_main]

use std::cmp::Ordering;

use kcl_core::model::{ExtendedSequenceNumber, SequenceNumber, parse_canonical_u64};
use kcl_core::routing::parse_explicit_hash_key;
use libfuzzer_sys::fuzz_target;

fn canonical(digits: &str) -> &str {
    let t = digits.trim_start_matches('0');
    if t.is_empty() { "0" } else { t }
}

fn by_value(a: &str, b: &str) -> Ordering {
    let (a, b) = (canonical(a), canonical(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fuzz_target!(|input: (&str, &str, u64)| {
    let (a, b, sub) = input;
    for s in [a, b] {
        if let Ok(n) = SequenceNumber::new(s) {
            assert_eq!(n.to_string(), canonical(s));
            assert_eq!(SequenceNumber::new(&n.to_string()).unwrap(), n);
        }
        if let Ok(c) = ExtendedSequenceNumber::parse(s, sub) {
            let again = ExtendedSequenceNumber::parse(&c.checkpoint_value(), c.sub_sequence()).unwrap();
            assert_eq!(again, c);
        }
        if let Some(v) = parse_canonical_u64(s) {
            assert_eq!(v.to_string(), s);
        }
        if let Some(k) = parse_explicit_hash_key(s) {
            assert_eq!(k.to_string(), canonical(s));
        }
    }
    if let (Ok(x), Ok(y)) = (SequenceNumber::new(a), SequenceNumber::new(b)) {
        assert_eq!(x.cmp(&y), by_value(a, b), "{a:?} vs {b:?}");
        assert_eq!(x == y, by_value(a, b) == Ordering::Equal);
    }
});

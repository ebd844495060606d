//! A string as a stream name or ARN (worker settings, multi-stream configuration). Parsing never
//! panics; what parses names a valid stream, and an ARN yields its 12-digit account.
#![no_main]

use kcl_core::model::StreamIdentity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(s) = StreamIdentity::parse(text) {
        assert!((1..=128).contains(&s.name.len()));
        assert!(s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
        match &s.arn {
            Some(arn) => {
                assert_eq!(&**arn, text);
                let account = s.account_id().expect("an ARN has an account");
                assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
                assert!(text.ends_with(&format!(":stream/{}", s.name)));
            }
            None => assert_eq!(&*s.name, text),
        }
    }
});

//! kcl-aws: what kcl-rs needs from the AWS SDK, kept out of kcl-core so that its traits, errors
//! and semver carry no SDK type.
//!
//! - [`AwsKinesis`] (feature `kinesis`, default): the [`KinesisDataPlane`] over
//!   `aws-sdk-kinesis`, and the conversions `kcl-efo` builds its fan-out client on;
//! - [`dead_letter`]: dead-letter destinations for the bounded failure policy — a Kinesis stream
//!   ([`dead_letter::KinesisDeadLetter`], feature `kinesis`) and an SQS queue
//!   ([`dead_letter::SqsDeadLetter`], feature `sqs`);
//! - [`is_credentials_error`], [`error_chain`], [`sdk_error::map_err`]: how every kcl-rs SDK
//!   adapter classifies and reports SDK errors.
//!
//! The SDK's HTTP client, TLS stack and async runtime are the application's choice: this crate
//! enables none of them. Build the `SdkConfig` with `aws-config` and the features you want
//! (e.g. `rt-tokio`, `default-https-client`, `credentials-process`, and `sso` if you log in
//! with IAM Identity Center).
//!
//! [`KinesisDataPlane`]: kcl_core::kinesis::KinesisDataPlane

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod dead_letter;
#[cfg(feature = "kinesis")]
pub mod kinesis;
pub mod sdk_error;

#[cfg(feature = "kinesis")]
pub use kinesis::AwsKinesis;

/// Whether an SDK error was caused by the credentials provider (none found, a profile that
/// does not parse, an expired SSO session): the request was never sent. Found by type in the
/// error's source chain, not by its text.
pub fn is_credentials_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An SDK timestamp as a `SystemTime` (every AWS SDK crate shares the type).
pub fn system_time(t: &aws_smithy_types::DateTime) -> std::time::SystemTime {
    use std::time::{Duration, SystemTime};
    let secs = t.secs();
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    base + Duration::from_nanos(u64::from(t.subsec_nanos()))
}

/// An error and its sources, joined with `: ` (SDK errors say little at the top level); the
/// same text as [`kcl_core::error::Report`].
pub fn error_chain(e: &dyn std::error::Error) -> String {
    kcl_core::error::Report(e).to_string()
}

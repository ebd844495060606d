//! The Kinesis data plane over `aws-sdk-kinesis` (feature `aws`, on by default).
//!
//! [`AwsKinesis`] implements [`KinesisDataPlane`](crate::kinesis::KinesisDataPlane) for any
//! `SdkConfig` — a region and credentials chain for AWS, or a custom endpoint for an emulator.
//! No SDK type appears in kcl-core's traits or errors: SDK errors are mapped to
//! [`KinesisError`](crate::kinesis::KinesisError) here.

mod kinesis;

pub use kinesis::{AwsKinesis, child, is_credentials_error, map_err, record, starting_position};

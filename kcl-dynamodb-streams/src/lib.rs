//! kcl-dynamodb-streams: a DynamoDB table's change stream as a kcl-rs source — leases,
//! checkpoints, lineage, failover and MultiLang as for Kinesis, without a JVM.
//!
//! - [`DynamoDbStreams`]: the DynamoDB Streams data plane behind kcl-core's
//!   [`KinesisDataPlane`](kcl_core::kinesis::KinesisDataPlane) seam; hand it to a
//!   `SchedulerBuilder` with a stream identity from [`stream`];
//! - [`ChangeRecord`]: each record's data, typed (event, keys, images as DynamoDB items), with
//!   conversion into your own types through `serde_dynamo`.
//!
//! ```no_run
//! # async fn run(sdk: aws_types::SdkConfig, leases: std::sync::Arc<dyn kcl_core::lease::LeaseStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kcl_core::model::InitialPosition;
//! use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
//! use kcl_core::scheduler::SchedulerBuilder;
//! use kcl_dynamodb_streams::{ChangeRecord, DynamoDbStreams};
//!
//! struct Printer;
//!
//! #[kcl_core::async_trait]
//! impl ShardRecordProcessor for Printer {
//!     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
//!         for record in input.records {
//!             let change = ChangeRecord::from_record(record)?;
//!             println!("{:?} {:?}", change.kind, change.dynamodb.keys);
//!         }
//!         input.checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//!
//! let stream = kcl_dynamodb_streams::stream(
//!     "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000",
//! )?;
//! let scheduler = SchedulerBuilder::new(stream, "orders-consumer")
//!     .kinesis(Arc::new(DynamoDbStreams::new(&sdk)))
//!     .lease_store(leases)
//!     .initial_position(InitialPosition::TrimHorizon)
//!     .processor_factory(|_: &ShardInfo| Printer)
//!     .build()?;
//! scheduler.run(kcl_core::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod plane;
mod record;

use std::sync::Arc;

use kcl_core::model::StreamIdentity;

pub use plane::{
    ADAPTER_CREATION_EPOCH, ADAPTER_HASH_RANGE, DynamoDbStreams, DynamoDbStreamsConfig,
    MAX_DESCRIBE_LIMIT, MAX_GET_RECORDS_LIMIT,
};
pub use record::{ChangeKind, ChangeRecord, ChangeRecordError, StreamRecord, UserIdentity};

/// A stream ARN that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DynamoDB stream ARN {value:?}: {reason}")]
#[non_exhaustive]
pub struct StreamArnError {
    /// What was given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// The identity of a table's stream, from its ARN
/// (`arn:<partition>:dynamodb:<region>:<account>:table/<table>/stream/<label>`), called by the
/// ARN and named as the Java adapter names it — `region$account$table$label`, with `:` in the
/// label written `_` — so multi-stream lease keys (`account:name:1:shardId`) and metrics match
/// an adapter fleet's.
pub fn stream(arn: &str) -> Result<StreamIdentity, StreamArnError> {
    let err = |reason| StreamArnError {
        value: arn.chars().take(300).collect(),
        reason,
    };
    let form = "the form is arn:partition:dynamodb:region:account:table/TABLE/stream/LABEL";
    let rest = arn.strip_prefix("arn:").ok_or_else(|| err(form))?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [partition, service, region, account, resource] = parts[..] else {
        return Err(err(form));
    };
    if partition.is_empty() || service != "dynamodb" || region.is_empty() {
        return Err(err(form));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the account id is 12 digits"));
    }
    let (table, label) = resource
        .strip_prefix("table/")
        .and_then(|r| r.split_once("/stream/"))
        .ok_or_else(|| err(form))?;
    if table.is_empty() || table.len() > 255 || label.is_empty() {
        return Err(err("the table name and the stream label must not be empty"));
    }
    let name = format!("{region}${account}${table}${}", label.replace(':', "_"));
    Ok(StreamIdentity {
        name: Arc::from(name),
        arn: Some(Arc::from(arn)),
    })
}

/// The identity of the stream the Java adapter names `region$account$table$label` (the stream
/// part of its multi-stream lease keys), with its ARN rebuilt; `None` for any other name.
pub fn stream_from_name(name: &str) -> Option<StreamIdentity> {
    let mut parts = name.split('$');
    let (Some(region), Some(account), Some(table), Some(label), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let arn = format!(
        "arn:{partition}:dynamodb:{region}:{account}:table/{table}/stream/{}",
        label.replace('_', ":")
    );
    stream(&arn).ok()
}

/// Whether `arn` names a DynamoDB stream (rather than a Kinesis stream).
pub fn is_stream_arn(arn: &str) -> bool {
    stream(arn).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arns_parse_or_say_what_is_wrong() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-08T01:23:03.546077";
        let s = stream(arn).unwrap();
        assert_eq!(
            &*s.name,
            "us-east-1$123456789012$orders$2026-12-08T01_23_03.546077"
        );
        assert_eq!(s.arn.as_deref(), Some(arn));
        for bad in [
            "orders",
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
            "arn:aws:dynamodb:us-east-1:123:table/orders/stream/x",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
            "arn:aws:dynamodb:us-east-1:123456789012:table//stream/x",
        ] {
            assert!(stream(bad).is_err(), "{bad}");
        }
        let back = stream_from_name(&s.name).unwrap();
        assert_eq!(back, s, "the adapter's name leads back to the ARN");
        assert!(stream_from_name("orders").is_none());
    }
}

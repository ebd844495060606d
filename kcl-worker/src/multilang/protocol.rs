//! The KCL MultiLang protocol's messages: JSON objects, one per line, told apart by `action`.
//! Read from the Java MultiLangDaemon's `multilang.messages` and the client libraries
//! (`amazon_kclpy/messages.py`, `aws-kcl`'s `kcl_process.js`).

use base64::Engine;
use kcl_core::model::{ExtendedSequenceNumber, Record};
use serde::{Deserialize, Serialize};

/// What the worker sends to the child.
#[derive(Debug, Serialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub(crate) enum ToChild<'a> {
    /// Before anything else, with where processing resumes.
    Initialize {
        shard_id: &'a str,
        sequence_number: String,
        sub_sequence_number: u64,
    },
    /// A batch.
    ProcessRecords {
        records: Vec<WireRecord>,
        millis_behind_latest: u64,
    },
    /// The answer to the child's `checkpoint`: its numbers echoed, and the error's name (the
    /// Java exception's simple name, which the libraries map to exceptions) or null.
    Checkpoint {
        sequence_number: Option<String>,
        sub_sequence_number: Option<u64>,
        error: Option<&'static str>,
    },
    /// The lease is gone: no checkpoint is possible.
    LeaseLost {},
    /// Every record of the closed shard was delivered: checkpoint to finish it.
    ShardEnded {},
    /// The worker is stopping (or handing the lease over): checkpoint what is done.
    ShutdownRequested {},
}

/// A record as the libraries read it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireRecord {
    action: &'static str,
    data: String,
    partition_key: String,
    sequence_number: String,
    sub_sequence_number: u64,
    approximate_arrival_timestamp: u64,
}

impl From<&Record> for WireRecord {
    fn from(r: &Record) -> Self {
        Self {
            action: "record",
            data: base64::engine::general_purpose::STANDARD.encode(&r.data),
            partition_key: r.partition_key.to_string(),
            sequence_number: r.sequence_number.to_string(),
            sub_sequence_number: r.sub_sequence_number,
            approximate_arrival_timestamp: r
                .approximate_arrival_timestamp
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// `initialize`'s position: the digits of a sequence checkpoint, or the sentinel's name.
pub(crate) fn position(checkpoint: &ExtendedSequenceNumber) -> (String, u64) {
    match checkpoint {
        ExtendedSequenceNumber::Sequence {
            sequence,
            sub_sequence,
        } => (sequence.to_string(), *sub_sequence),
        other => (other.checkpoint_value().into_owned(), 0),
    }
}

/// What the child sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub(crate) enum FromChild {
    /// A checkpoint request: at the last delivered record (no numbers) or at a position.
    Checkpoint {
        #[serde(default)]
        sequence_number: Option<String>,
        #[serde(default)]
        sub_sequence_number: Option<u64>,
    },
    /// The child finished handling `response_for`.
    Status { response_for: String },
}

/// One line of the child's stdout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A protocol message.
    Message(FromChild),
    /// Blank, or not a JSON object: something the child printed (the Java daemon skips these).
    Other,
    /// A JSON object that is not a protocol message.
    Invalid(String),
}

pub(crate) fn parse(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() {
        return Line::Other;
    }
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value @ serde_json::Value::Object(_)) => match serde_json::from_value(value) {
            Ok(m) => Line::Message(m),
            Err(e) => Line::Invalid(format!("{e}: {line}")),
        },
        _ => Line::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kcl_core::model::SequenceNumber;

    #[test]
    fn messages_to_the_child_are_the_libraries_json() {
        let init = ToChild::Initialize {
            shard_id: "shardId-000000000001",
            sequence_number: "TRIM_HORIZON".into(),
            sub_sequence_number: 0,
        };
        assert_eq!(
            serde_json::to_string(&init).unwrap(),
            r#"{"action":"initialize","shardId":"shardId-000000000001","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"#
        );
        let record = Record::new(SequenceNumber::from_u128(42), "k", Bytes::from("hi"));
        let batch = ToChild::ProcessRecords {
            records: vec![WireRecord::from(&record)],
            millis_behind_latest: 7,
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.starts_with(r#"{"action":"processRecords","records":[{"action":"record","data":"aGk=","partitionKey":"k","sequenceNumber":"42","subSequenceNumber":0,"approximateArrivalTimestamp":"#), "{json}");
        assert!(json.ends_with(r#"}],"millisBehindLatest":7}"#), "{json}");
        let answer = ToChild::Checkpoint {
            sequence_number: Some("42".into()),
            sub_sequence_number: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"action":"checkpoint","sequenceNumber":"42","subSequenceNumber":null,"error":null}"#
        );
        assert_eq!(
            serde_json::to_string(&ToChild::ShutdownRequested {}).unwrap(),
            r#"{"action":"shutdownRequested"}"#
        );
    }

    #[test]
    fn lines_from_the_child_are_messages_chatter_or_invalid() {
        // kclpy: a blank line, then pretty-spaced JSON.
        assert_eq!(parse(""), Line::Other);
        assert_eq!(
            parse(r#"{"action": "checkpoint", "sequenceNumber": null, "subSequenceNumber": null}"#),
            Line::Message(FromChild::Checkpoint {
                sequence_number: None,
                sub_sequence_number: None
            })
        );
        assert_eq!(
            parse(r#"{"action": "status", "responseFor": "initialize"}"#),
            Line::Message(FromChild::Status {
                response_for: "initialize".into()
            })
        );
        assert_eq!(parse("Was throttled while checkpointing"), Line::Other);
        assert_eq!(parse("[1, 2]"), Line::Other);
        assert!(matches!(parse(r#"{"action": "dance"}"#), Line::Invalid(_)));
        assert!(matches!(
            parse(r#"{"action": "status", "responseFor": 3}"#),
            Line::Invalid(_)
        ));
    }
}

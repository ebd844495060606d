//! Dead-letter destinations that exist: a Kinesis stream ([`KinesisDeadLetter`], feature
//! `kinesis`) and an SQS queue ([`SqsDeadLetter`], feature `sqs`), for
//! `FailurePolicy::RetryThen { then: Exhausted::DeadLetter(..) }` or key-parallel's
//! `RecordExhausted::DeadLetter`.
//!
//! Each failed user record becomes one JSON document ([`DeadLetterRecord`]): where it came
//! from (stream, shard, lease key), its position (sequence and sub-sequence number), its partition
//! key, arrival time, the failure, and its data in base64. Data that would not fit the
//! destination's size limit is left out (`dataOmitted` says why); the position still lets it be
//! read again from the source stream while it is retained.
//!
//! A call stores every record or fails: entries the service refused are resent a few times, and
//! whatever still fails makes the call fail, which the shard consumer retries — so a record may
//! land twice, never zero times (the `DeadLetterHandler` contract).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use kcl_core::model::Record;
#[cfg(any(feature = "kinesis", feature = "sqs"))]
use kcl_core::processor::ProcessorError;
use kcl_core::processor::ShardInfo;
use kcl_core::shard::ProcessorFailure;
use serde::{Deserialize, Serialize};

/// The JSON document a dead-lettered record becomes (camelCase field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// The source stream's name.
    pub stream_name: String,
    /// The source stream's ARN, when known.
    pub stream_arn: Option<String>,
    /// The shard the record was read from.
    pub shard_id: String,
    /// The lease key (the shard id, or a multi-stream key).
    pub lease_key: String,
    /// The Kinesis record's sequence number.
    pub sequence_number: String,
    /// The user record's index inside its KPL aggregate (0 when not aggregated).
    pub sub_sequence_number: u64,
    /// The partition key.
    pub partition_key: String,
    /// The explicit hash key, if the producer set one.
    pub explicit_hash_key: Option<String>,
    /// When Kinesis accepted the record, in milliseconds since the epoch.
    pub approximate_arrival_timestamp: u64,
    /// `"error"` or `"panic"`.
    pub failure_kind: String,
    /// The failure's message.
    pub failure: String,
    /// The record's data, base64; `None` when left out.
    pub data: Option<String>,
    /// Why the data was left out.
    pub data_omitted: Option<String>,
}

impl DeadLetterRecord {
    /// The document for `record`, with its data when the JSON stays within `max_bytes`.
    pub fn new(
        shard: &ShardInfo,
        record: &Record,
        failure: &ProcessorFailure,
        max_bytes: usize,
    ) -> Self {
        let (failure_kind, message) = match failure {
            ProcessorFailure::Panic(m) => ("panic", m.clone()),
            ProcessorFailure::Error(m) => ("error", m.clone()),
            other => ("error", other.to_string()),
        };
        let mut doc = Self {
            stream_name: shard.stream.name.to_string(),
            stream_arn: shard.stream.arn.as_deref().map(str::to_string),
            shard_id: shard.shard_id.to_string(),
            lease_key: shard.lease_key.clone(),
            sequence_number: record.sequence_number.to_string(),
            sub_sequence_number: record.sub_sequence_number,
            partition_key: record.partition_key.to_string(),
            explicit_hash_key: record.explicit_hash_key.as_deref().map(str::to_string),
            approximate_arrival_timestamp: record
                .approximate_arrival_timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            failure_kind: failure_kind.to_string(),
            failure: message,
            data: Some(base64::engine::general_purpose::STANDARD.encode(&record.data)),
            data_omitted: None,
        };
        if doc.to_json().len() > max_bytes {
            doc.data = None;
            doc.data_omitted = Some(format!(
                "the record ({} bytes) does not fit the destination's {max_bytes}-byte limit; read it again at its sequence number",
                record.data.len()
            ));
            // A failure message too long for the limit is cut (at a character boundary).
            let over = doc.to_json().len().saturating_sub(max_bytes);
            if over > 0 {
                let keep = doc.failure.len().saturating_sub(over + 16);
                let cut = (0..=keep)
                    .rev()
                    .find(|i| doc.failure.is_char_boundary(*i))
                    .unwrap_or(0);
                doc.failure.truncate(cut);
                doc.failure.push('…');
            }
        }
        doc
    }

    /// The document as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a DeadLetterRecord always serializes")
    }
}

/// Deadline of each call a destination makes.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times entries the service refused are resent within one call.
#[cfg(any(feature = "kinesis", feature = "sqs"))]
const RESENDS: u32 = 3;

#[cfg(any(feature = "kinesis", feature = "sqs"))]
fn failed(what: &str, e: impl std::fmt::Display) -> ProcessorError {
    format!("{what}: {e}").into()
}

#[cfg(any(feature = "kinesis", feature = "sqs"))]
async fn with_deadline<T, E: std::error::Error + 'static>(
    what: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ProcessorError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(failed(what, crate::error_chain(&e))),
        Err(_) => Err(failed(what, format!("no answer within {timeout:?}"))),
    }
}

/// One document per record, serialized once, grouped into requests of at most `max_entries`
/// documents and `max_bytes` (each document counted as its JSON plus `extra` bytes).
#[cfg(any(feature = "kinesis", feature = "sqs"))]
fn requests(
    shard: &ShardInfo,
    records: &[Record],
    failure: &ProcessorFailure,
    max_document: impl Fn(&Record) -> usize,
    extra: impl Fn(&DeadLetterRecord) -> usize,
    (max_entries, max_bytes): (usize, usize),
) -> Vec<Vec<(DeadLetterRecord, String)>> {
    let mut out: Vec<Vec<(DeadLetterRecord, String)>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let doc = DeadLetterRecord::new(shard, record, failure, max_document(record));
        let json = doc.to_json();
        let size = json.len() + extra(&doc);
        match out.last_mut() {
            Some(batch) if batch.len() < max_entries && bytes + size <= max_bytes => {
                bytes += size;
                batch.push((doc, json));
            }
            _ => {
                bytes = size;
                out.push(vec![(doc, json)]);
            }
        }
    }
    out
}

#[cfg(feature = "kinesis")]
pub use kinesis::KinesisDeadLetter;
#[cfg(feature = "sqs")]
pub use sqs::SqsDeadLetter;

#[cfg(feature = "kinesis")]
mod kinesis {
    use super::*;
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    use kcl_core::shard::DeadLetterHandler;

    /// Largest Kinesis record (data + partition key).
    const MAX_RECORD: usize = 1024 * 1024;
    /// PutRecords limits.
    const MAX_ENTRIES: usize = 500;
    const MAX_REQUEST: usize = 5 * 1024 * 1024;

    /// Dead-letters records into a Kinesis stream, one Kinesis record per user record, with the
    /// record's own partition key (so one key's dead letters stay in order in one shard).
    #[derive(Debug, Clone)]
    pub struct KinesisDeadLetter {
        client: aws_sdk_kinesis::Client,
        stream_name: String,
        call_timeout: Duration,
    }

    impl KinesisDeadLetter {
        /// Into the stream `stream_name` (a name or an ARN), with a client for `config`.
        pub fn new(config: &aws_types::SdkConfig, stream_name: impl Into<String>) -> Self {
            Self::from_client(aws_sdk_kinesis::Client::new(config), stream_name)
        }

        /// Over an existing client.
        pub fn from_client(
            client: aws_sdk_kinesis::Client,
            stream_name: impl Into<String>,
        ) -> Self {
            Self {
                client,
                stream_name: stream_name.into(),
                call_timeout: DEFAULT_CALL_TIMEOUT,
            }
        }

        /// The deadline of each PutRecords call (default 10 s).
        pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
            self.call_timeout = timeout;
            self
        }

        fn entry((doc, json): (DeadLetterRecord, String)) -> PutRecordsRequestEntry {
            PutRecordsRequestEntry::builder()
                .partition_key(doc.partition_key)
                .data(Blob::new(json))
                .build()
                .expect("partition key and data are set")
        }

        async fn put(
            &self,
            mut pending: Vec<PutRecordsRequestEntry>,
        ) -> Result<(), ProcessorError> {
            for attempt in 0..=RESENDS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                let out = with_deadline(
                    "PutRecords to the dead-letter stream",
                    self.call_timeout,
                    self.client
                        .put_records()
                        .stream_name(&self.stream_name)
                        .set_records(Some(pending.clone()))
                        .send(),
                )
                .await?;
                if out.failed_record_count.unwrap_or(0) == 0 {
                    return Ok(());
                }
                let refused: Vec<_> = pending
                    .into_iter()
                    .zip(out.records)
                    .filter(|(_, r)| r.error_code.is_some())
                    .map(|(e, _)| e)
                    .collect();
                pending = refused;
                if pending.is_empty() {
                    return Ok(());
                }
            }
            Err(failed(
                "PutRecords to the dead-letter stream",
                format!("{} records still refused", pending.len()),
            ))
        }
    }

    #[async_trait::async_trait]
    impl DeadLetterHandler for KinesisDeadLetter {
        async fn handle(
            &self,
            shard: &ShardInfo,
            records: &[Record],
            failure: &ProcessorFailure,
        ) -> Result<(), ProcessorError> {
            let batches = requests(
                shard,
                records,
                failure,
                |r| MAX_RECORD - r.partition_key.len(),
                |doc| doc.partition_key.len(),
                (MAX_ENTRIES, MAX_REQUEST),
            );
            for batch in batches {
                self.put(batch.into_iter().map(Self::entry).collect())
                    .await?;
            }
            Ok(())
        }
    }
}

#[cfg(feature = "sqs")]
mod sqs {
    use super::*;
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    use kcl_core::shard::DeadLetterHandler;

    /// Largest SQS message body, and largest SendMessageBatch request.
    const MAX_MESSAGE: usize = 256 * 1024;
    const MAX_ENTRIES: usize = 10;

    /// Dead-letters records into an SQS queue, one message per user record. On a FIFO queue
    /// (URL ending in `.fifo`) messages are grouped by shard and deduplicated by position.
    #[derive(Debug, Clone)]
    pub struct SqsDeadLetter {
        client: aws_sdk_sqs::Client,
        queue_url: String,
        call_timeout: Duration,
    }

    impl SqsDeadLetter {
        /// Into the queue at `queue_url`, with a client for `config`.
        pub fn new(config: &aws_types::SdkConfig, queue_url: impl Into<String>) -> Self {
            Self::from_client(aws_sdk_sqs::Client::new(config), queue_url)
        }

        /// Over an existing client.
        pub fn from_client(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
            Self {
                client,
                queue_url: queue_url.into(),
                call_timeout: DEFAULT_CALL_TIMEOUT,
            }
        }

        /// The deadline of each SendMessageBatch call (default 10 s).
        pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
            self.call_timeout = timeout;
            self
        }

        fn entry(
            &self,
            id: usize,
            (doc, json): (DeadLetterRecord, String),
        ) -> SendMessageBatchRequestEntry {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(id.to_string())
                .message_body(json);
            if self.queue_url.ends_with(".fifo") {
                entry = entry
                    .message_group_id(&doc.shard_id)
                    .message_deduplication_id(format!(
                        "{}-{}",
                        doc.sequence_number, doc.sub_sequence_number
                    ));
            }
            entry.build().expect("id and body are set")
        }

        async fn send(
            &self,
            mut pending: Vec<SendMessageBatchRequestEntry>,
        ) -> Result<(), ProcessorError> {
            for attempt in 0..=RESENDS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                let out = with_deadline(
                    "SendMessageBatch to the dead-letter queue",
                    self.call_timeout,
                    self.client
                        .send_message_batch()
                        .queue_url(&self.queue_url)
                        .set_entries(Some(pending.clone()))
                        .send(),
                )
                .await?;
                if out.failed.is_empty() {
                    return Ok(());
                }
                let refused: std::collections::HashSet<String> =
                    out.failed.into_iter().map(|f| f.id).collect();
                pending.retain(|e| refused.contains(e.id()));
            }
            Err(failed(
                "SendMessageBatch to the dead-letter queue",
                format!("{} messages still refused", pending.len()),
            ))
        }
    }

    #[async_trait::async_trait]
    impl DeadLetterHandler for SqsDeadLetter {
        async fn handle(
            &self,
            shard: &ShardInfo,
            records: &[Record],
            failure: &ProcessorFailure,
        ) -> Result<(), ProcessorError> {
            let batches = requests(
                shard,
                records,
                failure,
                |_| MAX_MESSAGE,
                |_| 0,
                (MAX_ENTRIES, MAX_MESSAGE),
            );
            for batch in batches {
                let entries = batch
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| self.entry(i, d))
                    .collect();
                self.send(entries).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kcl_core::model::{SequenceNumber, ShardId, StreamIdentity};

    fn shard() -> ShardInfo {
        ShardInfo {
            stream: StreamIdentity::from_name("source"),
            shard_id: ShardId::new("shardId-000000000001"),
            lease_key: "shardId-000000000001".into(),
            parent_shard_ids: Vec::new(),
        }
    }

    #[test]
    fn a_record_carries_its_origin_position_failure_and_data() {
        let record = Record::new(SequenceNumber::from_u128(42), "key-1", Bytes::from("hello"));
        let doc = DeadLetterRecord::new(
            &shard(),
            &record,
            &ProcessorFailure::Error("boom".into()),
            1024,
        );
        let back: DeadLetterRecord = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.shard_id, "shardId-000000000001");
        assert_eq!(back.sequence_number, "42");
        assert_eq!(back.partition_key, "key-1");
        assert_eq!(back.failure_kind, "error");
        assert_eq!(back.data.as_deref(), Some("aGVsbG8="));
        assert!(doc.to_json().contains("\"sequenceNumber\":\"42\""));
    }

    #[test]
    fn data_beyond_the_limit_is_left_out_with_the_reason_and_the_document_fits() {
        let record = Record::new(
            SequenceNumber::from_u128(7),
            "k",
            Bytes::from(vec![b'x'; 10_000]),
        );
        let long = "e".repeat(5_000);
        let doc = DeadLetterRecord::new(&shard(), &record, &ProcessorFailure::Panic(long), 2_000);
        assert!(doc.data.is_none());
        assert!(doc.data_omitted.as_deref().unwrap().contains("10000 bytes"));
        assert!(doc.to_json().len() <= 2_000, "{}", doc.to_json().len());
        assert_eq!(doc.failure_kind, "panic");
    }
}

//! A table change as processors receive it.
//!
//! Each record's `data` is the stream record as JSON, shaped exactly as the Java DynamoDB Streams
//! Kinesis Adapter's `RecordObjectMapper` writes it (so a MultiLang processor written for the
//! Java adapter reads it unchanged): `eventID`, `eventName`, `eventVersion`, `eventSource`,
//! `awsRegion`, `userIdentity` and `dynamodb` with `ApproximateCreationDateTime` (epoch
//! milliseconds), `Keys`, `NewImage`, `OldImage` (attribute values as DynamoDB JSON, binary as
//! base64), `SequenceNumber`, `SizeBytes` and `StreamViewType`; absent fields are left out.
//! [`ChangeRecord`] reads it back, typed, and converts keys and images into your own types with
//! `serde_dynamo`.

use std::time::{Duration, SystemTime};

use kcl_core::model::{Record, SequenceNumber};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_dynamo::Item;

/// What happened to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A new item was added.
    Insert,
    /// An item was updated.
    Modify,
    /// An item was deleted.
    Remove,
}

/// Who made the change, for changes made by DynamoDB itself (TTL expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserIdentity {
    /// `dynamodb.amazonaws.com` for TTL deletions.
    #[serde(
        rename = "principalId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub principal_id: Option<String>,
    /// `Service` for TTL deletions.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The `dynamodb` part of a stream record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamRecord {
    /// When the change was made, to the millisecond at best (`ApproximateCreationDateTime`).
    #[serde(
        rename = "ApproximateCreationDateTime",
        with = "epoch_millis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub approximate_creation: Option<SystemTime>,
    /// The item's primary key.
    #[serde(rename = "Keys", default)]
    pub keys: Item,
    /// The item after the change (`NEW_IMAGE`, `NEW_AND_OLD_IMAGES`).
    #[serde(rename = "NewImage", default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<Item>,
    /// The item before the change (`OLD_IMAGE`, `NEW_AND_OLD_IMAGES`).
    #[serde(rename = "OldImage", default, skip_serializing_if = "Option::is_none")]
    pub old_image: Option<Item>,
    /// The record's position in its shard: a decimal number, in numeric order.
    #[serde(rename = "SequenceNumber", with = "sequence")]
    pub sequence_number: SequenceNumber,
    /// Size of the stream record in bytes.
    #[serde(rename = "SizeBytes", default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `KEYS_ONLY`, `NEW_IMAGE`, `OLD_IMAGE` or `NEW_AND_OLD_IMAGES`.
    #[serde(
        rename = "StreamViewType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_view_type: Option<String>,
}

/// One change of one item, as the stream recorded it.
///
/// ```
/// use kcl_dynamodb_streams::{ChangeKind, ChangeRecord};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(serde::Deserialize)]
/// struct Order { id: String, total: u32 }
///
/// let data = br#"{"eventID":"1","eventName":"MODIFY","eventVersion":"1.1","eventSource":"aws:dynamodb",
///   "awsRegion":"us-east-1","dynamodb":{"ApproximateCreationDateTime":1767225600000,
///   "Keys":{"id":{"S":"o-1"}},"NewImage":{"id":{"S":"o-1"},"total":{"N":"42"}},
///   "SequenceNumber":"4421584500000000017450439091","SizeBytes":59,"StreamViewType":"NEW_IMAGE"}}"#;
/// let change = ChangeRecord::from_json(data)?;
/// assert_eq!(change.kind, ChangeKind::Modify);
/// let order: Order = change.new_image_as()?.expect("a new image");
/// assert_eq!((order.id.as_str(), order.total), ("o-1", 42));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangeRecord {
    /// A unique id of the change.
    #[serde(rename = "eventID", default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// INSERT, MODIFY or REMOVE.
    #[serde(rename = "eventName")]
    pub kind: ChangeKind,
    /// The record format's version.
    #[serde(
        rename = "eventVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_version: Option<String>,
    /// `aws:dynamodb`.
    #[serde(
        rename = "eventSource",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source: Option<String>,
    /// The table's region.
    #[serde(rename = "awsRegion", default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// Set for changes DynamoDB made itself (TTL expiry).
    #[serde(
        rename = "userIdentity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_identity: Option<UserIdentity>,
    /// Keys, images and position.
    pub dynamodb: StreamRecord,
}

/// A record whose data is not a stream record, or an item that does not fit the asked type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeRecordError {
    /// The data is not a stream record in the adapter's JSON shape.
    #[error("not a DynamoDB stream record: {0}")]
    Json(#[from] serde_json::Error),
    /// Keys or an image do not deserialize into the asked type.
    #[error("item does not fit the type: {0}")]
    Item(#[from] serde_dynamo::Error),
}

impl ChangeRecord {
    /// Reads a stream record from the JSON a kcl-rs record carries.
    pub fn from_json(data: &[u8]) -> Result<Self, ChangeRecordError> {
        Ok(serde_json::from_slice(data)?)
    }

    /// Reads the change a record delivered to a processor carries.
    pub fn from_record(record: &Record) -> Result<Self, ChangeRecordError> {
        Self::from_json(&record.data)
    }

    /// The JSON a record carries (the Java adapter's shape).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a change record always serializes")
    }

    /// The primary key as your type.
    pub fn keys_as<T: DeserializeOwned>(&self) -> Result<T, ChangeRecordError> {
        Ok(serde_dynamo::from_item(self.dynamodb.keys.clone())?)
    }

    /// The item after the change as your type; `None` when the stream view has no new image
    /// (or the item was removed).
    pub fn new_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, ChangeRecordError> {
        image(self.dynamodb.new_image.as_ref())
    }

    /// The item before the change as your type; `None` when the stream view has no old image
    /// (or the item was inserted).
    pub fn old_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, ChangeRecordError> {
        image(self.dynamodb.old_image.as_ref())
    }
}

fn image<T: DeserializeOwned>(item: Option<&Item>) -> Result<Option<T>, ChangeRecordError> {
    item.map(|i| serde_dynamo::from_item(i.clone()))
        .transpose()
        .map_err(ChangeRecordError::from)
}

/// `ApproximateCreationDateTime` as epoch milliseconds (the adapter's `InstantAsMillisSerializer`).
mod epoch_millis {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let millis = t.map(|t| match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        });
        millis.serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(|ms| {
            let abs = Duration::from_millis(ms.unsigned_abs());
            if ms >= 0 {
                SystemTime::UNIX_EPOCH + abs
            } else {
                SystemTime::UNIX_EPOCH - abs
            }
        }))
    }
}

/// Sequence numbers as their decimal strings.
mod sequence {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        n: &SequenceNumber,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SequenceNumber, D::Error> {
        let text = String::deserialize(d)?;
        SequenceNumber::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Java adapter's test vector (`complex_structure_expected.json`, anonymized values of
    /// every attribute type), with the creation time in milliseconds as its serializer writes.
    const ADAPTER_JSON: &str = r#"{"eventID":"anonymized-event-id","eventName":"MODIFY","eventVersion":"1.0","eventSource":"aws:service","awsRegion":"region-1","dynamodb":{"ApproximateCreationDateTime":1156377600000,"Keys":{"id":{"S":"anonymized-id"}},"NewImage":{"bidSettings":{"M":{}},"bidSettingsEmptySS":{"SS":[]},"bidSettingsNonEmptyNS":{"NS":["1","2"]},"nullValue":{"NULL":true},"binaryValue":{"B":"AQIDBAU="},"binarySetNonEmpty":{"BS":["ChQe","KDI8"]},"accountType":{"L":[{"S":"account-type"},{"NS":["1","2"]}]},"lastUpdatedTimeMillis":{"N":"1000000000002"},"flag":{"BOOL":false}},"SequenceNumber":"4421584500000000017450439091","SizeBytes":1234,"StreamViewType":"NEW_AND_OLD_IMAGES"}}"#;

    #[test]
    fn reads_and_writes_the_adapter_s_json() {
        let change = ChangeRecord::from_json(ADAPTER_JSON.as_bytes()).unwrap();
        assert_eq!(change.kind, ChangeKind::Modify);
        assert_eq!(
            change.dynamodb.sequence_number.to_string(),
            "4421584500000000017450439091"
        );
        assert_eq!(
            change.dynamodb.approximate_creation,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_156_377_600_000))
        );
        let image = change.dynamodb.new_image.as_ref().unwrap();
        assert_eq!(
            image["binaryValue"],
            serde_dynamo::AttributeValue::B(vec![1, 2, 3, 4, 5])
        );
        // Written back, it is the same JSON value.
        let again: serde_json::Value = serde_json::from_slice(&change.to_json()).unwrap();
        let original: serde_json::Value = serde_json::from_str(ADAPTER_JSON).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn images_convert_into_user_types() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Key {
            id: String,
        }
        let change = ChangeRecord::from_json(ADAPTER_JSON.as_bytes()).unwrap();
        assert_eq!(
            change.keys_as::<Key>().unwrap(),
            Key {
                id: "anonymized-id".into()
            }
        );
        assert!(change.old_image_as::<Key>().unwrap().is_none());
        let wrong = change.new_image_as::<Key>();
        assert!(
            matches!(wrong, Err(ChangeRecordError::Item(_))),
            "no id in the image: {wrong:?}"
        );
    }

    #[test]
    fn data_that_is_no_stream_record_is_a_typed_error() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"eventName":"UPSERT","dynamodb":{}}"#,
        ] {
            assert!(matches!(
                ChangeRecord::from_json(bad),
                Err(ChangeRecordError::Json(_))
            ));
        }
    }
}

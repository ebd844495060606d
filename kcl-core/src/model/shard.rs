//! Streams, shards and their hash-key and sequence-number ranges.

use std::fmt;
use std::sync::Arc;

use super::SequenceNumber;

/// A shard's id, e.g. `shardId-000000000007`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// Wraps a shard id as Kinesis returns it.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id Kinesis uses for the shard with this index: `shardId-` and 12 digits.
    pub fn from_index(index: u64) -> Self {
        Self(Arc::from(format!("shardId-{index:012}")))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ShardId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Which stream a call is about: its name and, when known, its ARN. Kinesis accepts either; the
/// ARN wins when both are set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamIdentity {
    /// The stream name.
    pub name: Arc<str>,
    /// The stream ARN, `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    pub arn: Option<Arc<str>>,
}

impl StreamIdentity {
    /// A stream known by name only.
    pub fn from_name(name: impl AsRef<str>) -> Self {
        Self {
            name: Arc::from(name.as_ref()),
            arn: None,
        }
    }

    /// A stream known by ARN; the name is taken from the ARN's resource part.
    pub fn from_arn(arn: impl AsRef<str>) -> Self {
        let arn = arn.as_ref();
        let name = arn.rsplit_once("stream/").map_or(arn, |(_, n)| n);
        Self {
            name: Arc::from(name),
            arn: Some(Arc::from(arn)),
        }
    }

    /// Parses what a user names a stream by: a stream name (1 to 128 of `a-z A-Z 0-9 _ . -`) or
    /// a stream ARN, `arn:<partition>:kinesis:<region>:<12-digit account>:stream/<name>`.
    /// Anything else is an error that says which part is wrong, so configuration typos fail at
    /// start rather than as "stream not found" after retries.
    pub fn parse(text: &str) -> Result<Self, ParseStreamError> {
        let err = |reason| ParseStreamError {
            value: text.chars().take(300).collect(),
            reason,
        };
        let check_name = |name: &str| {
            if name.is_empty() || name.len() > 128 {
                Err(err("a stream name is 1 to 128 characters"))
            } else if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                Err(err("a stream name has only a-z A-Z 0-9 _ . -"))
            } else {
                Ok(())
            }
        };
        let Some(rest) = text.strip_prefix("arn:") else {
            check_name(text)?;
            return Ok(Self::from_name(text));
        };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts[..] else {
            return Err(err(
                "an ARN has the form arn:partition:kinesis:region:account:stream/name",
            ));
        };
        let label = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !label(partition) {
            return Err(err(
                "the ARN's partition (e.g. aws) is missing or malformed",
            ));
        }
        if service != "kinesis" {
            return Err(err("the ARN is not a Kinesis ARN"));
        }
        if !label(region) {
            return Err(err(
                "the ARN's region (e.g. us-east-1) is missing or malformed",
            ));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the ARN's account id must be 12 digits"));
        }
        let Some(name) = resource.strip_prefix("stream/") else {
            return Err(err("the ARN's resource must be stream/<name>"));
        };
        check_name(name)?;
        Ok(Self {
            name: Arc::from(name),
            arn: Some(Arc::from(text)),
        })
    }

    /// The account id embedded in the ARN, if any.
    pub fn account_id(&self) -> Option<&str> {
        self.arn
            .as_deref()
            .and_then(|a| a.split(':').nth(4))
            .filter(|a| !a.is_empty())
    }
}

impl fmt::Display for StreamIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why a string names no stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a stream name or stream ARN: {reason}")]
pub struct ParseStreamError {
    /// The rejected text (at most 300 characters of it).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// An inclusive range of 128-bit hash keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashKeyRange {
    /// First hash key of the range.
    pub start: u128,
    /// Last hash key of the range (inclusive).
    pub end: u128,
}

impl HashKeyRange {
    /// The whole hash-key space.
    pub const FULL: Self = Self {
        start: 0,
        end: u128::MAX,
    };

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// Whether `next` starts right after this range ends.
    pub fn is_followed_by(&self, next: &HashKeyRange) -> bool {
        self.end.checked_add(1) == Some(next.start)
    }

    /// Splits the hash-key space into `n` ranges of equal size, as Kinesis does for a new
    /// stream: range `i` starts at `floor(i · 2¹²⁸ / n)`.
    pub fn split_evenly(n: u32) -> Vec<HashKeyRange> {
        let n = u128::from(n.max(1));
        let starts: Vec<u128> = (0..n).map(|i| even_boundary(i, n)).collect();
        starts
            .iter()
            .enumerate()
            .map(|(i, &start)| HashKeyRange {
                start,
                end: starts.get(i + 1).map_or(u128::MAX, |next| next - 1),
            })
            .collect()
    }
}

/// `floor(i · 2¹²⁸ / n)` for `i < n`, without 256-bit arithmetic.
fn even_boundary(i: u128, n: u128) -> u128 {
    if i == 0 {
        return 0;
    }
    // 2^128 = q·n + r, computed from u128::MAX = 2^128 − 1.
    let (mut q, mut r) = (u128::MAX / n, u128::MAX % n + 1);
    if r == n {
        q += 1;
        r = 0;
    }
    // i·2^128/n = i·q + i·r/n, and i·r < n² fits because n ≤ 2^32.
    i * q + (i * r) / n
}

/// The sequence numbers a shard covers; the end is set once the shard is closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumberRange {
    /// First sequence number the shard can hold.
    pub start: SequenceNumber,
    /// Last sequence number, set when the shard was closed by a reshard.
    pub end: Option<SequenceNumber>,
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shard {
    /// The shard's id.
    pub id: ShardId,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<ShardId>,
    /// The second parent of a merge.
    pub adjacent_parent: Option<ShardId>,
    /// Hash keys routed to this shard.
    pub hash_key_range: HashKeyRange,
    /// Sequence numbers of this shard.
    pub sequence_number_range: SequenceNumberRange,
}

impl Shard {
    /// Whether the shard still accepts records (no ending sequence number).
    pub fn is_open(&self) -> bool {
        self.sequence_number_range.end.is_none()
    }

    /// The shard's parents: none, one (split) or two (merge).
    pub fn parents(&self) -> impl Iterator<Item = &ShardId> {
        self.parent.iter().chain(self.adjacent_parent.iter())
    }
}

/// A child shard as GetRecords and SubscribeToShard report it when a shard ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildShard {
    /// The child's id.
    pub id: ShardId,
    /// All parents of the child (one after a split, two after a merge).
    pub parents: Vec<ShardId>,
    /// Hash keys of the child.
    pub hash_key_range: HashKeyRange,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_shards_split_like_kinesis() {
        let r = HashKeyRange::split_evenly(2);
        assert_eq!(
            r[0],
            HashKeyRange {
                start: 0,
                end: 170141183460469231731687303715884105727
            }
        );
        assert_eq!(r[1].start, 170141183460469231731687303715884105728);
        assert_eq!(r[1].end, u128::MAX);
        assert_eq!(HashKeyRange::split_evenly(1), vec![HashKeyRange::FULL]);
    }

    #[test]
    fn stream_names_and_arns_are_validated() {
        let arn =
            StreamIdentity::parse("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/a.b-c_1")
                .unwrap();
        assert_eq!(&*arn.name, "a.b-c_1");
        assert_eq!(arn.account_id(), Some("123456789012"));
        assert_eq!(
            StreamIdentity::parse("orders").unwrap(),
            StreamIdentity::from_name("orders")
        );
        for bad in [
            "",
            "has space",
            &"x".repeat(129),
            "arn:aws:kinesis:us-east-1:123456789012:stream/",
            "arn:aws:kinesis:us-east-1:12345:stream/orders",
            "arn:aws:sqs:us-east-1:123456789012:stream/orders",
            "arn:aws:kinesis:us-east-1:123456789012:table/orders",
            "arn:aws:kinesis::123456789012:stream/orders",
            "arn:aws:kinesis:us-east-1:123456789012",
            "arn:aws:kinesis:us-east-1:123456789012:stream/a/b",
        ] {
            assert!(StreamIdentity::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stream_identity_from_arn() {
        let s = StreamIdentity::from_arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders");
        assert_eq!(&*s.name, "orders");
        assert_eq!(s.account_id(), Some("123456789012"));
    }

    proptest! {
        #[test]
        fn even_split_covers_the_space(n in 1u32..2000) {
            let ranges = HashKeyRange::split_evenly(n);
            prop_assert_eq!(ranges.len(), n as usize);
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges.last().unwrap().end, u128::MAX);
            for w in ranges.windows(2) {
                prop_assert!(w[0].is_followed_by(&w[1]));
                prop_assert!(w[0].start <= w[0].end);
            }
            // Sizes differ by at most one hash key.
            let sizes: Vec<u128> = ranges.iter().map(|r| r.end - r.start).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
        }
    }
}

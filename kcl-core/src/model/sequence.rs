//! Sequence numbers and the KCL's extended sequence numbers (sequence + sub-sequence, sentinels).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest sequence number accepted, in decimal digits (Kinesis documents `0|([1-9]\d{0,128})`).
pub const MAX_SEQUENCE_DIGITS: usize = 129;

/// Digits kept inline (two per byte) instead of on the heap; AWS numbers have 56.
const INLINE_DIGITS: usize = 62;

/// A Kinesis sequence number: a non-negative decimal integer, ordered numerically.
///
/// AWS emits 56-digit numbers, emulators emit `"1"`, `"6"`: both order right because comparison
/// is by numeric value, never by string. Leading zeros are removed on parse so that equality,
/// hashing and ordering agree. Numbers of up to 62 digits are stored inline as packed decimal,
/// so cloning one (once per user record) is a 40-byte copy with no reference count.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// `len` digits, two per byte, high nibble first; unused nibbles are zero.
    Packed {
        len: u8,
        bcd: [u8; INLINE_DIGITS / 2],
    },
    /// More digits than fit inline.
    Long(Arc<str>),
}

/// Why a string is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseSequenceNumberError {
    /// The string was empty.
    #[error("sequence number is empty")]
    Empty,
    /// The string held a character that is not an ASCII digit.
    #[error("sequence number {0:?} contains a character that is not a decimal digit")]
    NotDigits(String),
    /// The string had more digits than Kinesis allows.
    #[error("sequence number has {0} digits, more than the {MAX_SEQUENCE_DIGITS} Kinesis allows")]
    TooLong(usize),
}

impl SequenceNumber {
    /// Parses a decimal sequence number.
    pub fn new(digits: &str) -> Result<Self, ParseSequenceNumberError> {
        if digits.is_empty() {
            return Err(ParseSequenceNumberError::Empty);
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseSequenceNumberError::NotDigits(
                digits.chars().take(140).collect(),
            ));
        }
        let trimmed = digits.trim_start_matches('0');
        let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
        if trimmed.len() > MAX_SEQUENCE_DIGITS {
            return Err(ParseSequenceNumberError::TooLong(trimmed.len()));
        }
        if trimmed.len() > INLINE_DIGITS {
            return Ok(Self(Repr::Long(Arc::from(trimmed))));
        }
        let mut bcd = [0u8; INLINE_DIGITS / 2];
        for (i, d) in trimmed.bytes().enumerate() {
            bcd[i / 2] |= (d - b'0') << if i % 2 == 0 { 4 } else { 0 };
        }
        Ok(Self(Repr::Packed {
            len: trimmed.len() as u8,
            bcd,
        }))
    }

    /// Builds a sequence number from an integer.
    pub fn from_u128(value: u128) -> Self {
        Self::new(&value.to_string()).expect("an integer's digits")
    }

    /// The sequence number one below (`None` for zero): a checkpoint there makes processing
    /// resume at `self` (what `kclctl rewind --to timestamp` writes).
    pub fn predecessor(&self) -> Option<Self> {
        let mut buf = [0u8; INLINE_DIGITS];
        let mut d: Vec<u8> = self.digits(&mut buf).bytes().collect();
        let mut i = d.len();
        loop {
            if i == 0 {
                return None;
            }
            i -= 1;
            if d[i] == b'0' {
                d[i] = b'9';
            } else {
                d[i] -= 1;
                break;
            }
        }
        Self::new(std::str::from_utf8(&d).expect("ASCII digits")).ok()
    }

    /// Number of decimal digits.
    pub fn digit_count(&self) -> usize {
        match &self.0 {
            Repr::Packed { len, .. } => usize::from(*len),
            Repr::Long(s) => s.len(),
        }
    }

    /// Writes the digits into `buf` and returns them as a string slice of it.
    fn digits<'a>(&'a self, buf: &'a mut [u8; INLINE_DIGITS]) -> &'a str {
        match &self.0 {
            Repr::Long(s) => s,
            Repr::Packed { len, bcd } => {
                let len = usize::from(*len);
                for (i, out) in buf.iter_mut().enumerate().take(len) {
                    let nibble = if i % 2 == 0 {
                        bcd[i / 2] >> 4
                    } else {
                        bcd[i / 2] & 0x0F
                    };
                    *out = b'0' + nibble;
                }
                std::str::from_utf8(&buf[..len]).expect("ASCII digits")
            }
        }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical form has no leading zeros, so more digits means a larger number; equal
        // lengths compare digit by digit, which packed decimal preserves bytewise.
        self.digit_count()
            .cmp(&other.digit_count())
            .then_with(|| match (&self.0, &other.0) {
                (Repr::Packed { bcd: a, .. }, Repr::Packed { bcd: b, .. }) => a.cmp(b),
                (Repr::Long(a), Repr::Long(b)) => a.as_bytes().cmp(b.as_bytes()),
                // Equal digit counts always share a representation.
                _ => unreachable!("equal digit counts share a representation"),
            })
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for SequenceNumber {
    type Err = ParseSequenceNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.digits(&mut [0; INLINE_DIGITS]))
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({self})")
    }
}

/// A position in a shard as the KCL stores it in checkpoints: a sequence number with the
/// sub-sequence number of a user record inside a KPL aggregate, or one of the sentinels.
///
/// Ordering is exactly the KCL's (`ExtendedSequenceNumber.compareTo`):
/// `AT_TIMESTAMP < TRIM_HORIZON < LATEST < every sequence number < SHARD_END`, and two positions
/// with the same sequence number order by sub-sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtendedSequenceNumber {
    /// `AT_TIMESTAMP`: start at a point in time (the timestamp lives in the lease's configuration).
    AtTimestamp,
    /// `TRIM_HORIZON`: start at the oldest record in the shard.
    TrimHorizon,
    /// `LATEST`: start after the newest record in the shard.
    Latest,
    /// A user record: the Kinesis record's sequence number and the index inside its aggregate
    /// (0 for records that were not aggregated).
    Sequence {
        /// The Kinesis record's sequence number.
        sequence: SequenceNumber,
        /// Index of the user record inside a KPL aggregate; 0 when not aggregated.
        sub_sequence: u64,
    },
    /// `SHARD_END`: every record of a closed shard has been processed.
    ShardEnd,
}

/// Why a string is not a valid checkpoint value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid checkpoint {value:?}: expected digits, TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END"
)]
pub struct ParseCheckpointError {
    /// The rejected value (truncated).
    pub value: String,
}

impl ExtendedSequenceNumber {
    /// The value of the lease table's `checkpoint` attribute: the KCL's name of the sentinel,
    /// or the digits of the sequence number.
    pub fn checkpoint_value(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::AtTimestamp => "AT_TIMESTAMP",
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::ShardEnd => "SHARD_END",
            Self::Sequence { sequence, .. } => return Cow::Owned(sequence.to_string()),
        })
    }

    /// The sub-sequence number (0 for sentinels).
    pub fn sub_sequence(&self) -> u64 {
        match self {
            Self::Sequence { sub_sequence, .. } => *sub_sequence,
            _ => 0,
        }
    }

    /// A position at a record that was not aggregated (sub-sequence 0).
    pub fn at(sequence: SequenceNumber) -> Self {
        Self::Sequence {
            sequence,
            sub_sequence: 0,
        }
    }

    /// The sequence number, if this is not a sentinel.
    pub fn sequence(&self) -> Option<&SequenceNumber> {
        match self {
            Self::Sequence { sequence, .. } => Some(sequence),
            _ => None,
        }
    }

    /// Whether this is one of the sentinels.
    pub fn is_sentinel(&self) -> bool {
        !matches!(self, Self::Sequence { .. })
    }

    /// Parses a checkpoint as stored in the lease table (`checkpoint` and
    /// `checkpointSubSequenceNumber` attributes). Sentinels ignore the sub-sequence number.
    pub fn parse(checkpoint: &str, sub_sequence: u64) -> Result<Self, ParseCheckpointError> {
        Ok(match checkpoint {
            "AT_TIMESTAMP" => Self::AtTimestamp,
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            "SHARD_END" => Self::ShardEnd,
            digits => Self::Sequence {
                sequence: SequenceNumber::new(digits).map_err(|_| ParseCheckpointError {
                    value: digits.chars().take(140).collect(),
                })?,
                sub_sequence,
            },
        })
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence {
                sequence,
                sub_sequence,
            } => write!(f, "{sequence}/{sub_sequence}"),
            other => f.write_str(&other.checkpoint_value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::new(s).unwrap()
    }

    #[test]
    fn predecessor_is_one_below() {
        assert_eq!(seq("100").predecessor(), Some(seq("99")));
        assert_eq!(seq("1").predecessor(), Some(seq("0")));
        assert_eq!(seq("0").predecessor(), None);
        let long = "49590338271490256608559692538361571095921575989136588801";
        assert_eq!(
            seq(long).predecessor(),
            Some(seq(&long.replace("801", "800")))
        );
        assert_eq!(
            seq("49590338271490256608559692538361571095921575989136588800").predecessor(),
            Some(seq(
                "49590338271490256608559692538361571095921575989136588799"
            ))
        );
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert!(seq("6") < seq("10"));
        assert!(seq("1") < seq("49590338271490256608559692538361571095921575989136588898"));
        assert_eq!(seq("007"), seq("7"));
        assert_eq!(seq("000").to_string(), "0");
        let long = "1".repeat(100);
        assert_eq!(seq(&long).to_string(), long);
        assert!(seq(&"9".repeat(62)) < seq(&"1".repeat(63)));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            SequenceNumber::new(""),
            Err(ParseSequenceNumberError::Empty)
        );
        assert!(matches!(
            SequenceNumber::new("12a"),
            Err(ParseSequenceNumberError::NotDigits(_))
        ));
        assert!(matches!(
            SequenceNumber::new("-1"),
            Err(ParseSequenceNumberError::NotDigits(_))
        ));
        assert!(SequenceNumber::new(&"9".repeat(129)).is_ok());
        assert_eq!(
            SequenceNumber::new(&"9".repeat(130)),
            Err(ParseSequenceNumberError::TooLong(130))
        );
    }

    #[test]
    fn sentinels_order_like_the_kcl() {
        use ExtendedSequenceNumber as E;
        let s = E::at(seq("0"));
        let order = [E::AtTimestamp, E::TrimHorizon, E::Latest, s, E::ShardEnd];
        for w in order.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
        let a = E::Sequence {
            sequence: seq("5"),
            sub_sequence: 3,
        };
        let b = E::Sequence {
            sequence: seq("5"),
            sub_sequence: 4,
        };
        let c = E::Sequence {
            sequence: seq("6"),
            sub_sequence: 0,
        };
        assert!(a < b && b < c);
    }

    #[test]
    fn checkpoint_strings_round_trip() {
        for s in ["AT_TIMESTAMP", "TRIM_HORIZON", "LATEST", "SHARD_END", "123"] {
            assert_eq!(
                ExtendedSequenceNumber::parse(s, 0)
                    .unwrap()
                    .checkpoint_value(),
                s
            );
        }
        assert!(ExtendedSequenceNumber::parse("garbage", 0).is_err());
    }

    proptest! {
        #[test]
        fn order_matches_u128(a: u128, b: u128) {
            prop_assert_eq!(SequenceNumber::from_u128(a).cmp(&SequenceNumber::from_u128(b)), a.cmp(&b));
        }

        #[test]
        fn order_matches_big_numbers(a in "[0-9]{1,128}", b in "[0-9]{1,128}") {
            // Compare against a reference: pad both to the same width, then compare strings.
            let (x, y) = (seq(&a), seq(&b));
            let width = 130;
            let pa = format!("{:0>width$}", a);
            let pb = format!("{:0>width$}", b);
            prop_assert_eq!(x.cmp(&y), pa.cmp(&pb));
            prop_assert_eq!(x == y, pa == pb);
        }

        #[test]
        fn extended_order_is_sequence_then_sub(a: u64, sa: u64, b: u64, sb: u64) {
            let x = ExtendedSequenceNumber::Sequence { sequence: SequenceNumber::from_u128(a.into()), sub_sequence: sa };
            let y = ExtendedSequenceNumber::Sequence { sequence: SequenceNumber::from_u128(b.into()), sub_sequence: sb };
            prop_assert_eq!(x.cmp(&y), (a, sa).cmp(&(b, sb)));
        }
    }
}

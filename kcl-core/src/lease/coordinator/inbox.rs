//! What workers post to each other through a lease's inbox (`kclRsInbox`, a string set on a
//! lease the receiver holds; it reads it from its next renewal's response, no extra reads).

/// The text of a [`Entry::ListNow`] entry. It names no lease, so a framework that does not
/// know it finds no lease by that key and ignores it.
const LIST_NOW: &str = "kcl-rs:list-now";

/// Entries of this framework start so; lease keys never do (shard ids, or
/// `account:stream:epoch:shard` in multi-stream tables).
const RESERVED: &str = "kcl-rs:";

/// One inbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// The lease with this key is offered to the receiver (planned hand-off): accept it.
    Offer(String),
    /// List the table now: posted by a leader to its new deputy, and by a worker that released
    /// leases to the workers that lead after it.
    ListNow,
    /// An entry of a later version of this framework: ignored.
    Unknown(String),
}

impl Entry {
    /// Reads a stored entry.
    pub(super) fn decode(text: &str) -> Self {
        match text {
            LIST_NOW => Self::ListNow,
            t if t.starts_with(RESERVED) => Self::Unknown(t.to_string()),
            key => Self::Offer(key.to_string()),
        }
    }

    /// The stored form.
    pub(super) fn encode(&self) -> String {
        match self {
            Self::Offer(key) => key.clone(),
            Self::ListNow => LIST_NOW.to_string(),
            Self::Unknown(text) => text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_keys_are_offers() {
        for entry in [
            Entry::Offer("shardId-000000000007".into()),
            Entry::Offer("123456789012:orders:1700000000:shardId-000000000001".into()),
            Entry::ListNow,
        ] {
            assert_eq!(Entry::decode(&entry.encode()), entry);
        }
        assert_eq!(Entry::decode("kcl-rs:list-now"), Entry::ListNow);
        assert_eq!(
            Entry::decode("kcl-rs:step-down"),
            Entry::Unknown("kcl-rs:step-down".into()),
            "a later version's entry is not taken for a lease key"
        );
    }
}

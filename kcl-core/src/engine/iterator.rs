//! Shard iterators of the in-memory engine: stateless tokens that name a position and when they
//! were issued, so the engine keeps no per-iterator state and old iterators cost nothing.

use std::time::Duration;

use crate::kinesis::{KinesisError, ShardIterator};

/// A decoded iterator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IteratorToken {
    pub(crate) engine: u64,
    pub(crate) stream_nonce: u64,
    pub(crate) shard: u64,
    pub(crate) offset: u64,
    /// Time since the engine's clock started, when the iterator was issued.
    pub(crate) issued: Duration,
}

impl IteratorToken {
    pub(crate) fn encode(&self) -> ShardIterator {
        ShardIterator(format!(
            "mem1:{:x}:{:x}:{:x}:{:x}:{:x}",
            self.engine,
            self.stream_nonce,
            self.shard,
            self.offset,
            self.issued.as_nanos()
        ))
    }

    pub(crate) fn decode(it: &ShardIterator) -> Result<Self, KinesisError> {
        let invalid =
            || KinesisError::invalid(format!("not a shard iterator of this engine: {it:?}"));
        let mut parts = it.0.strip_prefix("mem1:").ok_or_else(invalid)?.split(':');
        let mut next = || {
            parts
                .next()
                .and_then(|p| u128::from_str_radix(p, 16).ok())
                .ok_or_else(invalid)
        };
        let (engine, stream_nonce, shard, offset, issued) =
            (next()?, next()?, next()?, next()?, next()?);
        let narrow = |v: u128| u64::try_from(v).map_err(|_| invalid());
        Ok(Self {
            engine: narrow(engine)?,
            stream_nonce: narrow(stream_nonce)?,
            shard: narrow(shard)?,
            offset: narrow(offset)?,
            issued: Duration::from_nanos(narrow(issued)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let t = IteratorToken {
            engine: 1,
            stream_nonce: 2,
            shard: 3,
            offset: 4,
            issued: Duration::from_millis(5),
        };
        assert_eq!(IteratorToken::decode(&t.encode()).unwrap(), t);
        for bad in ["", "mem1:", "mem1:1:2:3:4", "mem1:1:2:3:4:zz", "AAAA"] {
            assert!(matches!(
                IteratorToken::decode(&ShardIterator(bad.into())),
                Err(KinesisError::InvalidArgument { .. })
            ));
        }
    }
}

//! Registered stream consumers and push subscriptions with SubscribeToShard semantics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{InMemoryKinesis, KinesisOperation};
use crate::kinesis::{KinesisError, MAX_GET_RECORDS_BYTES, MAX_GET_RECORDS_LIMIT};
use crate::model::{ChildShard, Record, SequenceNumber, ShardId, StartingPosition};

/// Status of a registered consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerStatus {
    /// Registered, not yet usable.
    Creating,
    /// Usable for subscriptions.
    Active,
}

/// A registered stream consumer (enhanced fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Consumer name, unique per stream.
    pub name: String,
    /// Consumer ARN: `<stream arn>/consumer/<name>:<creation epoch>`.
    pub arn: String,
    /// Status.
    pub status: ConsumerStatus,
    /// Registration time.
    pub created_at: SystemTime,
}

struct ConsumerEntry {
    name: String,
    stream_nonce: u64,
    created_at: SystemTime,
    active_after: Duration,
}

/// Who holds the subscription slot of (consumer, stream, shard).
type SlotKey = (Arc<str>, u64, u64);

#[derive(Default)]
pub(super) struct ConsumerRegistry {
    consumers: HashMap<Arc<str>, ConsumerEntry>,
    slots: HashMap<SlotKey, u64>,
    next_subscription: u64,
}

/// One event of a push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    /// Records in sequence order (KPL aggregates not unpacked).
    pub records: Vec<Record>,
    /// Resubscribe `AFTER_SEQUENCE_NUMBER` this to continue with no gap; `None` at shard end.
    pub continuation_sequence_number: Option<SequenceNumber>,
    /// How far behind the tip of the shard this event is.
    pub millis_behind_latest: u64,
    /// The children of the shard, in the last event of a closed shard.
    pub child_shards: Vec<ChildShard>,
}

/// A push subscription to one shard for one consumer, like SubscribeToShard's event stream.
///
/// Records are pushed as they arrive; an idle subscription sends an empty event every
/// heartbeat. The subscription ends (`next_event` returns `None`) after its lifetime (5 minutes
/// by default) or after the shard-end event; errors end it too. Dropping it frees the
/// (consumer, shard) slot so a new subscription can start.
pub struct ShardSubscription {
    engine: InMemoryKinesis,
    slot: SlotKey,
    id: u64,
    offset: u64,
    expires: Instant,
    next_heartbeat: Instant,
    changes: watch::Receiver<u64>,
    finished: bool,
}

impl std::fmt::Debug for ShardSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSubscription")
            .field("consumer", &self.slot.0)
            .field("shard", &ShardId::from_index(self.slot.2))
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl InMemoryKinesis {
    fn consumer_view(&self, arn: &Arc<str>, e: &ConsumerEntry) -> Consumer {
        let status = if self.inner.clock.elapsed() >= e.active_after {
            ConsumerStatus::Active
        } else {
            ConsumerStatus::Creating
        };
        Consumer {
            name: e.name.clone(),
            arn: arn.to_string(),
            status,
            created_at: e.created_at,
        }
    }

    /// RegisterStreamConsumer. A name already registered on the stream is `ResourceInUse`.
    pub async fn register_stream_consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<Consumer, KinesisError> {
        let after = self.inner.faults.apply(KinesisOperation::Consumers).await?;
        if name.is_empty() || name.len() > 128 {
            return Err(KinesisError::invalid(format!(
                "invalid consumer name {name:?}"
            )));
        }
        let now = self.now();
        let mut state = self.lock();
        let s = state.stream_mut(stream)?;
        let (nonce, stream_arn) = (s.nonce, s.identity.arn.clone().unwrap_or_default());
        let reg = &mut state.consumers;
        if reg
            .consumers
            .values()
            .any(|c| c.stream_nonce == nonce && c.name == name)
        {
            return Err(KinesisError::in_use(format!(
                "consumer {name} is already registered on {stream}"
            )));
        }
        let epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let arn: Arc<str> = Arc::from(format!("{stream_arn}/consumer/{name}:{epoch}"));
        let entry = ConsumerEntry {
            name: name.to_string(),
            stream_nonce: nonce,
            created_at: now,
            active_after: self.inner.clock.elapsed() + self.inner.config.consumer_activation_delay,
        };
        let view = self.consumer_view(&arn, &entry);
        reg.consumers.insert(arn, entry);
        after.finish(view)
    }

    /// DescribeStreamConsumer by ARN.
    pub async fn describe_stream_consumer(
        &self,
        consumer_arn: &str,
    ) -> Result<Consumer, KinesisError> {
        let after = self.inner.faults.apply(KinesisOperation::Consumers).await?;
        let state = self.lock();
        let (arn, e) = state
            .consumers
            .consumers
            .get_key_value(consumer_arn)
            .ok_or_else(|| KinesisError::not_found(format!("consumer {consumer_arn} not found")))?;
        after.finish(self.consumer_view(arn, e))
    }

    /// ListStreamConsumers.
    pub fn list_stream_consumers(&self, stream: &str) -> Result<Vec<Consumer>, KinesisError> {
        let mut state = self.lock();
        let nonce = state.stream_mut(stream)?.nonce;
        let mut out: Vec<_> = state
            .consumers
            .consumers
            .iter()
            .filter(|(_, e)| e.stream_nonce == nonce)
            .map(|(arn, e)| self.consumer_view(arn, e))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// DeregisterStreamConsumer; its subscriptions end with `ResourceNotFound`.
    pub fn deregister_stream_consumer(&self, consumer_arn: &str) -> Result<(), KinesisError> {
        let mut state = self.lock();
        let reg = &mut state.consumers;
        reg.consumers
            .remove(consumer_arn)
            .ok_or_else(|| KinesisError::not_found(format!("consumer {consumer_arn} not found")))?;
        reg.slots.retain(|k, _| &*k.0 != consumer_arn);
        Ok(())
    }

    /// SubscribeToShard. A second subscription for the same consumer and shard while one is
    /// live is `ResourceInUse`; a consumer that is not `ACTIVE` yet is `ResourceInUse` too.
    pub async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &StartingPosition,
    ) -> Result<ShardSubscription, KinesisError> {
        let after = self
            .inner
            .faults
            .apply(KinesisOperation::SubscribeToShard)
            .await?;
        let now = self.now();
        let elapsed = self.inner.clock.elapsed();
        let mut state = self.lock();
        let (arn, nonce, active_after) = {
            let (arn, e) = state
                .consumers
                .consumers
                .get_key_value(consumer_arn)
                .ok_or_else(|| {
                    KinesisError::not_found(format!("consumer {consumer_arn} not found"))
                })?;
            (arn.clone(), e.stream_nonce, e.active_after)
        };
        if elapsed < active_after {
            return Err(KinesisError::in_use(format!(
                "consumer {consumer_arn} is not ACTIVE yet"
            )));
        }
        let s = state.stream_by_nonce(nonce)?;
        s.trim(now);
        let index = s.index_of(shard)?;
        let offset = Self::offset_for(s, index, position)?;
        let changes = s.changes.subscribe();
        let slot: SlotKey = (arn, nonce, index);
        let reg = &mut state.consumers;
        if reg.slots.contains_key(&slot) {
            return Err(KinesisError::in_use(format!(
                "another active subscription exists for consumer {consumer_arn} on shard {shard}"
            )));
        }
        reg.next_subscription += 1;
        let id = reg.next_subscription;
        reg.slots.insert(slot.clone(), id);
        let start = Instant::now();
        after.finish(ShardSubscription {
            engine: self.clone(),
            slot,
            id,
            offset,
            expires: start + self.inner.config.subscription_ttl,
            next_heartbeat: start,
            changes,
            finished: false,
        })
    }
}

impl ShardSubscription {
    /// The next event; `None` once the subscription has ended (lifetime over, shard end
    /// delivered, or an error returned).
    pub async fn next_event(&mut self) -> Option<Result<SubscriptionEvent, KinesisError>> {
        if self.finished {
            return None;
        }
        let after = match self
            .engine
            .inner
            .faults
            .apply(KinesisOperation::SubscriptionEvent)
            .await
        {
            Ok(after) => after,
            Err(e) => return self.fail(e),
        };
        loop {
            if Instant::now() >= self.expires {
                self.finish();
                return None;
            }
            self.changes.borrow_and_update();
            match self.poll_state() {
                Err(e) => return self.fail(e),
                // An after-effect fault loses the delivered event, as a broken connection would.
                Ok(Some(event)) => {
                    return match after.finish(event) {
                        Ok(event) => Some(Ok(event)),
                        Err(e) => self.fail(e),
                    };
                }
                Ok(None) => {}
            }
            let wake = self.next_heartbeat.min(self.expires);
            tokio::select! {
                biased;
                // A closed channel means the stream was deleted: the next pass reports it.
                _ = self.changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Reads what is available; an event when there are records, at shard end, or when a
    /// heartbeat is due.
    fn poll_state(&mut self) -> Result<Option<SubscriptionEvent>, KinesisError> {
        let engine = self.engine.clone();
        let now = engine.now();
        let mut state = engine.lock();
        if state.consumers.slots.get(&self.slot) != Some(&self.id) {
            return Err(KinesisError::not_found(
                "the consumer of this subscription was deregistered",
            ));
        }
        let s = state.stream_by_nonce(self.slot.1)?;
        s.trim(now);
        let shard = s.shard(self.slot.2)?;
        let (records, next) = shard.read(
            self.offset,
            MAX_GET_RECORDS_LIMIT as usize,
            MAX_GET_RECORDS_BYTES,
        );
        let drained = !shard.is_open() && next >= shard.end_offset();
        if records.is_empty() && !drained && Instant::now() < self.next_heartbeat {
            return Ok(None);
        }
        let millis_behind_latest = shard.millis_behind(next, now);
        let continuation = (!drained).then(|| shard.sequence_before(next));
        let child_shards = if drained {
            s.child_shards(self.slot.2)
        } else {
            Vec::new()
        };
        self.offset = next;
        self.next_heartbeat = Instant::now() + engine.inner.config.subscription_heartbeat;
        drop(state);
        if drained {
            self.finish();
        }
        Ok(Some(SubscriptionEvent {
            records,
            continuation_sequence_number: continuation,
            millis_behind_latest,
            child_shards,
        }))
    }

    fn fail(&mut self, e: KinesisError) -> Option<Result<SubscriptionEvent, KinesisError>> {
        self.finish();
        Some(Err(e))
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            let mut state = self.engine.lock();
            if state.consumers.slots.get(&self.slot) == Some(&self.id) {
                state.consumers.slots.remove(&self.slot);
            }
        }
    }
}

impl Drop for ShardSubscription {
    fn drop(&mut self) {
        self.finish();
    }
}

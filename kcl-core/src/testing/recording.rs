//! A recording processor and the ledger it writes, with the checks most fleet tests need:
//! every record put was processed, in order per partition key, at least once.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::checkpoint::Checkpointer;
use crate::processor::{
    LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
};

/// (stream name, partition key).
pub type StreamKey = (String, String);

#[derive(Debug, Default)]
struct State {
    /// Record data (as text) per (stream, partition key), in processing order.
    by_key: BTreeMap<StreamKey, Vec<String>>,
    calls: u64,
    ended: Vec<ShardInfo>,
    shutdowns: Vec<ShardInfo>,
    lost: Vec<ShardInfo>,
}

/// What recording processors processed, shared by all of them (clones share it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
/// use kcl_core::lease::InMemoryLeaseStore;
/// use kcl_core::model::InitialPosition;
/// use kcl_core::scheduler::SchedulerBuilder;
/// use kcl_core::testing::{RecordingLedger, run_until};
///
/// let kinesis = InMemoryKinesis::new();
/// let stream = kinesis.create_stream("orders", 2).unwrap();
/// let mut sent = BTreeMap::new();
/// for i in 0..20 {
///     let key = format!("k{}", i % 3);
///     kinesis.put_record("orders", PutRecordEntry::new(&key, i.to_string())).await.unwrap();
///     sent.entry(("orders".to_string(), key)).or_insert_with(Vec::new).push(i.to_string());
/// }
/// let ledger = RecordingLedger::new();
/// let scheduler = SchedulerBuilder::new(stream, "app")
///     .lease_store(Arc::new(InMemoryLeaseStore::new()))
///     .kinesis(Arc::new(kinesis))
///     .initial_position(InitialPosition::TrimHorizon)
///     .processor_factory(ledger.factory())
///     .build()
///     .unwrap();
/// let l = ledger.clone();
/// run_until(scheduler, Duration::from_secs(60), move || l.records() >= 20).await.unwrap();
/// ledger.check(&sent).unwrap();
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecordingLedger(Arc<Mutex<State>>);

impl RecordingLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory of [`RecordingProcessor`]s writing here, each checkpointing after every batch.
    pub fn factory(&self) -> impl Fn(&ShardInfo) -> RecordingProcessor + Send + Sync + 'static {
        let ledger = self.clone();
        move |info: &ShardInfo| RecordingProcessor {
            info: info.clone(),
            ledger: ledger.clone(),
        }
    }

    /// Record data per (stream, partition key), in processing order (redeliveries included).
    pub fn by_key(&self) -> BTreeMap<StreamKey, Vec<String>> {
        self.0.lock().by_key.clone()
    }

    /// Records processed (redeliveries included).
    pub fn records(&self) -> usize {
        self.0.lock().by_key.values().map(Vec::len).sum()
    }

    /// Successful `process_records` calls with records.
    pub fn calls(&self) -> u64 {
        self.0.lock().calls
    }

    /// Shards whose processor saw `shard_ended`.
    pub fn ended(&self) -> Vec<ShardInfo> {
        self.0.lock().ended.clone()
    }

    /// Shards whose processor saw `shutdown_requested`.
    pub fn shutdowns(&self) -> Vec<ShardInfo> {
        self.0.lock().shutdowns.clone()
    }

    /// Shards whose processor saw `lease_lost`.
    pub fn lost(&self) -> Vec<ShardInfo> {
        self.0.lock().lost.clone()
    }

    /// Checks the ledger against what was put, per (stream, partition key) in put order:
    /// every record processed at least once, nothing processed that was not put, and each key's
    /// records first processed in the order they were put (later repeats are redeliveries, which
    /// at-least-once allows). The error lists every violation.
    pub fn check(&self, sent: &BTreeMap<StreamKey, Vec<String>>) -> Result<(), String> {
        let got = self.by_key();
        let mut violations = Vec::new();
        for (key, put) in sent {
            let processed = got.get(key).map(Vec::as_slice).unwrap_or_default();
            let mut first = Vec::new();
            for v in processed {
                if !first.contains(v) {
                    first.push(v.clone());
                }
            }
            if first != *put {
                let missing: Vec<_> = put.iter().filter(|v| !first.contains(v)).collect();
                violations.push(format!(
                    "{key:?}: put {} records, processed {} distinct ({} missing, e.g. {:?}); first-processed order {}",
                    put.len(),
                    first.len(),
                    missing.len(),
                    missing.iter().take(3).collect::<Vec<_>>(),
                    if missing.is_empty() { "differs from put order" } else { "checked only when nothing is missing" },
                ));
            }
        }
        for key in got.keys().filter(|k| !sent.contains_key(*k)) {
            violations.push(format!("{key:?}: processed but never put"));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations.join("\n"))
        }
    }
}

/// Records each batch in a [`RecordingLedger`] (data as UTF-8 text, lossily), then checkpoints.
#[derive(Debug)]
pub struct RecordingProcessor {
    info: ShardInfo,
    ledger: RecordingLedger,
}

#[async_trait]
impl ShardRecordProcessor for RecordingProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if input.records.is_empty() {
            return Ok(());
        }
        {
            let mut state = self.ledger.0.lock();
            state.calls += 1;
            for r in input.records {
                state
                    .by_key
                    .entry((
                        self.info.stream.name.to_string(),
                        r.partition_key.to_string(),
                    ))
                    .or_default()
                    .push(String::from_utf8_lossy(&r.data).into_owned());
            }
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn lease_lost(&mut self, _input: LeaseLostInput) {
        self.ledger.0.lock().lost.push(self.info.clone());
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.ledger.0.lock().ended.push(self.info.clone());
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.ledger.0.lock().shutdowns.push(self.info.clone());
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

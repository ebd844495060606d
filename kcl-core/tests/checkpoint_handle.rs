//! Issue 12 §1: a processor that flushes to its sink in the background and checkpoints from
//! the flusher task through a `CheckpointHandle`, under graceful shutdown, a graceful hand-off
//! to another worker, and a lost lease (in-memory engine and lease store, paused time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kcl_core::checkpoint::{CheckpointError, CheckpointHandle, Checkpointer};
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, InitialPosition, StreamIdentity};
use kcl_core::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
};
use kcl_core::scheduler::SchedulerBuilder;
use kcl_core::{CancellationToken, async_trait};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// How long the sink takes to make a batch durable.
const FLUSH: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Ledger {
    /// Record values flushed per shard, by worker, in order.
    flushed: BTreeMap<(String, String), Vec<String>>,
    /// Where each processor started, per (worker, shard).
    started_at: Vec<(String, String, ExtendedSequenceNumber)>,
    /// Checkpoints the flushers wrote, and the ones that were fenced.
    checkpointed: Vec<(String, String, ExtendedSequenceNumber)>,
    fenced: Vec<(String, String, CheckpointError)>,
}

enum ToFlusher {
    Batch(Vec<String>, ExtendedSequenceNumber, CheckpointHandle),
    /// Flush everything pending, then answer.
    Drain(oneshot::Sender<()>),
}

/// Hands each batch to a flusher task, which writes it (taking `FLUSH`) and then checkpoints
/// through the handle; `shutdown_requested` waits for the flusher to drain.
struct Flushing {
    worker: String,
    shard: String,
    ledger: Arc<Mutex<Ledger>>,
    to_flusher: mpsc::UnboundedSender<ToFlusher>,
}

impl Flushing {
    fn new(worker: &str, shard: &ShardInfo, ledger: Arc<Mutex<Ledger>>) -> Self {
        let (to_flusher, mut inbox) = mpsc::unbounded_channel();
        let (w, s, l) = (
            worker.to_string(),
            shard.shard_id.to_string(),
            ledger.clone(),
        );
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                match message {
                    ToFlusher::Batch(values, position, handle) => {
                        tokio::time::sleep(FLUSH).await;
                        l.lock()
                            .flushed
                            .entry((w.clone(), s.clone()))
                            .or_default()
                            .extend(values);
                        match handle.checkpoint_at_position(position.clone()).await {
                            Ok(()) => l.lock().checkpointed.push((w.clone(), s.clone(), position)),
                            Err(e) => l.lock().fenced.push((w.clone(), s.clone(), e)),
                        }
                    }
                    ToFlusher::Drain(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self {
            worker: worker.to_string(),
            shard: shard.shard_id.to_string(),
            ledger,
            to_flusher,
        }
    }
}

#[async_trait]
impl ShardRecordProcessor for Flushing {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.ledger.lock().started_at.push((
            self.worker.clone(),
            self.shard.clone(),
            input.checkpoint,
        ));
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let Some(last) = input.records.last() else {
            return Ok(());
        };
        let values = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        let batch = ToFlusher::Batch(
            values,
            last.extended_sequence_number(),
            input.checkpointer.handle(),
        );
        self.to_flusher.send(batch).map_err(|_| "flusher gone")?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        _checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let (done, drained) = oneshot::channel();
        self.to_flusher
            .send(ToFlusher::Drain(done))
            .map_err(|_| "flusher gone")?;
        drained.await.map_err(|_| "flusher gone")?;
        Ok(())
    }
}

struct Setup {
    kinesis: InMemoryKinesis,
    store: Arc<InMemoryLeaseStore>,
    stream: StreamIdentity,
    ledger: Arc<Mutex<Ledger>>,
}

impl Setup {
    fn new(shards: u32) -> Self {
        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", shards).unwrap();
        Self {
            kinesis,
            store: Arc::new(InMemoryLeaseStore::new()),
            stream,
            ledger: Arc::default(),
        }
    }

    fn start(&self, worker: &str) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let ledger = self.ledger.clone();
        let id = worker.to_string();
        let scheduler = SchedulerBuilder::new(self.stream.clone(), "app")
            .worker_id(worker)
            .lease_store(self.store.clone())
            .kinesis(Arc::new(self.kinesis.clone()))
            .initial_position(InitialPosition::TrimHorizon)
            // A factory returning the processor itself: no boxing, no annotation.
            .processor_factory(move |shard: &ShardInfo| Flushing::new(&id, shard, ledger.clone()))
            .build()
            .unwrap();
        let token = CancellationToken::new();
        let run = tokio::spawn({
            let token = token.clone();
            async move {
                scheduler.run(token).await.unwrap();
            }
        });
        (token, run)
    }

    /// Puts `n` records (values `from..from + n`), one every 100 ms.
    async fn trickle(&self, from: usize, n: usize) {
        for i in from..from + n {
            self.kinesis
                .put_record(
                    "s",
                    PutRecordEntry::new(format!("k{i}"), Bytes::from(i.to_string())),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stored_checkpoint(&self, shard: &str) -> ExtendedSequenceNumber {
        self.store
            .snapshot()
            .into_iter()
            .find(|l| l.key == shard)
            .expect("lease")
            .checkpoint
    }
}

/// Graceful shutdown with a flush in progress: `shutdown_requested` waits for the flusher, whose
/// handle checkpoint lands before the lease is released, so a restart resumes after it.
#[tokio::test(start_paused = true)]
async fn a_flusher_checkpoints_before_a_graceful_shutdown_releases_the_lease() {
    let s = Setup::new(1);
    let (token, run) = s.start("a");
    s.trickle(0, 30).await;
    token.cancel();
    run.await.unwrap();
    let ledger = s.ledger.lock();
    assert!(ledger.fenced.is_empty(), "{:?}", ledger.fenced);
    let flushed = &ledger.flushed[&("a".to_string(), "shardId-000000000000".to_string())];
    assert_eq!(flushed.len(), 30, "every record flushed before the stop");
    let (.., last) = ledger
        .checkpointed
        .last()
        .expect("checkpoints landed")
        .clone();
    drop(ledger);
    let lease = s.store.snapshot().pop().unwrap();
    assert_eq!((lease.owner, lease.checkpoint), (None, last));
}

/// A graceful steal while flushes are pending: the victim's flusher checkpoint ends the
/// hand-off, and the thief starts right after it — nothing is flushed twice or skipped.
#[tokio::test(start_paused = true)]
async fn a_flusher_checkpoint_ends_a_hand_off_and_the_thief_resumes_after_it() {
    let s = Setup::new(2);
    let (ta, ra) = s.start("a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (tb, rb) = s.start("b");
    s.trickle(0, 200).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    ta.cancel();
    tb.cancel();
    ra.await.unwrap();
    rb.await.unwrap();
    let ledger = s.ledger.lock();
    assert!(ledger.fenced.is_empty(), "{:?}", ledger.fenced);
    let stolen: Vec<&(String, String, ExtendedSequenceNumber)> = ledger
        .started_at
        .iter()
        .filter(|(w, ..)| w == "b")
        .collect();
    assert!(!stolen.is_empty(), "b took a shard from a");
    for (_, shard, started) in stolen {
        let handed = ledger
            .checkpointed
            .iter()
            .filter(|(w, s, _)| w == "a" && s == shard)
            .map(|(.., p)| p.clone())
            .max();
        assert_eq!(
            Some(started.clone()),
            handed.or(Some(ExtendedSequenceNumber::TrimHorizon)),
            "b resumed {shard} at a's last flushed checkpoint"
        );
    }
    // Across both workers, every record flushed exactly once.
    let mut all: Vec<usize> = ledger
        .flushed
        .values()
        .flatten()
        .map(|v| v.parse().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

/// The lease is taken abruptly while a flush is pending: the flusher's checkpoint is fenced
/// (typed `LeaseLost`) and does not move the checkpoint the new owner resumes from.
#[tokio::test(start_paused = true)]
async fn a_flusher_checkpoint_after_the_lease_was_lost_is_fenced() {
    let s = Setup::new(1);
    let (token, run) = s.start("a");
    s.trickle(0, 20).await;
    tokio::time::sleep(FLUSH * 2).await;
    let before = s.stored_checkpoint("shardId-000000000000");
    s.trickle(20, 5).await;
    let lease = s.store.snapshot().pop().unwrap();
    s.store.take(&lease, "intruder").await.unwrap();
    tokio::time::sleep(FLUSH * 2).await;
    token.cancel();
    run.await.unwrap();
    let ledger = s.ledger.lock();
    assert!(
        ledger
            .fenced
            .iter()
            .any(|(.., e)| matches!(e, CheckpointError::LeaseLost { .. })),
        "{:?}",
        ledger.fenced
    );
    let after = s.stored_checkpoint("shardId-000000000000");
    assert_eq!(after, before, "no checkpoint of the former owner landed");
}

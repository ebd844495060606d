//! Multi-stream mode on the in-memory engine: streams added and removed while two workers run,
//! a reshard in one of them, nothing lost, per-key order held, and no leases leaked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kcl_core::engine::{InMemoryKinesis, PutRecordEntry};
use kcl_core::lease::{InMemoryLeaseStore, LeaseStore, MultiStreamKey};
use kcl_core::model::InitialPosition;
use kcl_core::scheduler::{RemovedStreamPolicy, RunEnd, SchedulerBuilder, StreamConfig, StreamSet};
use kcl_core::testing::RecordingLedger;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Fleet {
    kinesis: InMemoryKinesis,
    store: Arc<InMemoryLeaseStore>,
    streams: StreamSet,
    ledger: RecordingLedger,
    sent: BTreeMap<(String, String), Vec<u64>>,
    next: u64,
}

impl Fleet {
    fn new(policy: RemovedStreamPolicy) -> Self {
        Self {
            kinesis: InMemoryKinesis::new(),
            store: Arc::new(InMemoryLeaseStore::new()),
            streams: StreamSet::new(policy),
            ledger: RecordingLedger::new(),
            sent: BTreeMap::new(),
            next: 0,
        }
    }

    fn track(&self, name: &str) {
        let stream = self
            .kinesis
            .describe_stream(name)
            .map(|d| d.identity)
            .unwrap();
        self.streams
            .add(StreamConfig::new(stream, InitialPosition::TrimHorizon));
    }

    async fn put(&mut self, stream: &str, records: usize) {
        for i in 0..records {
            let key = format!("k{}", i % 5);
            self.next += 1;
            self.kinesis
                .put_record(
                    stream,
                    PutRecordEntry::new(&key, Bytes::from(self.next.to_string())),
                )
                .await
                .unwrap();
            self.sent
                .entry((stream.to_string(), key))
                .or_default()
                .push(self.next);
        }
    }

    fn worker(&self, id: &str, stop: CancellationToken) -> JoinHandle<RunEnd> {
        let scheduler = SchedulerBuilder::multi_stream(self.streams.clone(), "app")
            .worker_id(id)
            .lease_store(self.store.clone())
            .kinesis(Arc::new(self.kinesis.clone()))
            .shard_sync_interval(Duration::from_secs(5))
            .failover_time(Duration::from_secs(10))
            .processor_factory(self.ledger.factory())
            .build()
            .unwrap();
        tokio::spawn(async move {
            let report = scheduler.run(stop).await.unwrap();
            assert_eq!(report.aborted, 0);
            report.end
        })
    }

    fn processed(&self, stream: &str) -> usize {
        self.ledger
            .by_key()
            .iter()
            .filter(|((s, _), _)| s == stream)
            .map(|(_, v)| v.len())
            .sum()
    }

    fn sent(&self, stream: &str) -> usize {
        self.sent
            .iter()
            .filter(|((s, _), _)| s == stream)
            .map(|(_, v)| v.len())
            .sum()
    }

    /// Every record of `stream` was processed, in order per key; a record seen twice is a
    /// re-delivery after a crash (from the crashed worker's last checkpoint), so dropping
    /// repeats leaves exactly what was sent.
    fn assert_complete(&self, stream: &str) {
        let ledger = self.ledger.by_key();
        for ((s, key), sent) in &self.sent {
            if s != stream {
                continue;
            }
            let mut seen = std::collections::BTreeSet::new();
            let got: Vec<u64> = ledger
                .get(&(s.clone(), key.clone()))
                .into_iter()
                .flatten()
                .map(|v| v.parse().expect("a number"))
                .filter(|v| seen.insert(*v))
                .collect();
            assert_eq!(&got, sent, "stream {s} key {key}");
        }
    }

    /// For a stream no longer consumed: what was processed is an in-order prefix of what was
    /// sent, per key.
    fn assert_prefix(&self, stream: &str) {
        for ((s, key), got) in &self.ledger.by_key() {
            if s != stream {
                continue;
            }
            let got: Vec<u64> = got.iter().map(|v| v.parse().expect("a number")).collect();
            let sent = &self.sent[&(s.clone(), key.clone())];
            assert!(
                got.len() <= sent.len() && got[..] == sent[..got.len()],
                "stream {s} key {key}"
            );
        }
    }

    async fn wait_for(&self, stream: &str, what: usize) {
        for _ in 0..600 {
            if self.processed(stream) >= what {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{stream}: {} of {what} records processed",
            self.processed(stream)
        );
    }

    async fn lease_keys(&self) -> Vec<MultiStreamKey> {
        let listing = self.store.list().await.unwrap();
        assert!(listing.malformed.is_empty());
        listing
            .leases
            .iter()
            .map(|l| {
                let key: MultiStreamKey = l.key.parse().expect("a multi-stream key");
                let attrs = l
                    .multi_stream
                    .as_ref()
                    .expect("streamName and shardId attributes");
                assert_eq!(attrs.stream_identifier, key.stream_identifier());
                assert_eq!(attrs.shard_id, key.shard_id);
                key
            })
            .collect()
    }
}

/// Seeds for the add/remove scenario: 20 in CI, `KCL_SEEDS=n` for more.
fn seeds() -> u64 {
    std::env::var("KCL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[test]
fn streams_added_and_removed_while_running_lose_nothing_and_leak_no_leases() {
    for seed in 0..seeds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(added_and_removed(seed));
    }
}

/// Two workers on "orders" and "clicks"; "audit" (with a backlog) is added, "clicks" removed,
/// a worker crashes and is replaced, and an "orders" shard splits, at seeded rounds.
async fn added_and_removed(seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let add_at = rng.random_range(2..15);
    let crash_at = rng.random_range(2..30);
    let remove_at = rng.random_range(5..30);
    let split_at = rng.random_range(2..35);
    let mut fleet = Fleet::new(RemovedStreamPolicy::DeleteAfter(Duration::from_secs(60)));
    for (name, shards) in [("orders", 2), ("clicks", 2), ("audit", 3)] {
        fleet.kinesis.create_stream(name, shards).unwrap();
    }
    fleet.track("orders");
    fleet.track("clicks");
    fleet.put("audit", 300).await; // a backlog, consumed once the stream is added
    let stop = CancellationToken::new();
    let mut workers = vec![
        fleet.worker("w1", stop.clone()),
        fleet.worker("w2", stop.clone()),
    ];

    let mut clicks_at_removal = 0;
    for round in 0..40 {
        fleet.put("orders", 20).await;
        fleet.put("clicks", 20).await;
        fleet.put("audit", 10).await;
        if round == add_at {
            fleet.track("audit");
        }
        if round == crash_at {
            // A crash (no checkpoint, no release) and, two rounds later, a replacement.
            let victim = rng.random_range(0..workers.len());
            workers.remove(victim).abort();
        }
        if round == crash_at + 2 {
            workers.push(fleet.worker("w3", stop.clone()));
        }
        if round == remove_at {
            assert!(fleet.streams.remove("clicks"));
            // Consumers stop at the next shard sync.
            tokio::time::sleep(Duration::from_secs(6)).await;
            clicks_at_removal = fleet.processed("clicks");
        }
        if round == split_at {
            let shard = kcl_core::model::ShardId::new("shardId-000000000000");
            fleet.kinesis.split_shard_evenly("orders", &shard).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.wait_for("orders", fleet.sent("orders")).await;
    fleet.wait_for("audit", fleet.sent("audit")).await;
    fleet.assert_complete("orders");
    fleet.assert_complete("audit");
    fleet.assert_prefix("clicks");
    assert!(clicks_at_removal > 0, "seed {seed}");
    assert_eq!(
        fleet.processed("clicks"),
        clicks_at_removal,
        "records of a removed stream were processed"
    );
    if crash_at > remove_at {
        // Every "clicks" lease was held by a live worker: each consumer checkpointed on its way out.
        assert!(
            fleet
                .ledger
                .shutdowns()
                .iter()
                .any(|s| &*s.stream.name == "clicks")
        );
    }

    // Past the grace period the removed stream's leases are gone; the others remain.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let keys = fleet.lease_keys().await;
    assert!(keys.iter().all(|k| k.stream_name != "clicks"), "{keys:?}");
    assert!(keys.iter().all(|k| k.account_id == "000000000000"));
    let audit = keys.iter().filter(|k| k.stream_name == "audit").count();
    assert_eq!(audit, 3);
    assert!(
        keys.iter()
            .any(|k| k.stream_name == "orders" && k.shard_id.as_str() == "shardId-000000000003")
    );

    stop.cancel();
    for w in workers {
        assert_eq!(w.await.unwrap(), RunEnd::ShutdownRequested);
    }
    let listing = fleet.store.list().await.unwrap();
    assert!(
        listing.leases.iter().all(|l| l.owner.is_none()),
        "graceful stop releases every lease"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_stream_kept_resumes_from_its_checkpoints_when_added_back() {
    let mut fleet = Fleet::new(RemovedStreamPolicy::Keep);
    fleet.kinesis.create_stream("orders", 2).unwrap();
    fleet.kinesis.create_stream("other", 1).unwrap();
    fleet.track("orders");
    fleet.track("other");
    fleet.put("orders", 200).await;
    let stop = CancellationToken::new();
    let worker = fleet.worker("w1", stop.clone());
    fleet.wait_for("orders", 200).await;

    fleet.streams.remove("orders");
    tokio::time::sleep(Duration::from_secs(6)).await;
    fleet.put("orders", 100).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        fleet.processed("orders"),
        200,
        "a removed stream is not consumed"
    );
    let listing = fleet.store.list().await.unwrap();
    let orders: Vec<_> = listing
        .leases
        .iter()
        .filter(|l| l.key.contains(":orders:"))
        .collect();
    assert_eq!(orders.len(), 2, "kept leases stay in the table");
    assert!(
        orders.iter().all(|l| l.owner.is_none()),
        "and nobody holds them"
    );

    fleet.track("orders");
    fleet.wait_for("orders", 300).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    fleet.assert_complete("orders");
    stop.cancel();
    assert_eq!(worker.await.unwrap(), RunEnd::ShutdownRequested);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_stream_does_not_stop_a_multi_stream_scheduler() {
    let mut fleet = Fleet::new(RemovedStreamPolicy::DeleteAfter(Duration::from_secs(30)));
    fleet.kinesis.create_stream("orders", 1).unwrap();
    fleet.kinesis.create_stream("doomed", 1).unwrap();
    fleet.track("orders");
    fleet.track("doomed");
    fleet.put("doomed", 50).await;
    let stop = CancellationToken::new();
    let worker = fleet.worker("w1", stop.clone());
    fleet.wait_for("doomed", 50).await;
    fleet.kinesis.delete_stream("doomed").unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    fleet.put("orders", 100).await;
    fleet.wait_for("orders", 100).await;
    fleet.assert_complete("orders");
    fleet.assert_complete("doomed");
    let keys = fleet.lease_keys().await;
    assert!(keys.iter().all(|k| k.stream_name == "orders"), "{keys:?}");
    assert!(!worker.is_finished());
    stop.cancel();
    assert_eq!(worker.await.unwrap(), RunEnd::ShutdownRequested);
}

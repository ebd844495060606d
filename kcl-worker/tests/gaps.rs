//! Failover and hand-off gaps at the default failover time (issue 15 §6): four `kcl-worker`
//! processes share a 4-shard kinesis-local stream and a moto lease table while a producer
//! trickles records to every shard. Ten times each, one worker holding leases is SIGKILLed or
//! SIGTERMed and then restarted. From the workers' ledgers (each line says when its batch was
//! processed):
//! - crash: from the SIGKILL until every shard the victim held had a record processed by
//!   another worker — at most the failover time + 1 s;
//! - SIGTERM: per shard, from the stopping worker's last batch to the next worker's first — at
//!   most 1 s (the stopping worker processes until its receiver accepts the lease, so the shard
//!   is idle only for the hand-over itself); also reported: from the signal to that first batch.
//!
//! Workers poll every 250 ms, so a shard's batches normally come 250–400 ms apart. The figures
//! go to `gaps-report.txt` in the test's target tmp directory, which the test command prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kcl_core::lease::LeaseStore;
use kcl_dynamo_leases::DynamoLeaseStore;
use kcl_tests::{create_stream, emulator, emulator_config, unique};

mod fleet;
use fleet::{Producer, Run, ledger_paths, read_timed};

const WORKERS: usize = 4;
const SHARDS: usize = 4;
const FAILOVER: Duration = Duration::from_secs(10);
const EVENTS_EACH: usize = 10;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One stop: which worker, how, when, and the shards it held.
struct Stop {
    worker: String,
    kill: bool,
    at_ms: u64,
    shards: BTreeSet<String>,
}

/// Every processed batch of the run: (worker, shard, unix ms), in time order.
fn batches(dir: &Path) -> Vec<(String, String, u64)> {
    let mut all: Vec<_> = ledger_paths(dir)
        .iter()
        .flat_map(|p| read_timed(p))
        .collect();
    all.sort_by_key(|b| b.2);
    all.dedup();
    all
}

/// For each shard of `stop`: (signal → first batch by another worker, the stopping worker's
/// last batch → that first batch). `None` if some shard was never processed elsewhere.
fn gaps(stop: &Stop, batches: &[(String, String, u64)]) -> Option<(u64, u64)> {
    let (mut takeover, mut idle) = (0, 0);
    for shard in &stop.shards {
        let first_other = batches
            .iter()
            .find(|(w, s, t)| *w != stop.worker && s == shard && *t > stop.at_ms)?
            .2;
        // Its replacement (same worker id) starts only after this, so these are the stopped
        // incarnation's batches.
        let last_own = batches
            .iter()
            .filter(|(w, s, t)| *w == stop.worker && s == shard && *t <= first_other)
            .map(|b| b.2)
            .max()
            .unwrap_or(stop.at_ms);
        takeover = takeover.max(first_other.saturating_sub(stop.at_ms));
        idle = idle.max(first_other.saturating_sub(last_own));
    }
    Some((takeover, idle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_sigterm_gaps_at_the_default_failover_time() {
    let (Some(kinesis), Some(dynamo)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
    ) else {
        return;
    };
    let client = aws_sdk_kinesis::Client::new(&emulator_config(&kinesis).await);
    let stream = unique("gaps");
    create_stream(&client, &stream, SHARDS as i32).await;
    let app = unique("gaps-app");
    let dir = std::env::temp_dir().join(unique("kcl-gaps"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(DynamoLeaseStore::from_config(
        &emulator_config(&dynamo).await,
        &app,
    ));
    // The default failover time (10 s); polls every 250 ms, so gaps are measured finely.
    let mut run = Run::new(
        app,
        &stream,
        &dir,
        (&kinesis, &dynamo),
        WORKERS,
        vec![("IDLE_TIME_BETWEEN_READS_MS", "250".into())],
    );
    for slot in 0..WORKERS {
        run.start(slot);
    }
    // A trickle to every shard: 24 keys every 200 ms.
    let producing = tokio_util::sync::CancellationToken::new();
    let producer = {
        let mut p = Producer {
            client: client.clone(),
            stream: stream.clone(),
            next: BTreeMap::new(),
            round: 0,
        };
        let producing = producing.clone();
        tokio::spawn(async move {
            while !producing.is_cancelled() {
                p.round().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            p
        })
    };
    let held_by = |listing: &kcl_core::lease::LeaseListing, worker: &str| -> BTreeSet<String> {
        listing
            .leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(worker) && l.checkpoint_owner.is_none())
            .map(|l| l.key.clone())
            .collect()
    };
    // Settled: each worker holds one lease, none in a hand-off (then a second more, for the
    // receivers' first batches). Past `limit` the run goes on as it is, as a fixed wait did.
    let settle = async |limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(listing) = store.list().await {
                let balanced = (0..WORKERS)
                    .all(|s| held_by(&listing, &Run::worker_id(s)).len() == SHARDS / WORKERS);
                if balanced {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    settle(Duration::from_secs(30)).await;
    let mut stops = Vec::new();
    for i in 0..2 * EVENTS_EACH {
        let kill = i % 2 == 0;
        let listing = store.list().await.unwrap();
        // The worker with the most leases, so every event moves some.
        let slot = (0..WORKERS)
            .max_by_key(|s| {
                (
                    held_by(&listing, &Run::worker_id(*s)).len(),
                    (*s + i) % WORKERS,
                )
            })
            .unwrap();
        let worker = Run::worker_id(slot);
        run.wait_for_handlers(slot).await;
        let mut child = run.slots[slot].child.take().unwrap();
        let shards = held_by(&store.list().await.unwrap(), &worker);
        let at_ms = unix_ms();
        let signalled = Instant::now();
        Run::signal(&child, if kill { "-KILL" } else { "-TERM" });
        let status = child.wait().unwrap();
        if kill {
            run.killed
                .insert(run.ledger(slot, run.slots[slot].incarnation));
        } else {
            assert_eq!(status.code(), Some(0), "{worker} after SIGTERM: {status:?}");
        }
        stops.push(Stop {
            worker: worker.clone(),
            kill,
            at_ms,
            shards,
        });
        // Until every shard it held was processed elsewhere (bounded), then a replacement.
        let bound = if kill {
            FAILOVER + Duration::from_secs(5)
        } else {
            Duration::from_secs(10)
        };
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if gaps(stops.last().unwrap(), &batches(&dir)).is_some() {
                break;
            }
            assert!(
                signalled.elapsed() < bound,
                "{} of {worker}: its shards not processed elsewhere within {bound:?}",
                if kill { "SIGKILL" } else { "SIGTERM" }
            );
        }
        run.start(slot);
        // The replacement takes its share (graceful steals) before the next event.
        settle(Duration::from_secs(20)).await;
    }
    producing.cancel();
    let producer = producer.await.unwrap();
    // Nothing lost: every record produced is in some ledger.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<(String, u64)> = ledger_paths(&dir)
            .iter()
            .flat_map(|p| fleet::read_ledger(p))
            .map(|(k, v, _)| (k, v))
            .collect();
        if seen.len() as u64 >= producer.sent() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records lost: {} of {}",
            seen.len(),
            producer.sent()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for slot in 0..WORKERS {
        if let Some(mut child) = run.slots[slot].child.take() {
            Run::signal(&child, "-TERM");
            assert_eq!(child.wait().unwrap().code(), Some(0));
        }
    }
    let all = batches(&dir);
    let mut crash = Vec::new();
    let mut term = Vec::new();
    for stop in &stops {
        let (takeover, idle) = gaps(stop, &all).expect("measured during the run");
        if stop.kill {
            crash.push(takeover);
        } else {
            term.push((idle, takeover));
        }
    }
    let secs = |ms: &u64| format!("{:.2}", *ms as f64 / 1000.0);
    let report = format!(
        "gap run (failover 10 s, 4 workers, 4 shards): SIGKILL -> every shard processed elsewhere, s: {}; SIGTERM idle gap per event (stopping worker's last batch -> next worker's first, worst shard), s: {}; SIGTERM -> first batch elsewhere, s: {}\n",
        crash.iter().map(secs).collect::<Vec<_>>().join(" "),
        term.iter()
            .map(|t| secs(&t.0))
            .collect::<Vec<_>>()
            .join(" "),
        term.iter()
            .map(|t| secs(&t.1))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!("{report}");
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("gaps-report.txt"),
        &report,
    )
    .expect("report file");
    let limit = (FAILOVER + Duration::from_secs(1)).as_millis() as u64;
    // The workers' logs stay for a failure's post-mortem.
    let logs = dir.display();
    assert!(crash.iter().all(|t| *t <= limit), "{report}\nlogs: {logs}");
    assert!(term.iter().all(|t| t.0 <= 1000), "{report}\nlogs: {logs}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Lease-store cost at default settings, next to the Java KCL's, and the CPU time of one taker
//! cycle on a large table.
//!
//! `cargo bench -p kcl-core --bench leases` (see the README).
//!
//! 1. A fleet of coordinators on the in-memory store runs one hour of virtual time (paused
//!    tokio clock) at default settings; the store counts every call.
//! 2. One coordinator's taker cycle over 10,000 leases held by 100 workers (list, observation,
//!    balancing plan), timed on a single-threaded runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kcl_core::lease::{
    CoordinatorConfig, InMemoryLeaseStore, Lease, LeaseCoordinator, LeaseOperation, LeaseStore,
};
use kcl_core::model::{ExtendedSequenceNumber, ShardId};

const SHARDS: usize = 100;
const WORKERS: usize = 4;

fn lease(i: usize, owner: Option<String>) -> Lease {
    let mut l = Lease::new(
        &ShardId::from_index(i as u64),
        ExtendedSequenceNumber::TrimHorizon,
    );
    l.owner = owner;
    l
}

fn store_cost() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(InMemoryLeaseStore::new());
        for i in 0..SHARDS {
            store.create_if_absent(&lease(i, None)).await.unwrap();
        }
        let mut fleet = Vec::new();
        for w in 0..WORKERS {
            let (c, events) =
                LeaseCoordinator::start(store.clone(), CoordinatorConfig::new(format!("w{w}")))
                    .unwrap();
            fleet.push((c, events));
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        // Warm up until balanced, then count one steady hour.
        tokio::time::sleep(Duration::from_secs(300)).await;
        store.reset_stats();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let stats = store.stats();
        let config = CoordinatorConfig::new("x");
        let per_shard = |n: u64| n as f64 / SHARDS as f64;
        let lists_per_worker = stats.get(LeaseOperation::List) as f64 / WORKERS as f64;
        let kcl_renewals = 3600.0 / 3.308;
        let kcl_scans_per_worker = 3600.0 / 20.05;
        println!(
            "store cost, {SHARDS} shards, {WORKERS} workers, one steady hour at default settings"
        );
        println!(
            "(failover {:?}, renew every {:?}, taker every {:?})",
            config.failover_time,
            config.renew_interval(),
            config.taker_interval()
        );
        println!(
            "{:<44} {:>10} {:>10} {:>8}",
            "", "kcl-rs", "Java KCL", "ratio"
        );
        let row = |name: &str, ours: f64, kcl: f64| {
            println!("{name:<44} {ours:>10.0} {kcl:>10.0} {:>7.2}x", ours / kcl)
        };
        row(
            "renewals per shard-hour",
            per_shard(stats.get(LeaseOperation::Renew)),
            kcl_renewals,
        );
        row(
            "full-table lists per worker-hour",
            lists_per_worker,
            kcl_scans_per_worker,
        );
        // Each list reads the whole table (SHARDS items): items read per shard = lists.
        row(
            "items read by lists per shard-hour",
            stats.get(LeaseOperation::List) as f64,
            kcl_scans_per_worker * WORKERS as f64,
        );
        let other = stats.writes() - stats.get(LeaseOperation::Renew);
        println!(
            "{:<44} {:>10.1}",
            "other writes per shard-hour (takes, steals)",
            per_shard(other)
        );
        println!(
            "{:<44} {:>10.0}",
            "all calls per shard-hour",
            per_shard(stats.total())
        );
        drop(fleet);
    });
}

fn taker_cycle_cpu() {
    const LEASES: usize = 10_000;
    const OWNERS: usize = 100;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(InMemoryLeaseStore::new());
        for i in 0..LEASES {
            store.put_unconditionally(lease(i, Some(format!("w{:03}", i % OWNERS))));
        }
        let (c, _events) = LeaseCoordinator::start(store.clone(), CoordinatorConfig::new("w000")).unwrap();
        // The first cycle takes this worker's own 100 leases; later cycles are steady.
        c.take_now().await;
        let n = 30;
        let start = Instant::now();
        for _ in 0..n {
            c.take_now().await;
        }
        let per_cycle = start.elapsed() / n;
        println!("\ntaker cycle over {LEASES} leases held by {OWNERS} workers: {:.2} ms per cycle (list + observe + plan)", per_cycle.as_secs_f64() * 1e3);
        println!("held by this worker afterwards: {}", c.held_leases().await.len());
    });
}

fn main() {
    store_cost();
    taker_cycle_cpu();
}

//! The scale simulation (issue 15 §5): a fleet of lease coordinators on the in-memory store in
//! virtual time, through a steady period, a rolling restart of every worker, a crash of 10 % of
//! them and a reshard that doubles the shards. Every store call is charged in DynamoDB capacity
//! units ([`CostStore`]). Per phase it reports read and write units per shard-hour, listings,
//! when the fleet was balanced again (max − min ≤ 1 lease with work per worker), and the longest
//! time a lease was held by nobody (between one holder's end — a crash, a release, a hand-off —
//! and the next holder's start).
//!
//! Coordinators only, no shard consumers: a planned stop is the scheduler's (stop taking, offer
//! every lease, release what was not offered, wait for the offers, shut down), and a holder
//! answers a hand-off at once with its last checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::cost::{CostStore, Units};
use crate::lease::{
    CheckpointUpdate, CoordinatorConfig, InMemoryLeaseStore, Lease, LeaseCoordinator, LeaseEvent,
    LeaseStore,
};
use crate::model::{ExtendedSequenceNumber, ShardId};

/// What to simulate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScaleConfig {
    /// Shards (leases) at the start; the reshard doubles them.
    pub shards: usize,
    /// Workers.
    pub workers: usize,
    /// Seed of the start-up jitter and of who crashes.
    pub seed: u64,
    /// Length of the steady phase (costs are measured over it).
    pub steady: Duration,
    /// Time between two workers' stops in the rolling restart; each replacement comes up 5 s
    /// after its predecessor stopped (as a new container would), so a stride above that lets
    /// each replacement take its share before the next stop, as rolling updates that wait for
    /// readiness do.
    pub restart_stride: Duration,
    /// How long each other phase is watched after its event.
    pub settle: Duration,
}

impl ScaleConfig {
    /// Sets [`shards`](Self::shards).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Sets [`workers`](Self::workers).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`steady`](Self::steady).
    pub fn with_steady(mut self, steady: Duration) -> Self {
        self.steady = steady;
        self
    }

    /// Sets [`restart_stride`](Self::restart_stride).
    pub fn with_restart_stride(mut self, restart_stride: Duration) -> Self {
        self.restart_stride = restart_stride;
        self
    }

    /// Sets [`settle`](Self::settle).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }
}

impl ScaleConfig {
    /// `shards` × `workers` with a 10-minute steady phase, stops 15 s apart in the rolling
    /// restart, and 2 minutes after each event.
    pub fn new(shards: usize, workers: usize) -> Self {
        Self {
            shards,
            workers,
            seed: 0,
            steady: Duration::from_secs(600),
            restart_stride: Duration::from_secs(15),
            settle: Duration::from_secs(120),
        }
    }
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// `steady`, `rolling restart`, `crash 10 %` or `reshard ×2`.
    pub name: &'static str,
    /// Virtual time the phase lasted.
    pub duration: Duration,
    /// Leases in the table during the phase.
    pub leases: usize,
    /// Capacity units and listings charged during the phase.
    pub units: Units,
    /// Time from the phase's event (the last restart, the crash, the reshard) until max − min
    /// ≤ 1 lease with work per live worker; `None` if not within the phase.
    pub balanced_after: Option<Duration>,
    /// The longest time a lease with work had no holder.
    pub longest_gap: Duration,
    /// Leases that changed holder.
    pub moves: u64,
}

impl PhaseReport {
    /// Read units per shard-hour.
    pub fn read_per_shard_hour(&self) -> f64 {
        self.units.read / self.leases as f64 / (self.duration.as_secs_f64() / 3600.0)
    }

    /// Write units per shard-hour.
    pub fn write_per_shard_hour(&self) -> f64 {
        self.units.write / self.leases as f64 / (self.duration.as_secs_f64() / 3600.0)
    }
}

/// Holding intervals, from the coordinators' events.
#[derive(Debug, Default)]
struct Holdings {
    /// Current holder of each lease and since when.
    holder: HashMap<String, String>,
    /// When each lease without a holder lost its last one.
    free_since: HashMap<String, Instant>,
    longest_gap: Duration,
    moves: u64,
}

impl Holdings {
    fn gained(&mut self, key: &str, worker: &str) {
        if let Some(since) = self.free_since.remove(key) {
            self.longest_gap = self.longest_gap.max(Instant::now() - since);
        }
        // Gained before the previous holding's end was seen (a hand-off): that end is then
        // ignored, since the holder is no longer the one ending.
        self.holder.insert(key.to_string(), worker.to_string());
        self.moves += 1;
    }

    fn ended(&mut self, key: &str, worker: &str) {
        if self.holder.get(key).is_some_and(|w| w == worker) {
            self.holder.remove(key);
            self.free_since.insert(key.to_string(), Instant::now());
        }
    }

    /// Starts a phase: gaps still open count from now on.
    fn reset(&mut self) {
        let now = Instant::now();
        self.longest_gap = Duration::ZERO;
        self.moves = 0;
        for since in self.free_since.values_mut() {
            *since = (*since).max(now);
        }
    }

    /// The longest gap, counting leases still without a holder.
    fn longest(&self, ended: &dyn Fn(&str) -> bool) -> Duration {
        let now = Instant::now();
        self.free_since
            .iter()
            .filter(|(k, _)| !ended(k))
            .map(|(_, t)| now - *t)
            .fold(self.longest_gap, Duration::max)
    }
}

struct Worker {
    coordinator: Arc<LeaseCoordinator>,
    events: JoinHandle<()>,
}

struct Fleet {
    memory: Arc<InMemoryLeaseStore>,
    store: Arc<CostStore>,
    workers: BTreeMap<String, Worker>,
    holdings: Arc<Mutex<Holdings>>,
}

impl Fleet {
    fn start(&mut self, id: &str) {
        let store: Arc<dyn LeaseStore> = self.store.clone();
        let (c, mut events) =
            LeaseCoordinator::start(store, CoordinatorConfig::new(id)).expect("valid config");
        let c = Arc::new(c);
        let weak = Arc::downgrade(&c);
        let (holdings, me) = (self.holdings.clone(), id.to_string());
        let events = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    LeaseEvent::Gained { lease, .. } => holdings.lock().gained(&lease.key, &me),
                    LeaseEvent::Lost { key, .. } => holdings.lock().ended(&key, &me),
                    LeaseEvent::HandingOff { lease } => {
                        holdings.lock().ended(&lease.key, &me);
                        if let Some(c) = weak.upgrade() {
                            let _ = c
                                .finish_hand_off(&lease.key, Some(lease.checkpoint.clone()))
                                .await;
                        }
                    }
                    // An offer taken back is held as before; a stop releases it at shutdown.
                    LeaseEvent::OfferWithdrawn { .. } => {}
                }
            }
        });
        self.workers.insert(
            id.to_string(),
            Worker {
                coordinator: c,
                events,
            },
        );
    }

    /// As the scheduler stops: offer every lease, release the rest, wait for the offers.
    async fn stop(&mut self, id: &str) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        let c = w.coordinator;
        c.stop_taking();
        let offered = c.offer_leases().await;
        for l in c.held_leases().await {
            if !offered.contains(&l.key) {
                let _ = c.release(&l.key, None).await;
            }
        }
        let by = Instant::now() + Duration::from_secs(30);
        while c.offers_pending() && Instant::now() < by {
            sleep(Duration::from_millis(50)).await;
        }
        c.shutdown().await;
        // Let the event loop see the last events before it goes.
        sleep(Duration::from_millis(1)).await;
        w.events.abort();
    }

    /// As a crash: nothing released, every holding ends now.
    fn crash(&mut self, id: &str) {
        if let Some(w) = self.workers.remove(id) {
            w.events.abort();
            drop(w.coordinator);
            let mut h = self.holdings.lock();
            let keys: Vec<String> = h
                .holder
                .iter()
                .filter(|(_, w)| *w == id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                h.ended(&k, id);
            }
        }
    }

    /// Max − min of the leases with work per live worker, from the table; unbounded while a
    /// lease with work has no live owner.
    fn spread(&self) -> usize {
        let mut counts: BTreeMap<&str, usize> =
            self.workers.keys().map(|w| (w.as_str(), 0)).collect();
        let leases = self.memory.snapshot();
        for l in leases.iter().filter(|l| !l.is_shard_end()) {
            match l.owner.as_deref().and_then(|o| counts.get_mut(o)) {
                Some(c) => *c += 1,
                None => return usize::MAX,
            }
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        max - min
    }

    /// Watches until `until`, noting when the fleet was first balanced again after `since`.
    async fn watch(&self, since: Instant, until: Instant) -> Option<Duration> {
        let mut balanced = None;
        while Instant::now() < until {
            sleep(Duration::from_secs(1)).await;
            if balanced.is_none() && self.spread() <= 1 {
                balanced = Some(Instant::now() - since);
            } else if self.spread() > 1 {
                balanced = None;
            }
        }
        balanced
    }

    fn phase_start(&self) -> (Units, Instant) {
        self.holdings.lock().reset();
        (self.store.units(), Instant::now())
    }

    fn phase_end(
        &self,
        name: &'static str,
        (units, began): (Units, Instant),
        balanced_after: Option<Duration>,
    ) -> PhaseReport {
        let now = self.store.units();
        let leases = self.memory.snapshot();
        let ended: std::collections::HashSet<String> = leases
            .iter()
            .filter(|l| l.is_shard_end())
            .map(|l| l.key.clone())
            .collect();
        let h = self.holdings.lock();
        PhaseReport {
            name,
            duration: Instant::now() - began,
            leases: leases.len(),
            units: Units {
                read: now.read - units.read,
                write: now.write - units.write,
                listings: now.listings - units.listings,
            },
            balanced_after,
            longest_gap: h.longest(&|k| ended.contains(k)),
            moves: h.moves,
        }
    }
}

fn worker_id(i: usize) -> String {
    format!("worker-{i:04}")
}

/// Runs the scenario on a paused current-thread runtime and reports each phase.
pub fn simulate_scale(config: &ScaleConfig) -> Vec<PhaseReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(config))
}

async fn run(config: &ScaleConfig) -> Vec<PhaseReport> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let memory = Arc::new(InMemoryLeaseStore::new());
    for i in 0..config.shards {
        memory.put_unconditionally(Lease::new(
            &ShardId::from_index(i as u64),
            ExtendedSequenceNumber::TrimHorizon,
        ));
    }
    let mut fleet = Fleet {
        store: Arc::new(CostStore::new(memory.clone())),
        memory,
        workers: BTreeMap::new(),
        holdings: Arc::default(),
    };
    let mut reports = Vec::new();

    // Start-up over 10 s, then settle, then the steady phase.
    for i in 0..config.workers {
        fleet.start(&worker_id(i));
        sleep(Duration::from_millis(
            rng.random_range(0..=20_000 / config.workers.max(1) as u64),
        ))
        .await;
    }
    sleep(config.settle).await;
    let phase = fleet.phase_start();
    let balanced = fleet.watch(phase.1, phase.1 + config.steady).await;
    reports.push(fleet.phase_end("steady", phase, balanced));

    // Rolling restart: every worker stops gracefully and comes back 5 s later.
    let phase = fleet.phase_start();
    let mut returning: Vec<(Instant, String)> = Vec::new();
    for i in 0..config.workers {
        let id = worker_id(i);
        fleet.stop(&id).await;
        returning.push((Instant::now() + Duration::from_secs(5), id));
        let next = Instant::now() + config.restart_stride;
        while let Some((at, _)) = returning.first()
            && *at <= next
        {
            tokio::time::sleep_until(*at).await;
            let (_, id) = returning.remove(0);
            fleet.start(&id);
        }
        tokio::time::sleep_until(next).await;
    }
    for (at, id) in std::mem::take(&mut returning) {
        tokio::time::sleep_until(at).await;
        fleet.start(&id);
    }
    let last = Instant::now();
    let balanced = fleet.watch(last, last + config.settle).await;
    reports.push(fleet.phase_end("rolling restart", phase, balanced));

    // A crash of 10 % of the workers, at once; they come back once the phase is over.
    let phase = fleet.phase_start();
    let mut ids: Vec<String> = fleet.workers.keys().cloned().collect();
    let mut crashed = Vec::new();
    for _ in 0..(config.workers / 10).max(1) {
        let id = ids.remove(rng.random_range(0..ids.len()));
        fleet.crash(&id);
        crashed.push(id);
    }
    let balanced = fleet.watch(phase.1, phase.1 + config.settle).await;
    reports.push(fleet.phase_end("crash 10 %", phase, balanced));
    for id in crashed {
        fleet.start(&id);
    }
    sleep(config.settle).await;

    // A reshard doubling the shards: every shard splits; its owner checkpoints SHARD_END once
    // both children have leases (as shard sync creates them).
    let phase = fleet.phase_start();
    let parents: Vec<Lease> = fleet.memory.snapshot();
    for (i, parent) in parents.iter().enumerate() {
        let mut children = Vec::new();
        for c in 0..2 {
            let id = ShardId::from_index((config.shards + 2 * i + c) as u64);
            let mut child = Lease::new(&id, ExtendedSequenceNumber::TrimHorizon);
            child.parent_shard_ids = vec![parent.shard_id()];
            fleet.store.create_if_absent(&child).await.expect("new key");
            children.push(id);
        }
        let _ = fleet.store.set_child_shards(&parent.key, &children).await;
    }
    for parent in &parents {
        for w in fleet.workers.values() {
            if let Some(token) = w.coordinator.token(&parent.key).await {
                let _ = w
                    .coordinator
                    .checkpoint(
                        &parent.key,
                        token,
                        CheckpointUpdate::Commit(ExtendedSequenceNumber::ShardEnd),
                    )
                    .await;
            }
        }
    }
    let balanced = fleet.watch(phase.1, phase.1 + config.settle).await;
    reports.push(fleet.phase_end("reshard ×2", phase, balanced));
    for w in fleet.workers.values() {
        w.events.abort();
    }
    reports
}

//! The taker: lists the table, tracks how long each lease's counter has stood still, and takes
//! and steals per the balancing plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::plan::{Availability, PlanInput, plan};
use super::{Phase, Shared};
use crate::lease::Lease;

/// What this worker saw of each lease's counter.
pub(super) type Observed = BTreeMap<String, Seen>;

#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    counter: u64,
    /// When the lease expires unless its counter moves: failover after the listing that first
    /// showed this counter, or sooner by the counter's renewal stamp (see the coordinator's
    /// module docs).
    expires: Instant,
    /// Whether it changed between the previous listing and the latest one: proof that its
    /// owner is renewing, which a graceful steal needs (a stopped owner cannot hand off).
    renewing: bool,
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shared.taking.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let periodic = Instant::now() + shared.config.taker_interval;
        next = match cycle(&shared).await {
            Some(deadline) => deadline.min(periodic),
            None => periodic,
        };
    }
}

/// One taker cycle. Returns the earliest time a lease seen now could expire (or, after first
/// sightings, when their owners should have renewed), so the next cycle can run right then
/// instead of up to a taker interval later.
pub(super) async fn cycle(shared: &Shared) -> Option<Instant> {
    // One cycle at a time: the periodic one and `take_now` share the observations.
    let mut observed = shared.observed.lock().await;
    if shared.taking.is_cancelled() {
        return None;
    }
    let observed = &mut *observed;
    let mut listing = match shared.store.list_eventually().await {
        Ok(l) => l,
        Err(e) => {
            warn!(worker_id = %shared.me(), error = %e, "listing leases failed; retrying next cycle");
            return None;
        }
    };
    for bad in &listing.malformed {
        warn!(worker_id = %shared.me(), error = %bad, "skipping a malformed lease");
    }
    // Before the filter, so that every worker names the same leader.
    *shared.sync_leader.lock() = listing
        .leases
        .iter()
        .filter(|l| l.owner.is_some())
        .min_by(|a, b| a.key.cmp(&b.key))
        .and_then(|l| l.owner.clone());
    let filter = shared.filter.0.lock().clone();
    if let Some(accept) = filter {
        listing.leases.retain(|l| accept(l));
    }
    let owners: BTreeSet<&str> = listing
        .leases
        .iter()
        .filter_map(|l| l.owner.as_deref())
        .collect();
    shared.metrics.workers.set(owners.len().max(1) as f64);
    shared
        .fleet_size
        .store(owners.len().max(1), std::sync::atomic::Ordering::Relaxed);
    let now = Instant::now();
    let failover = shared.config.failover_time;
    let listed: BTreeSet<&str> = listing.leases.iter().map(|l| l.key.as_str()).collect();
    observed.retain(|k, _| listed.contains(k.as_str()));
    // Leases of other owners seen for the first time: look again after one renewal (and a
    // margin for its round trip) instead of a whole taker interval, so that a live owner can
    // prove itself before balancing needs a steal.
    let mut first_sightings = false;
    let now_millis = super::clock::unix_millis_now();
    let stamped_expiry = |lease: &Lease| {
        let by_counter = now + failover;
        stamp_expiry(shared, lease, now, now_millis).map_or(by_counter, |e| e.min(by_counter))
    };
    for lease in &listing.leases {
        match observed.get_mut(&lease.key) {
            Some(seen) => {
                seen.renewing = seen.counter != lease.counter;
                if seen.renewing {
                    seen.counter = lease.counter;
                    seen.expires = stamped_expiry(lease);
                }
            }
            None => {
                first_sightings |= lease.owner.as_deref().is_some_and(|o| o != shared.me());
                observed.insert(
                    lease.key.clone(),
                    Seen {
                        counter: lease.counter,
                        expires: stamped_expiry(lease),
                        renewing: false,
                    },
                );
            }
        }
    }
    let held: BTreeSet<String> = shared.entries().into_iter().map(|(k, _)| k).collect();
    let me = shared.me();
    let epoch = observed.values().map(|s| s.expires).min().unwrap_or(now);
    let renew = shared.config.renew_interval;
    let mut next_expiry: Option<Instant> =
        first_sightings.then(|| now + renew.saturating_add(renew / 2));
    let mut to_accept = Vec::new();
    let leases: Vec<(&Lease, Availability)> = listing
        .leases
        .iter()
        .map(|lease| {
            let Seen {
                expires, renewing, ..
            } = observed[&lease.key];
            let availability = match lease.owner.as_deref() {
                None => Availability::Free { order: 0 },
                Some(owner) if owner == me => {
                    if held.contains(&lease.key) {
                        Availability::Live
                    } else if lease.checkpoint_owner.is_some() {
                        // Offered to this worker, or a graceful steal of ours that landed
                        // although it reported failure: accept it below (a renewal), then wait
                        // for the previous owner like any steal.
                        to_accept.push(lease.key.clone());
                        Availability::Live
                    } else {
                        Availability::Free { order: 0 }
                    }
                }
                Some(_) if now >= expires => {
                    // Longest-expired first.
                    Availability::Free {
                        order: expires.saturating_duration_since(epoch).as_nanos(),
                    }
                }
                Some(_) => {
                    next_expiry = Some(next_expiry.map_or(expires, |e| e.min(expires)));
                    if renewing {
                        Availability::Live
                    } else {
                        Availability::Quiet
                    }
                }
            };
            (lease, availability)
        })
        .collect();
    for key in to_accept {
        super::offer::accept_unlocked(shared, &key).await;
    }
    let input = PlanInput {
        me,
        leases,
        max_leases_for_worker: shared.config.max_leases_for_worker,
        max_steal: shared.config.max_leases_to_steal_at_one_time,
    };
    let plan = plan(&input);
    if tracing::enabled!(tracing::Level::TRACE) {
        let free = input
            .leases
            .iter()
            .filter(|(_, a)| matches!(a, Availability::Free { .. }))
            .count();
        let mut live: BTreeMap<&str, usize> = BTreeMap::new();
        for (l, a) in &input.leases {
            if let (Availability::Live | Availability::Quiet, Some(o)) = (a, l.owner.as_deref()) {
                *live.entry(o).or_default() += 1;
            }
        }
        tracing::trace!(worker_id = %me, free, ?live, "taker view");
    }
    if !plan.take.is_empty() || !plan.steal.is_empty() {
        debug!(worker_id = %me, target = plan.target, take = plan.take.len(), steal = plan.steal.len(), "taker plan");
    }
    let takes = plan.take.iter().map(|l| take(shared, l));
    let steals = plan.steal.iter().map(|l| steal(shared, l));
    futures::future::join_all(takes).await;
    futures::future::join_all(steals).await;
    next_expiry
}

/// When `lease` expires by its renewal stamp (its last writer's send time + failover + the
/// clock-skew margin, on this worker's clock, given the wall clock `now_millis` read at
/// `now`); `None` when the stamp is not of the lease's counter (a Java writer wrote last).
fn stamp_expiry(shared: &Shared, lease: &Lease, now: Instant, now_millis: u64) -> Option<Instant> {
    let stamp = lease.renewed_at.filter(|s| s.counter == lease.counter)?;
    Some(
        super::clock::instant_of(stamp.unix_millis, now, now_millis)
            + shared.config.failover_time
            + shared.config.clock_skew_margin,
    )
}

async fn take(shared: &Shared, lease: &Lease) {
    let sent = Instant::now();
    let mut lease = lease.clone();
    super::stamp_next(&mut lease);
    match shared.store.take(&lease, shared.me()).await {
        Ok(taken) => {
            shared.metrics.taken.increment(1);
            shared.insert(taken, sent, Phase::Ready)
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %lease.key, error = %e, "take failed")
        }
    }
}

async fn steal(shared: &Shared, lease: &Lease) {
    if !shared.config.steal_gracefully {
        return take(shared, lease).await;
    }
    let sent = Instant::now();
    let from = lease.owner.clone().unwrap_or_default();
    // The victim's last write: if it dies now, its lease would have expired one failover time
    // after it, and a steal must not make it wait longer. A live victim sees the steal at its
    // next renewal, well before, and extends the wait if its batch needs it.
    let victim_expiry = stamp_expiry(shared, lease, sent, super::clock::unix_millis_now());
    let mut lease = lease.clone();
    super::stamp_next(&mut lease);
    match shared.store.hand_off(&lease, shared.me()).await {
        Ok(stolen) => {
            shared.metrics.stolen.increment(1);
            let deadline = victim_expiry
                .map_or(sent + shared.config.graceful_handoff_timeout, |e| {
                    e.min(sent + shared.config.graceful_handoff_timeout)
                });
            shared.insert(stolen, sent, Phase::Incoming { from, deadline });
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %lease.key, error = %e, "graceful steal failed")
        }
    }
}

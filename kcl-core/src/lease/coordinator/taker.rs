//! The taker: lists the table, tracks how long each lease's counter has stood still, and takes
//! and steals per the balancing plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

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

/// The shortest time between two listings made for expiries.
const EXPIRY_BATCH: Duration = Duration::from_millis(250);

/// When the taker lists next, and what the deputy watches until then.
#[derive(Debug, Clone)]
pub(super) struct Next {
    list_at: Instant,
    watch: Option<Watch>,
}

/// The deputy's watch on the leader: one lease of the leader's, read (one GetItem) each renew
/// interval, so a leader that died or left is replaced within one failover time without the
/// deputy listing the table.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    key: String,
    owner: String,
    counter: u64,
    expires: Instant,
    check_at: Instant,
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut next = Next {
        list_at: Instant::now(),
        watch: None,
    };
    loop {
        let wake = next
            .watch
            .as_ref()
            .map_or(next.list_at, |w| w.check_at.min(next.list_at));
        tokio::select! {
            biased;
            _ = shared.taking.cancelled() => return,
            _ = shared.nudged.notified() => next.list_at = Instant::now(),
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() < next.list_at
            && let Some(watch) = next.watch.as_mut()
            && !leader_gone(&shared, watch).await
        {
            continue;
        }
        next = match cycle(&shared).await {
            Some(n) => n,
            // The listing failed: try again a taker interval later, still watching.
            None => Next {
                list_at: Instant::now() + shared.config.taker_interval,
                watch: next.watch,
            },
        };
    }
}

/// The deputy's check of the leader's lease: `true` when the table must be listed now (the
/// lease expired unrenewed, changed owner, is being handed off, or is gone).
async fn leader_gone(shared: &Shared, watch: &mut Watch) -> bool {
    let now = Instant::now();
    let renew = shared.config.renew_interval;
    match shared.store.get(&watch.key).await {
        Ok(Some(lease))
            if lease.owner.as_deref() == Some(watch.owner.as_str())
                && lease.checkpoint_owner.is_none() =>
        {
            if lease.counter != watch.counter {
                watch.counter = lease.counter;
                watch.expires = expiry(shared, &lease, now, super::clock::unix_millis_now());
            } else if now >= watch.expires {
                return true;
            }
            watch.check_at = (now + renew).min(watch.expires);
            false
        }
        Ok(_) => true,
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %watch.key, error = %e, "could not read the leader's lease; trying again");
            watch.check_at = now + renew;
            false
        }
    }
}

/// One taker cycle: lists the table, takes and steals, and says when to list next (`None` when
/// the listing failed or taking has stopped).
///
/// Only the fleet's leader — the smallest worker id among this worker and the owners seen
/// renewing with kcl-rs stamps (see [`Roles`]) — lists at every expiry it saw and takes every free or expired lease, then
/// offers what is beyond its share to the workers below theirs. Every other worker lists once
/// per `taker_interval × (workers − 1)` once it has nothing to take or steal, so the fleet's
/// listings stay about two per taker interval whatever its size; the deputy (the next smallest
/// id) watches one of the leader's leases in between. See `scale-design.md` for the argument.
pub(super) async fn cycle(shared: &Shared) -> Option<Next> {
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
    let now = Instant::now();
    let renew = shared.config.renew_interval;
    let listed: BTreeSet<&str> = listing.leases.iter().map(|l| l.key.as_str()).collect();
    observed.retain(|k, _| listed.contains(k.as_str()));
    // Leases of other owners seen for the first time: look again after one renewal (and a
    // margin for its round trip) instead of a whole taker interval, so that a live owner can
    // prove itself before balancing needs a steal.
    let mut first_sightings = false;
    let now_millis = super::clock::unix_millis_now();
    let stamped_expiry = |lease: &Lease| expiry(shared, lease, now, now_millis);
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
    // Before the filter, so that every worker names the same leader.
    let roles = Roles::of(shared.me(), &listing.leases, observed, now, renew);
    *shared.sync_leader.lock() = Some(roles.leader.clone());
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
    let held: BTreeSet<String> = shared.entries().into_iter().map(|(k, _)| k).collect();
    let me = shared.me();
    let leading = roles.leader == me;
    let epoch = observed.values().map(|s| s.expires).min().unwrap_or(now);
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
    let accepting = !to_accept.is_empty();
    for key in to_accept {
        super::offer::accept_unlocked(shared, &key).await;
    }
    let input = PlanInput {
        me,
        leases,
        max_leases_for_worker: shared.config.max_leases_for_worker,
        max_steal: shared.config.max_leases_to_steal_at_one_time,
        take_all: leading,
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
        debug!(worker_id = %me, target = plan.target, take = plan.take.len(), steal = plan.steal.len(), leading, "taker plan");
    }
    let takes = plan.take.iter().map(|l| take(shared, l));
    let steals = plan.steal.iter().map(|l| steal(shared, l));
    futures::future::join_all(takes).await;
    futures::future::join_all(steals).await;
    if leading {
        use std::sync::atomic::Ordering::Relaxed;
        // What it took beyond its share by this listing (alone at start-up, nothing).
        let beyond = (held.len() + plan.take.len()).saturating_sub(plan.ceiling);
        let beyond = beyond.min(plan.take.len());
        let owed = shared.owed.fetch_add(beyond, Relaxed) + beyond;
        let offered = super::offer::shed(shared, &listing.leases, plan.ceiling, owed).await;
        shared.owed.fetch_sub(offered.min(owed), Relaxed);
        if let Some(deputy) = &roles.deputy
            && shared.told_deputy.lock().as_ref() != Some(deputy)
            && super::offer::nudge(shared, &listing.leases, std::slice::from_ref(deputy)).await > 0
        {
            *shared.told_deputy.lock() = Some(deputy.clone());
        }
    }
    let fast = now + shared.config.taker_interval;
    // Leases of a dead worker expire one after another over a renew interval: one listing per
    // EXPIRY_BATCH takes them all, instead of one listing per expiry.
    let fast = next_expiry.map_or(fast, |e| e.min(fast).max(now + EXPIRY_BATCH));
    let settled = !first_sightings && !accepting && plan.take.is_empty() && plan.steal.is_empty();
    let list_at = if leading || !settled {
        fast
    } else {
        let others = u32::try_from(roles.workers.saturating_sub(1).max(1)).unwrap_or(u32::MAX);
        now + shared.config.taker_interval.saturating_mul(others)
    };
    let watch = roles.watch.filter(|_| roles.deputy.as_deref() == Some(me));
    Some(Next { list_at, watch })
}

/// Who leads the fleet by one listing: the smallest worker id among this worker and the owners
/// of unexpired leases seen renewing (counter moved since the previous listing) with a stamp of
/// the current counter; the deputy is the next smallest.
struct Roles {
    leader: String,
    deputy: Option<String>,
    /// Live workers, this one included.
    workers: usize,
    /// The leader's smallest lease, for the deputy to watch.
    watch: Option<Watch>,
}

impl Roles {
    fn of(me: &str, leases: &[Lease], observed: &Observed, now: Instant, renew: Duration) -> Self {
        let mut live: BTreeMap<&str, Option<(&Lease, Instant)>> = BTreeMap::new();
        live.insert(me, None);
        for lease in leases {
            let (Some(owner), Some(seen)) = (lease.owner.as_deref(), observed.get(&lease.key))
            else {
                continue;
            };
            // A worker that leads must be seen renewing (a stopped one is not, though its
            // leases have not expired yet), with this framework's stamps (a Java worker renews
            // but does not list for us).
            let ours = lease.renewed_at.is_some_and(|s| s.counter == lease.counter);
            if now < seen.expires && seen.renewing && ours {
                // Any lease proves its owner live; one not being handed off is the one to watch.
                let first = live.entry(owner).or_default();
                if lease.checkpoint_owner.is_none() && first.is_none_or(|(l, _)| lease.key < l.key)
                {
                    *first = Some((lease, seen.expires));
                }
            }
        }
        let mut ids = live.iter();
        let (leader, leads) = ids.next().expect("this worker is listed");
        let deputy = ids.next().map(|(id, _)| id.to_string());
        let watch = leads.map(|(lease, expires)| Watch {
            key: lease.key.clone(),
            owner: leader.to_string(),
            counter: lease.counter,
            expires,
            check_at: expires.min(now + renew),
        });
        Self {
            leader: leader.to_string(),
            deputy,
            workers: live.len(),
            watch,
        }
    }
}

/// When `lease`, with a counter first seen at `now`, expires: by its stamp, and never later
/// than one failover time from now (the counter rule).
fn expiry(shared: &Shared, lease: &Lease, now: Instant, now_millis: u64) -> Instant {
    let by_counter = now + shared.config.failover_time;
    stamp_expiry(shared, lease, now, now_millis).map_or(by_counter, |e| e.min(by_counter))
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

pub(super) async fn take(shared: &Shared, lease: &Lease) {
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

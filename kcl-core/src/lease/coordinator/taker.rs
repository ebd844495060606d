//! The taker: lists the table, tracks how long each lease's counter has stood still, and takes
//! and steals per the balancing plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::leader;
use super::plan::{Availability, PlanInput, plan};
use super::roles::{Roles, Watch};
use super::view::{View, observe};
use super::{Fleet, Shared, State};
use crate::lease::Lease;

/// When the taker lists next, and what the deputy watches until then.
#[derive(Debug, Clone)]
pub(super) struct Next {
    list_at: Instant,
    watch: Option<Watch>,
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
            && !leader::leader_gone(&shared, watch).await
        {
            continue;
        }
        next = match cycle(&shared).await {
            Some(n) => n,
            // The listing failed: try again a taker interval later, still watching.
            None => Next {
                list_at: Instant::now() + shared.config.taker_interval(),
                watch: next.watch,
            },
        };
    }
}

/// One taker cycle: lists the table, takes and steals, and says when to list next (`None` when
/// the listing failed or taking has stopped).
///
/// Roles ([`Roles`]) decide what happens after the plan and when to list next: see
/// [`leader`].
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
            warn!(worker_id = %shared.me(), error = %crate::error::Report(&e), "listing leases failed; retrying next cycle");
            shared.listing_failed();
            return None;
        }
    };
    shared.listing_succeeded();
    for bad in &listing.malformed {
        warn!(worker_id = %shared.me(), error = %bad, "skipping a malformed lease");
    }
    let renew = shared.config.renew_interval();
    let judge = shared.judge();
    let now = judge.now;
    let first_sightings = observe(observed, &listing.leases, shared.me(), &judge);
    // Before the filter, so that every worker names the same leader.
    let mut view = View::of(shared.me(), &listing.leases, observed, &judge);
    if let Some(me) = view.peers.get_mut(shared.me()) {
        me.stepped_down = shared.stepped_down();
    }
    let roles = Roles::of(&view, now, renew);
    shared.metrics.workers.set(view.workers as f64);
    let fleet = Arc::new(Fleet { view, roles });
    *shared.fleet.lock() = Some(fleet.clone());
    let roles = &fleet.roles;
    let filter = shared.filter.0.lock().clone();
    if let Some(accept) = filter {
        listing.leases.retain(|l| accept(l));
    }
    let held: BTreeSet<String> = shared.entries().into_iter().map(|(k, _)| k).collect();
    // One lock for the listing, not one per lease.
    let handing_off: BTreeSet<String> = shared.outgoing();
    let me = shared.me();
    let leading = roles.leads(me);
    let epoch = observed.values().map(|s| s.expires).min().unwrap_or(now);
    // Leases of other owners seen for the first time: look again after one renewal (and a
    // margin for its round trip) instead of a whole taker interval, to see them move.
    let mut next_expiry: Option<Instant> =
        first_sightings.then(|| now + shared.config.relist_after_first_sighting());
    let mut to_accept = Vec::new();
    // Leases not seen moving yet (nor expired): balancing cannot steal them, so a worker short
    // of its target looks again after a renewal instead of settling (a newcomer listing twice
    // in quick succession saw most leases quiet and then waited a slow-listing interval to
    // steal its share).
    let mut quiet = false;
    let leases: Vec<(&Lease, Availability)> = listing
        .leases
        .iter()
        .map(|lease| {
            let seen = &observed[&lease.key];
            let expires = seen.expires;
            let availability = match lease.owner.as_deref() {
                // Still handing it off: a finish in flight could end a new holding's hand-off.
                _ if handing_off.contains(&lease.key) => Availability::Live,
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
                    // Unread inbox entries (an offer, a request to list) are for the owner:
                    // stealing the lease now would let the thief's renewal consume them.
                    if judge.alive(lease, Some(seen))
                        && seen.moved_at.is_some()
                        && lease.inbox.is_empty()
                    {
                        Availability::Live
                    } else {
                        quiet = true;
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
    // Quiet leases matter only to a worker still short of its target (it would steal them);
    // everyone relisting for them — at a crash, every survivor sees the dead worker's leases
    // quiet until they expire — would multiply listings by the fleet's size.
    let quiet = quiet && held.len() + plan.take.len() + plan.steal.len() < plan.target;
    if quiet {
        let again = now + shared.config.relist_after_first_sighting();
        next_expiry = Some(next_expiry.map_or(again, |e| e.min(again)));
    }
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
        let took = plan.take.len();
        leader::pass_on(shared, &fleet, held.len() + took, took, plan.ceiling).await;
    }
    let settled =
        !first_sightings && !quiet && !accepting && plan.take.is_empty() && plan.steal.is_empty();
    let list_at = now
        + leader::next_listing(
            &shared.config,
            leading,
            settled,
            next_expiry.map(|e| e.saturating_duration_since(now)),
            fleet.view.peers.len(),
            shared.jitter_seed(),
        );
    let watch = roles.watch_for(me);
    Some(Next { list_at, watch })
}

pub(super) async fn take(shared: &Shared, lease: &Lease) {
    let sent = Instant::now();
    let mut lease = lease.clone();
    shared.stamp_next(&mut lease);
    match shared.store.take(&lease, shared.me()).await {
        Ok(taken) => {
            shared.metrics.taken.increment(1);
            shared.insert(taken, sent, State::Ready)
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %lease.key, error = %crate::error::Report(&e), "take failed")
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
    let victim_expiry = shared.judge().stamp_expiry(lease);
    let mut lease = lease.clone();
    shared.stamp_next(&mut lease);
    match shared.store.hand_off(&lease, shared.me()).await {
        Ok(stolen) => {
            shared.metrics.stolen.increment(1);
            let deadline = victim_expiry
                .map_or(sent + shared.config.graceful_handoff_timeout(), |e| {
                    e.min(sent + shared.config.graceful_handoff_timeout())
                });
            shared.insert(stolen, sent, State::Incoming { from, deadline });
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %lease.key, error = %crate::error::Report(&e), "graceful steal failed")
        }
    }
}

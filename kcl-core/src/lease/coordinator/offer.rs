//! Planned hand-off: a worker that stops offers its leases to live workers instead of
//! releasing them, so no shard waits for another worker's next listing.
//!
//! The giver writes the offer as a graceful hand-off (`leaseOwner` = receiver,
//! `checkpointOwner` = giver, conditional on its counter) and posts the key to the inbox of a
//! lease the receiver holds. The receiver reads its inbox from the response of its next
//! renewal (no extra reads) and accepts by renewing the offered lease, which moves its counter.
//! The giver processes until it sees that (polling the lease while the offer lasts), then ends
//! the hand-off with its last checkpoint; the receiver, polling its incoming lease, starts
//! right after. The gap is a couple of polls and a write; the drain takes at most a renew
//! interval more. An offer nobody accepts within the offer timeout
//! (`CoordinatorConfig::offer_timeout`) is taken back with a take
//! conditional on the offer's counter, so an acceptance and a withdrawal can never both land.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::view::View;
use super::{Entry, Held, LeaseEvent, Shared, State, inbox};

/// Posts [`inbox::Entry::ListNow`] to the inbox of each of `to` that `view` shows live; returns how many posts
/// landed.
pub(super) async fn nudge(shared: &Shared, view: &View, to: &[String]) -> usize {
    if !shared.inboxes {
        return 0;
    }
    let peers = receivers(shared, view);
    let posts = to.iter().filter_map(|w| peers.get(w).map(|p| (w, p))).map(|(w, p)| async move {
        match shared.store.post(&p.inbox, w, &[inbox::Entry::ListNow.encode()]).await {
            Ok(()) => true,
            Err(e) => {
                debug!(worker_id = %shared.me(), receiver = %w, error = %crate::error::Report(&e), "could not ask a worker to list");
                false
            }
        }
    });
    futures::future::join_all(posts)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count()
}

/// After releasing leases: asks the live workers with the smallest ids — the leader and those
/// that lead after it — to list now, from a fresh listing.
pub(super) async fn nudge_leaders(shared: &Shared) {
    if !shared.inboxes {
        return;
    }
    match shared.fresh_view().await {
        Ok(view) => {
            let peers: Vec<String> = receivers(shared, &view)
                .into_keys()
                .take(shared.config.nudged_on_release())
                .collect();
            let told = nudge(shared, &view, &peers).await;
            debug!(worker_id = %shared.me(), told, "asked the leading workers to list");
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), error = %crate::error::Report(&e), "could not list to ask others to take released leases")
        }
    }
}

/// A live worker that can be offered leases.
#[derive(Debug, Clone)]
struct Receiver {
    /// A lease it holds and renews, whose inbox it reads next.
    inbox: String,
    /// Leases with work it holds.
    load: usize,
}

/// The live workers of `view` other than this one that read an inbox.
fn receivers(shared: &Shared, view: &View) -> BTreeMap<String, Receiver> {
    view.receivers(shared.me())
        .filter_map(|(w, p)| {
            let inbox = p.inbox.clone()?;
            Some((
                w.clone(),
                Receiver {
                    inbox,
                    load: p.load,
                },
            ))
        })
        .collect()
}

/// The receiver holding fewest leases (smallest id among equals), other than `except`.
fn least_loaded(peers: &BTreeMap<String, Receiver>, except: &[&str]) -> Option<String> {
    peers
        .iter()
        .filter(|(w, _)| !except.contains(&w.as_str()))
        .min_by(|a, b| (a.1.load, a.0).cmp(&(b.1.load, b.0)))
        .map(|(w, _)| w.clone())
}

/// Offers every held lease to live workers (a planned stop); returns the keys offered, with
/// those already on offer (the leader passing leases on) — all of them pass on by the offers.
pub(super) async fn offer_all(shared: &Shared) -> Vec<String> {
    if !shared.inboxes {
        return Vec::new();
    }
    let mut on_offer = Vec::new();
    for (key, entry) in shared.entries() {
        let h = entry.lock().await;
        if matches!(h.state, State::Offered { .. }) {
            on_offer.push(key);
        }
    }
    let mut offered = offer_fresh(shared).await;
    offered.extend(on_offer);
    offered
}

async fn offer_fresh(shared: &Shared) -> Vec<String> {
    // A fresh listing (one per planned stop): the taker's may be a taker interval old, and a
    // peer that stopped since would be offered leases it can no longer hear of.
    let mut peers = match shared.fresh_view().await {
        Ok(view) => receivers(shared, &view),
        Err(e) => {
            warn!(worker_id = %shared.me(), error = %crate::error::Report(&e), "could not list live workers to offer leases to; releasing them instead");
            return Vec::new();
        }
    };
    if peers.is_empty() {
        return Vec::new();
    }
    let mut plan = Vec::new();
    for (key, entry) in shared.entries() {
        let Some(to) = least_loaded(&peers, &[]) else {
            break;
        };
        peers.get_mut(&to).expect("a listed peer").load += 1;
        plan.push((key, entry, to));
    }
    offer(shared, plan, &peers).await
}

/// The leader's part in balancing (see the taker): offers up to `at_most` (what it took beyond
/// its share and has not passed on yet; the rest of balancing is left to steals) of the leases
/// with work it holds beyond `ceiling` to the live workers holding fewest, each move narrowing
/// the gap by more than one lease, and keeps its smallest keys (the lease its deputy watches).
/// Returns how many it offered.
pub(super) async fn shed(shared: &Shared, view: &View, ceiling: usize, at_most: usize) -> usize {
    if !shared.inboxes {
        return 0;
    }
    let mut ready = Vec::new();
    let mut mine = 0;
    for (key, entry) in shared.entries() {
        let h = entry.lock().await;
        if h.lease.is_shard_end() {
            continue;
        }
        match h.state {
            State::Offered { .. } | State::Gone => continue,
            State::Ready => ready.push((key, entry.clone())),
            State::Incoming { .. } => {}
        }
        mine += 1;
    }
    if mine <= ceiling || at_most == 0 {
        return 0;
    }
    let mut peers = receivers(shared, view);
    let mut plan = Vec::new();
    while mine > ceiling && plan.len() < at_most {
        let Some(to) = least_loaded(&peers, &[]).filter(|to| peers[to].load + 1 < mine) else {
            break;
        };
        let Some((key, entry)) = ready.pop() else {
            break;
        };
        peers.get_mut(&to).expect("a listed peer").load += 1;
        mine -= 1;
        plan.push((key, entry, to));
    }
    if plan.is_empty() {
        return 0;
    }
    debug!(worker_id = %shared.me(), offers = plan.len(), ceiling, "offering leases beyond this worker's share");
    offer(shared, plan, &peers).await.len()
}

/// Writes the offers of `plan` (lease, its entry, receiver) and tells each receiver with one
/// post to its inbox; returns the keys offered. Offers to a receiver that cannot be told (its
/// inbox lease moved since the listing, say) are taken back at once and made once more to the
/// least-loaded other peer; what fails twice stays held here ([`LeaseEvent::OfferWithdrawn`]).
async fn offer(
    shared: &Shared,
    plan: Vec<(String, Entry, String)>,
    peers: &BTreeMap<String, Receiver>,
) -> Vec<String> {
    let (mut offered, failed) = offer_round(shared, plan, peers).await;
    let refused: Vec<&str> = failed.iter().map(|(_, _, to)| to.as_str()).collect();
    let next = least_loaded(peers, &refused);
    let mut last_failed = Vec::new();
    if let Some(next) = next.filter(|_| !failed.is_empty()) {
        let retry = failed
            .into_iter()
            .map(|(key, entry, _)| (key, entry, next.clone()))
            .collect();
        let (more, again) = offer_round(shared, retry, peers).await;
        offered.extend(more);
        last_failed = again;
    } else {
        last_failed.extend(failed);
    }
    for (key, entry, _) in last_failed {
        if entry.lock().await.state == State::Ready {
            shared
                .owed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.emit(LeaseEvent::OfferWithdrawn { key });
        }
    }
    offered
}

type Refused = Vec<(String, Entry, String)>;

/// One round of [`offer`]: the keys offered, and the leases taken back because their receiver
/// could not be told (held here again, not yet announced).
async fn offer_round(
    shared: &Shared,
    plan: Vec<(String, Entry, String)>,
    peers: &BTreeMap<String, Receiver>,
) -> (Vec<String>, Refused) {
    let deadline = Instant::now() + shared.config.offer_timeout();
    let offers = plan
        .into_iter()
        .map(|(key, entry, to)| offer_one(shared, key, entry, to, deadline));
    let mut by_receiver: BTreeMap<String, Vec<(String, Entry)>> = BTreeMap::new();
    for (key, entry, to) in futures::future::join_all(offers)
        .await
        .into_iter()
        .flatten()
    {
        by_receiver.entry(to).or_default().push((key, entry));
    }
    let posts = by_receiver.into_iter().map(|(to, leases)| {
        let inbox = peers[&to].inbox.clone();
        async move {
            let keys: Vec<String> = leases.iter().map(|(k, _)| k.clone()).collect();
            let entries: Vec<String> = keys
                .iter()
                .map(|k| inbox::Entry::Offer(k.clone()).encode())
                .collect();
            match shared.store.post(&inbox, &to, &entries).await {
                Ok(()) => {
                    info!(worker_id = %shared.me(), receiver = %to, %inbox, leases = ?keys, "leases offered");
                    (keys, Vec::new())
                }
                Err(e) => {
                    warn!(worker_id = %shared.me(), receiver = %to, error = %crate::error::Report(&e), "could not tell the receiver of its offers; taking them back");
                    let withdrawals = leases.into_iter().map(|(key, entry)| {
                        let to = to.clone();
                        async move {
                            let back = {
                                let mut h = entry.lock().await;
                                withdraw(shared, &key, &mut h, false).await
                            };
                            back.then_some((key, entry, to))
                        }
                    });
                    let back = futures::future::join_all(withdrawals).await;
                    (Vec::new(), back.into_iter().flatten().collect())
                }
            }
        }
    });
    let mut offered = Vec::new();
    let mut refused = Vec::new();
    for (keys, back) in futures::future::join_all(posts).await {
        offered.extend(keys);
        refused.extend(back);
    }
    (offered, refused)
}

/// Offers one held lease to `to`; returns it if the offer was written.
async fn offer_one(
    shared: &Shared,
    key: String,
    entry: Entry,
    to: String,
    deadline: Instant,
) -> Option<(String, Entry, String)> {
    let mut h = entry.lock().await;
    if h.state != State::Ready || h.lease.is_shard_end() {
        return None;
    }
    let sent = Instant::now();
    // Stamped, so the lease expires one failover time after the offer if neither side follows up.
    shared.stamp_next(&mut h.lease);
    match shared.store.hand_off(&h.lease, &to).await {
        Ok(offered) => {
            h.lease = offered;
            h.valid_until = sent + shared.config.failover_time;
            h.state = State::Offered {
                to: to.clone(),
                deadline,
            };
            h.publish();
            drop(h);
            Some((key, entry, to))
        }
        Err(e) if e.is_lost() => {
            shared.reconcile(&key, &mut h).await;
            None
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not offer a lease; keeping it");
            None
        }
    }
}

/// The giver's poll of an offered lease: hands it off once the receiver accepted (the counter
/// moved), takes it back once the offer timed out.
pub(super) async fn poll_offered(shared: &Shared, key: &str, h: &mut Held) {
    let State::Offered { deadline, .. } = &h.state else {
        return;
    };
    let deadline = *deadline;
    match shared.store.get(key).await {
        Ok(Some(stored)) if stored.counter == h.lease.counter => {
            if Instant::now() >= deadline {
                withdraw(shared, key, h, true).await;
            }
        }
        // Accepted (reported as a hand-off), or moved on otherwise (lost).
        Ok(_) => {
            shared.reconcile(key, h).await;
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not poll an offered lease");
        }
    }
}

/// Takes an offered lease back, conditional on the offer's counter; `announce`: with
/// [`LeaseEvent::OfferWithdrawn`]. Returns whether it is held here, ready, again.
async fn withdraw(shared: &Shared, key: &str, h: &mut Held, announce: bool) -> bool {
    if !matches!(h.state, State::Offered { .. }) {
        return false;
    }
    let sent = Instant::now();
    let mut lease = h.lease.clone();
    shared.stamp_next(&mut lease);
    match shared.store.take(&lease, shared.me()).await {
        Ok(taken) => {
            h.lease = taken;
            h.valid_until = sent + shared.config.failover_time;
            h.state = State::Ready;
            h.publish();
            info!(worker_id = %shared.me(), lease_key = %key, "offer taken back");
            if announce {
                // Still beyond this worker's share: the next leading cycle may offer it again.
                shared
                    .owed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.emit(LeaseEvent::OfferWithdrawn {
                    key: key.to_string(),
                });
            }
            true
        }
        Err(e) if e.is_lost() => {
            shared.reconcile(key, h).await;
            false
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not take an offer back, will retry");
            false
        }
    }
}

/// The receiver's side: accepts a lease named in its inbox by renewing it (conditional on the
/// counter the giver left), and waits for the giver's last checkpoint as for a graceful steal.
pub(super) async fn accept(shared: &Shared, key: &str) {
    // One at a time with the taker, which may find the same lease in a listing.
    let _cycle = shared.observed.lock().await;
    accept_unlocked(shared, key).await;
}

/// [`accept`] for a caller that holds the taker's lock. The giver goes on checkpointing until
/// it sees the acceptance, so a renewal from a read a moment old can miss: read and try again.
pub(super) async fn accept_unlocked(shared: &Shared, key: &str) {
    for _attempt in 0..5 {
        if shared.taking.is_cancelled() || shared.knows(key) {
            debug!(worker_id = %shared.me(), lease_key = %key, stopping = shared.taking.is_cancelled(), "offer not accepted: stopping or held already");
            return;
        }
        let lease = match shared.store.get(key).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not read an offered lease; its giver will take it back");
                return;
            }
        };
        let Some(from) = lease.checkpoint_owner.clone() else {
            return;
        };
        let accepted_by_filter = shared.filter.0.lock().as_ref().is_none_or(|f| f(&lease));
        if !lease.is_owned_by(shared.me()) || !accepted_by_filter {
            return;
        }
        let sent = Instant::now();
        let mut accepting = lease;
        shared.stamp_next(&mut accepting);
        match shared.store.renew(&accepting).await {
            Ok(accepted) => {
                let deadline = sent + shared.config.graceful_handoff_timeout();
                info!(worker_id = %shared.me(), lease_key = %key, giver = %from, "offered lease accepted");
                shared.insert(accepted, sent, State::Incoming { from, deadline });
                return;
            }
            // The giver checkpointed in between: read again.
            Err(e) if e.is_lost() => continue,
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not accept an offered lease");
                return;
            }
        }
    }
}

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
//! interval more. An offer nobody accepts within [`offer_timeout`] is taken back with a take
//! conditional on the offer's counter, so an acceptance and a withdrawal can never both land.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Entry, Held, LeaseEvent, Phase, Shared};
use crate::lease::Lease;

/// A live worker, by one listing.
#[derive(Debug, Clone)]
struct Peer {
    /// A lease it holds and renews, whose inbox it reads.
    inbox_key: String,
    /// Leases with work it holds.
    load: usize,
}

/// How long a receiver has to accept: it reads its inbox at its next renewal.
fn offer_timeout(shared: &Shared) -> Duration {
    (shared.config.renew_interval + Duration::from_secs(1)).min(shared.config.failover_time / 2)
}

/// Workers that renewed a lease within a renew interval and a second, by the renewal stamps of
/// one listing, each with the lease of its oldest stamp (its inbox: the lease likely renewed
/// next). Leases without a current stamp (a Java writer) do not count.
fn live_peers(shared: &Shared, leases: &[Lease]) -> BTreeMap<String, Peer> {
    let now = super::clock::unix_millis_now();
    let fresh = (shared.config.renew_interval + Duration::from_secs(1)).as_millis() as u64;
    let mut oldest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for l in leases {
        let Some(owner) = l.owner.as_deref().filter(|o| *o != shared.me()) else {
            continue;
        };
        if let Some(stamp) = l
            .renewed_at
            .filter(|s| s.counter == l.counter && now.saturating_sub(s.unix_millis) <= fresh)
            && l.checkpoint_owner.is_none()
        {
            let e = oldest
                .entry(owner.to_string())
                .or_insert((stamp.unix_millis, l.key.clone()));
            if stamp.unix_millis < e.0 {
                *e = (stamp.unix_millis, l.key.clone());
            }
        }
    }
    let mut peers: BTreeMap<String, Peer> = oldest
        .into_iter()
        .map(|(w, (_, inbox_key))| (w, Peer { inbox_key, load: 0 }))
        .collect();
    for l in leases.iter().filter(|l| !l.is_shard_end()) {
        if let Some(p) = l.owner.as_deref().and_then(|o| peers.get_mut(o)) {
            p.load += 1;
        }
    }
    peers
}

pub(super) async fn offer_all(shared: &Shared) -> Vec<String> {
    // A fresh listing (one per planned stop): the taker's may be a taker interval old, and a
    // peer that stopped since would be offered leases it can no longer hear of.
    let mut peers = match shared.store.list_eventually().await {
        Ok(listing) => live_peers(shared, &listing.leases),
        Err(e) => {
            warn!(worker_id = %shared.me(), error = %e, "could not list live workers to offer leases to; releasing them instead");
            return Vec::new();
        }
    };
    if peers.is_empty() {
        return Vec::new();
    }
    let deadline = Instant::now() + offer_timeout(shared);
    let mut plan = Vec::new();
    for (key, entry) in shared.entries() {
        let Some((to, peer)) = peers
            .iter_mut()
            .min_by(|a, b| (a.1.load, a.0).cmp(&(b.1.load, b.0)))
        else {
            break;
        };
        peer.load += 1;
        plan.push((key, entry, to.clone()));
    }
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
    // One post per receiver, all at once; a receiver that cannot be told gets nothing.
    let posts = by_receiver.into_iter().map(|(to, leases)| {
        let inbox = peers[&to].inbox_key.clone();
        async move {
            let keys: Vec<String> = leases.iter().map(|(k, _)| k.clone()).collect();
            match shared.store.post(&inbox, &to, &keys).await {
                Ok(()) => {
                    info!(worker_id = %shared.me(), receiver = %to, %inbox, leases = ?keys, "leases offered");
                    keys
                }
                Err(e) => {
                    warn!(worker_id = %shared.me(), receiver = %to, error = %e, "could not tell the receiver of its offers; taking them back");
                    let withdrawals = leases.into_iter().map(|(key, entry)| async move {
                        let mut h = entry.lock().await;
                        withdraw(shared, &key, &mut h).await;
                    });
                    futures::future::join_all(withdrawals).await;
                    Vec::new()
                }
            }
        }
    });
    futures::future::join_all(posts)
        .await
        .into_iter()
        .flatten()
        .collect()
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
    if h.gone || h.phase != Phase::Ready || h.lease.is_shard_end() {
        return None;
    }
    let sent = Instant::now();
    // Stamped, so the lease expires one failover time after the offer if neither side follows up.
    super::stamp_next(&mut h.lease);
    match shared.store.hand_off(&h.lease, &to).await {
        Ok(offered) => {
            h.lease = offered;
            h.valid_until = sent + shared.config.failover_time;
            h.phase = Phase::Offered {
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
            debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not offer a lease; keeping it");
            None
        }
    }
}

/// The giver's poll of an offered lease: hands it off once the receiver accepted (the counter
/// moved), takes it back once the offer timed out.
pub(super) async fn poll_offered(shared: &Shared, key: &str, h: &mut Held) {
    let Phase::Offered { deadline, .. } = &h.phase else {
        return;
    };
    let deadline = *deadline;
    match shared.store.get(key).await {
        Ok(Some(stored)) if stored.counter == h.lease.counter => {
            if Instant::now() >= deadline {
                withdraw(shared, key, h).await;
            }
        }
        // Accepted (reported as a hand-off), or moved on otherwise (lost).
        Ok(_) => {
            shared.reconcile(key, h).await;
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not poll an offered lease");
        }
    }
}

/// Takes an offered lease back, conditional on the offer's counter.
async fn withdraw(shared: &Shared, key: &str, h: &mut Held) {
    if !matches!(h.phase, Phase::Offered { .. }) || h.gone {
        return;
    }
    let sent = Instant::now();
    let mut lease = h.lease.clone();
    super::stamp_next(&mut lease);
    match shared.store.take(&lease, shared.me()).await {
        Ok(taken) => {
            h.lease = taken;
            h.valid_until = sent + shared.config.failover_time;
            h.phase = Phase::Ready;
            h.publish();
            info!(worker_id = %shared.me(), lease_key = %key, "offer not accepted in time; lease taken back");
            shared.emit(LeaseEvent::OfferWithdrawn {
                key: key.to_string(),
            });
        }
        Err(e) if e.is_lost() => {
            shared.reconcile(key, h).await;
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not take an offer back, will retry");
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
        if shared.taking.is_cancelled() || shared.entry(key).is_some() {
            debug!(worker_id = %shared.me(), lease_key = %key, stopping = shared.taking.is_cancelled(), "offer not accepted: stopping or held already");
            return;
        }
        let lease = match shared.store.get(key).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not read an offered lease; its giver will take it back");
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
        super::stamp_next(&mut accepting);
        match shared.store.renew(&accepting).await {
            Ok(accepted) => {
                let deadline = sent + shared.config.graceful_handoff_timeout;
                info!(worker_id = %shared.me(), lease_key = %key, giver = %from, "offered lease accepted");
                shared.insert(accepted, sent, Phase::Incoming { from, deadline });
                return;
            }
            // The giver checkpointed in between: read again.
            Err(e) if e.is_lost() => continue,
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not accept an offered lease");
                return;
            }
        }
    }
}

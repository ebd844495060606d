//! Renews every held lease each renew interval, completes incoming graceful hand-offs, and
//! extends outgoing ones while the batch in progress lasts.
//!
//! Renewals are independent: each lease's renewal runs on its own, and a lease whose previous
//! renewal is still in flight (a slow store call, bounded by the call deadline) is skipped for
//! that tick rather than holding up the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Entry, Held, LeaseEvent, LostReason, Shared, State, inbox};

pub(super) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.renew_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(shared.config.hand_off_poll());
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Renewals in flight, by task, so a key is free again however its task ended.
    let mut in_flight: JoinSet<()> = JoinSet::new();
    // Keys are held leases, or (`true`) outgoing hand-offs being extended.
    let mut renewing: HashMap<tokio::task::Id, (bool, String)> = HashMap::new();
    loop {
        let renew_all = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            Some(done) = in_flight.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                renewing.remove(&id);
                continue;
            }
            _ = tick.tick() => true,
            _ = poll.tick() => false,
        };
        let late = std::mem::take(&mut *shared.late_offers.lock());
        if !late.is_empty() {
            let shared = shared.clone();
            in_flight.spawn(async move { read_inbox(&shared, late).await });
        }
        let busy: HashSet<&(bool, String)> = renewing.values().collect();
        let mut due: Vec<_> = shared
            .entries()
            .into_iter()
            .filter(|(key, _)| !busy.contains(&(false, key.clone())))
            .collect();
        if !renew_all {
            // Between renewals, only hand-offs in progress are looked at.
            due.retain(|(_, entry)| {
                entry.try_lock().is_ok_and(|h| {
                    matches!(h.state, State::Incoming { .. } | State::Offered { .. })
                })
            });
            for (key, entry) in due {
                let shared = shared.clone();
                let k = key.clone();
                let task = in_flight.spawn(async move { poll_hand_off(&shared, &k, entry).await });
                renewing.insert(task.id(), (false, key));
            }
            continue;
        }
        let outgoing: Vec<String> = shared
            .settle_outgoing(Instant::now())
            .into_iter()
            .filter(|key| !busy.contains(&(true, key.clone())))
            .collect();
        for (key, entry) in due {
            let shared = shared.clone();
            let k = key.clone();
            let task = in_flight.spawn(async move {
                let inbox = renew_one(&shared, k, entry).await;
                // Leases offered to this worker, named in the renewal's response.
                read_inbox(&shared, inbox).await;
            });
            renewing.insert(task.id(), (false, key));
        }
        for key in outgoing {
            let shared = shared.clone();
            let k = key.clone();
            let task = in_flight.spawn(async move { extend_hand_off(&shared, &k).await });
            renewing.insert(task.id(), (true, key));
        }
    }
}

/// Acts on inbox entries: accepts the leases offered, lists when asked to.
async fn read_inbox(shared: &Shared, entries: Vec<String>) {
    for text in entries {
        match inbox::Entry::decode(&text) {
            inbox::Entry::ListNow => shared.nudged.notify_one(),
            inbox::Entry::Offer(key) => super::offer::accept(shared, &key).await,
            inbox::Entry::Unknown(text) => {
                debug!(worker_id = %shared.me(), entry = %text, "ignoring an inbox entry of another version");
            }
        }
    }
}

/// Polls a lease in a hand-off: an incoming one becomes ready as soon as its previous owner
/// ended the hand-off (not at the next renewal), an offered one is handed off as soon as its
/// receiver accepted.
async fn poll_hand_off(shared: &Shared, key: &str, entry: Entry) {
    let mut h = entry.lock().await;
    if h.state.is_gone() {
        return;
    }
    if Instant::now() >= h.valid_until {
        // No write of ours landed for a failover time: others may have taken the lease (and
        // even handed it back to us since), so whatever a read shows now is not ours to adopt.
        shared.lose(key, &mut h, LostReason::RenewalsFailed);
        return;
    }
    match &h.state {
        State::Offered { .. } => super::offer::poll_offered(shared, key, &mut h).await,
        State::Incoming { .. } => match shared.store.get(key).await {
            Ok(Some(stored))
                if stored.is_owned_by(shared.me()) && stored.checkpoint_owner.is_none() =>
            {
                h.lease = stored;
                complete_hand_off(shared, key, &mut h).await;
            }
            Ok(Some(stored)) if stored.is_owned_by(shared.me()) => {
                // The previous owner is still finishing, or died. Past the hand-off deadline,
                // with nothing written since our last view, the lease is taken now rather than
                // at the next renewal. A counter that moved (the previous owner extending its
                // batch) is left to that renewal: its conflict extends the wait.
                if stored.counter == h.lease.counter
                    && matches!(h.state, State::Incoming { deadline, .. } if Instant::now() >= deadline)
                {
                    complete_hand_off(shared, key, &mut h).await;
                }
            }
            Ok(_) => {
                shared.reconcile(key, &mut h).await;
            }
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not poll an incoming lease");
            }
        },
        State::Ready | State::Gone => {}
    }
}

/// Renews one lease; returns the keys its inbox named (leases offered to this worker).
pub(super) async fn renew_one(shared: &Shared, key: String, entry: Entry) -> Vec<String> {
    let mut h = entry.lock().await;
    if h.state.is_gone() {
        return Vec::new();
    }
    if let State::Offered { .. } = h.state {
        // Stored as the receiver's now: polled, never renewed.
        return Vec::new();
    }
    let sent = Instant::now();
    if sent >= h.valid_until {
        shared.lose(&key, &mut h, LostReason::RenewalsFailed);
        return Vec::new();
    }
    // Throughput since the last renewal, smoothed (half the new window, half the old figure) so
    // one bursty batch does not swing balancing.
    let bytes = h.shown.load.load(std::sync::atomic::Ordering::Relaxed);
    let window = sent.duration_since(h.measured_since).as_secs_f64();
    if window > 0.0 {
        let now = bytes as f64 / 1024.0 / window;
        let smoothed = h.lease.throughput_kbps.map_or(now, |old| (old + now) / 2.0);
        // Two decimals; what rounds below 0.01 is idle (so a figure decays to 0, not 0.01).
        // Set on the held copy, which the renewal writes (throughput is not part of its
        // condition, so a failed renewal leaves nothing inconsistent).
        h.lease.throughput_kbps = Some((smoothed * 100.0).floor() / 100.0);
    }
    shared.stamp_next(&mut h.lease);
    // Offers this renewal acknowledges (it removes them from the stored inbox): seen in the
    // response of an earlier write of this lease (a checkpoint's) and not acted on yet.
    let acknowledged = h.lease.inbox.clone();
    match shared.store.renew(&h.lease).await {
        Ok(lease) => {
            h.lease = lease;
            h.shown
                .load
                .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
            h.measured_since = sent;
            h.valid_until = sent + shared.config.failover_time;
            h.publish();
            complete_hand_off(shared, &key, &mut h).await;
            let mut offers = acknowledged;
            offers.extend(h.lease.inbox.iter().cloned());
            offers.sort();
            offers.dedup();
            if !offers.is_empty() {
                debug!(worker_id = %shared.me(), lease_key = %key, ?offers, "offers in the inbox");
            }
            offers
        }
        Err(e) if e.is_lost() => {
            shared.reconcile(&key, &mut h).await;
            // An incoming lease whose previous owner is still writing (checkpoints during an
            // offer, extensions during a steal): reconcile read it afresh, so go again at once
            // rather than a renew interval later from a counter that old.
            if matches!(h.state, State::Incoming { .. }) && h.lease.checkpoint_owner.is_some() {
                let sent = Instant::now();
                shared.stamp_next(&mut h.lease);
                if let Ok(lease) = shared.store.renew(&h.lease).await {
                    h.lease = lease;
                    h.valid_until = sent + shared.config.failover_time;
                }
            }
            Vec::new()
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "renewal failed, will retry");
            Vec::new()
        }
    }
}

/// An incoming lease becomes ready once the previous owner cleared `checkpointOwner`, or when
/// the hand-off timeout passes without news of the previous owner (then this worker clears it).
async fn complete_hand_off(shared: &Shared, key: &str, h: &mut Held) {
    let State::Incoming { deadline, .. } = &h.state else {
        return;
    };
    if h.lease.checkpoint_owner.is_some() {
        if Instant::now() < *deadline {
            return;
        }
        // A take, conditional on the counter: an extension by the previous owner that lands
        // first makes it fail (and extends the wait), so the previous owner, once its write
        // succeeded, knows we wait at least the hand-off timeout from then.
        let sent = Instant::now();
        shared.stamp_next(&mut h.lease);
        match shared.store.take(&h.lease, shared.me()).await {
            Ok(lease) => {
                h.lease = lease;
                h.valid_until = sent + shared.config.failover_time;
            }
            Err(e) if e.is_lost() => {
                // The previous owner finished at the same moment, or the lease moved on.
                if !shared.reconcile(key, h).await {
                    return;
                }
            }
            Err(e) => {
                warn!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not end a timed-out hand-off, will retry");
                return;
            }
        }
    }
    h.state = State::Ready;
    h.publish();
    tracing::info!(worker_id = %shared.me(), lease_key = %key, "lease gained after hand-off");
    shared.emit(LeaseEvent::Gained {
        lease: h.lease.clone(),
        token: h.token,
    });
}

/// The victim's side of a hand-off whose batch is still running: renews the thief's lease (a
/// write conditional on the thief's counter, so it can never undo a later change), which the
/// thief reads as "still finishing" and waits on, up to `max_hand_off_extension`.
async fn extend_hand_off(shared: &Shared, key: &str) {
    let Some((since, lease)) = shared
        .with_outgoing(key, |h| Some((h.since, h.lease.clone()?)))
        .flatten()
    else {
        return;
    };
    // Stops extending; `lapsed`: the new owner may be processing already, so the batch in
    // progress is no longer this worker's to finish (reported as a lost lease).
    let stop = |why: &str, lapsed: bool| {
        let was_extending = shared
            .with_outgoing(key, |h| h.lease.take())
            .flatten()
            .is_some();
        if !was_extending {
            return; // finish_hand_off came first: the batch ended in time.
        }
        if lapsed {
            warn!(worker_id = %shared.me(), lease_key = %key, why, "hand-off lapsed while a batch was in progress; the new owner may process it again");
            shared.emit(LeaseEvent::Lost {
                key: key.to_string(),
                reason: LostReason::HandOffLapsed,
            });
        } else {
            debug!(worker_id = %shared.me(), lease_key = %key, why, "no longer extending a hand-off");
        }
    };
    let limit = shared.config.max_hand_off_extension;
    if Instant::now().duration_since(since) >= limit {
        return stop("extension limit reached", !limit.is_zero());
    }
    let mut lease = lease;
    let mut renewed = None;
    let sent = Instant::now();
    // The thief renews at the same interval: after a conflict, go again at once from its
    // counter, so one of our renewals lands between two of its.
    for _attempt in 0..2 {
        match shared.store.renew(&lease).await {
            // The new owner ended the hand-off (after its timeout) before our write.
            Ok(l) if l.checkpoint_owner.as_deref() != Some(shared.me()) => {
                return stop("the hand-off was ended by the new owner", true);
            }
            Ok(l) => {
                renewed = Some(l);
                break;
            }
            Err(e) if e.is_lost() => match shared.store.get(key).await {
                Ok(Some(stored)) if stored.checkpoint_owner.as_deref() == Some(shared.me()) => {
                    lease = stored;
                }
                Ok(_) => return stop("the hand-off was ended by the new owner", true),
                Err(_) => break,
            },
            Err(e) => {
                debug!(worker_id = %shared.me(), lease_key = %key, error = %crate::error::Report(&e), "extending a hand-off failed, will retry");
                break;
            }
        }
    }
    let lapsed = shared.with_outgoing(key, |h| {
        if h.lease.is_none() {
            return false; // stopped meanwhile
        }
        match renewed {
            Some(renewed) => {
                h.lease = Some(renewed);
                h.safe_until = sent + shared.config.graceful_handoff_timeout();
                false
            }
            None if Instant::now() >= h.safe_until => true,
            None => {
                h.lease = Some(lease);
                false
            }
        }
    });
    if lapsed == Some(true) {
        stop("extensions failed for a hand-off timeout", true);
    }
}

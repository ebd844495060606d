//! Renews every held lease each renew interval, and completes incoming graceful hand-offs.
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

use super::{Entry, Held, LeaseEvent, LostReason, Phase, Shared};

pub(super) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.renew_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Renewals in flight, by task, so a key is free again however its task ended.
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut renewing: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        tokio::select! {
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
            _ = tick.tick() => {}
        }
        let busy: HashSet<&String> = renewing.values().collect();
        let due: Vec<_> = shared
            .entries()
            .into_iter()
            .filter(|(key, _)| !busy.contains(key))
            .collect();
        for (key, entry) in due {
            let shared = shared.clone();
            let k = key.clone();
            let task = in_flight.spawn(async move { renew_one(&shared, k, entry).await });
            renewing.insert(task.id(), key);
        }
    }
}

pub(super) async fn renew_one(shared: &Shared, key: String, entry: Entry) {
    let mut h = entry.lock().await;
    if h.gone {
        return;
    }
    let sent = Instant::now();
    if sent >= h.valid_until {
        shared.lose(&key, &mut h, LostReason::RenewalsFailed);
        return;
    }
    match shared.store.renew(&h.lease).await {
        Ok(lease) => {
            h.lease = lease;
            h.valid_until = sent + shared.config.failover_time;
            h.publish();
            complete_hand_off(shared, &key, &mut h).await;
        }
        Err(e) if e.is_lost() => {
            shared.reconcile(&key, &mut h).await;
        }
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %key, error = %e, "renewal failed, will retry");
        }
    }
}

/// An incoming lease becomes ready once the previous owner cleared `checkpointOwner`, or when
/// the hand-off timeout passes (then this worker clears it).
async fn complete_hand_off(shared: &Shared, key: &str, h: &mut Held) {
    let Phase::Incoming { from, deadline } = &h.phase else {
        return;
    };
    if h.lease.checkpoint_owner.is_some() {
        if Instant::now() < *deadline {
            return;
        }
        match shared.store.finish_hand_off(key, from, None).await {
            Ok(lease) => h.lease = lease,
            Err(e) if e.is_lost() => {
                // The previous owner finished at the same moment, or the lease moved on.
                if !shared.reconcile(key, h).await {
                    return;
                }
            }
            Err(e) => {
                warn!(worker_id = %shared.me(), lease_key = %key, error = %e, "could not end a timed-out hand-off, will retry");
                return;
            }
        }
    }
    h.phase = Phase::Ready;
    h.publish();
    tracing::info!(worker_id = %shared.me(), lease_key = %key, "lease gained after hand-off");
    shared.emit(LeaseEvent::Gained {
        lease: h.lease.clone(),
        token: h.token,
    });
}

//! Renews every held lease each renew interval, and completes incoming graceful hand-offs.
//!
//! Renewals are independent: each lease's renewal runs on its own, and a lease whose previous
//! renewal is still in flight (a slow store call, bounded by the call deadline) is skipped for
//! that tick rather than holding up the others.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Entry, Held, LeaseEvent, LostReason, Phase, Shared};

pub(super) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.renew_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight: JoinSet<String> = JoinSet::new();
    let mut renewing: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            Some(done) = in_flight.join_next() => {
                if let Ok(key) = done {
                    renewing.remove(&key);
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        for (key, entry) in shared.entries() {
            if renewing.insert(key.clone()) {
                let shared = shared.clone();
                in_flight.spawn(async move {
                    renew_one(&shared, key.clone(), entry).await;
                    key
                });
            }
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

//! What the roles do ([`super::roles`] says who has them): the leader passes on what it took
//! beyond its share and names its deputy; the deputy watches the leader between listings; and
//! every worker's listing cadence follows from its role.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::roles::Watch;
use super::{CoordinatorConfig, Fleet, Shared};

/// The leader's part after its takes: offers what it took beyond its share (and has not passed
/// on yet) to the least-loaded live workers, and tells a new deputy of its role (an inbox
/// `ListNow`, so the deputy lists and starts watching at once). `held` counts what this worker
/// holds after the cycle's takes, `took` what this cycle took, `ceiling` the most any worker
/// should hold.
pub(super) async fn pass_on(
    shared: &Shared,
    fleet: &Fleet,
    held: usize,
    took: usize,
    ceiling: usize,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // What it took beyond its share by this listing (alone at start-up, nothing).
    let beyond = held.saturating_sub(ceiling).min(took);
    let owed = shared.owed.fetch_add(beyond, Relaxed) + beyond;
    let offered = super::offer::shed(shared, &fleet.view, ceiling, owed).await;
    shared.owed.fetch_sub(offered.min(owed), Relaxed);
    if let Some(deputy) = &fleet.roles.deputy
        && shared.told_deputy.lock().as_ref() != Some(deputy)
        && super::offer::nudge(shared, &fleet.view, std::slice::from_ref(deputy)).await > 0
    {
        *shared.told_deputy.lock() = Some(deputy.clone());
    }
}

/// How long until the next listing.
///
/// - The leader, and any worker with something left to take, steal or look at again
///   (`settled` false), lists at the earliest of: the next expiry it saw (`next_expiry`, batched
///   so a dead worker's leases, expiring one after another over a renew interval, take one
///   listing), and one taker interval.
/// - Every other worker lists once per taker interval × (live peers − 1), ± 10 % jitter so
///   workers started together do not list together, so the fleet's listings stay about two per
///   taker interval whatever its size.
pub(super) fn next_listing(
    config: &CoordinatorConfig,
    leading: bool,
    settled: bool,
    next_expiry: Option<Duration>,
    peers: usize,
    seed: u64,
) -> Duration {
    let fast = next_expiry.map_or(config.taker_interval(), |e| {
        e.min(config.taker_interval()).max(config.expiry_batch())
    });
    if leading || !settled {
        return fast;
    }
    let others = u32::try_from(peers.saturating_sub(1).max(1)).unwrap_or(u32::MAX);
    let slow = config.taker_interval().saturating_mul(others);
    // ±10 %, from the seed: deterministic per worker and listing.
    let tenth = slow / 10;
    let spread = u64::try_from(tenth.as_nanos()).unwrap_or(u64::MAX).max(1);
    (slow - tenth) + Duration::from_nanos(seed % (2 * spread))
}

/// The deputy's check of the leader's lease: `true` when the table must be listed now (the
/// lease expired unrenewed, changed owner, is being handed off, or is gone, or the leader
/// stepped down).
pub(super) async fn leader_gone(shared: &Shared, watch: &mut Watch) -> bool {
    let now = Instant::now();
    let renew = shared.config.renew_interval();
    match shared.store.get(&watch.key).await {
        Ok(Some(lease))
            if lease.owner.as_deref() == Some(watch.owner.as_str())
                && lease.checkpoint_owner.is_none() =>
        {
            if lease
                .renewed_at
                .is_some_and(|s| s.counter == lease.counter && s.stepped_down)
            {
                debug!(worker_id = %shared.me(), leader = %watch.owner, "the leader stepped down");
                return true;
            }
            if lease.counter != watch.counter {
                watch.counter = lease.counter;
                watch.expires = shared.judge().expiry(&lease);
            } else if now >= watch.expires {
                return true;
            }
            watch.check_at = (now + renew).min(watch.expires);
            false
        }
        Ok(_) => true,
        Err(e) => {
            debug!(worker_id = %shared.me(), lease_key = %watch.key, error = %crate::error::Report(&e), "could not read the leader's lease; trying again");
            watch.check_at = now + renew;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_leader_and_unsettled_workers_list_at_the_next_expiry_batched() {
        let c = CoordinatorConfig::new("w");
        assert_eq!(next_listing(&c, true, true, None, 20, 0), 10 * S);
        assert_eq!(next_listing(&c, true, true, Some(3 * S), 20, 0), 3 * S);
        assert_eq!(
            next_listing(&c, false, false, Some(Duration::ZERO), 20, 0),
            Duration::from_millis(250),
            "expiries are batched"
        );
        assert_eq!(next_listing(&c, false, false, Some(60 * S), 20, 0), 10 * S);
    }

    #[test]
    fn settled_workers_share_the_slow_listings_with_jitter() {
        let c = CoordinatorConfig::new("w");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50u64 {
            let d = next_listing(
                &c,
                false,
                true,
                Some(S),
                5,
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            assert!((36 * S..=44 * S).contains(&d), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 40, "jitter spreads workers");
        let alone = next_listing(&c, false, true, None, 1, 7);
        assert!((9 * S..=11 * S).contains(&alone), "{alone:?}");
    }
}

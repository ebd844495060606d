//! What one listing says about the fleet, under **one** liveness rule: which leases are being
//! renewed, which workers are alive, how many there are, and (see [`super::roles`]) who leads.
//! Built once per listing and read by every decision of that cycle; pure, so it is tested
//! without I/O.
//!
//! The liveness rule ([`alive`]): a lease is renewed by its owner when
//! - its renewal stamp names its current counter and was sent within the liveness window
//!   ([`super::CoordinatorConfig::liveness_window`]) on the writer's clock — readable from one
//!   listing, however recent the previous one; or, with no such stamp (a Java writer),
//! - a listing within the liveness window showed its counter moved.
//!
//! Never "moved since my previous listing": a worker that lists twice within one renew interval
//! would see almost nobody alive (the self-election defect this module replaced).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::clock::instant_of;
use crate::lease::Lease;

/// What this worker saw of each lease's counter, across listings.
pub(super) type Observed = BTreeMap<String, Seen>;

/// One lease's counter as this worker's listings saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) counter: u64,
    /// When the lease expires unless its counter moves: failover after the listing that first
    /// showed this counter, or sooner by the counter's renewal stamp.
    pub(super) expires: Instant,
    /// When a listing last showed the counter moved (`None`: not since first seen). Balancing
    /// steals only from leases seen moving by this worker itself, so a newcomer's first
    /// listing steals nothing and owners get one renewal to show they are there, as before
    /// stamps existed.
    pub(super) moved_at: Option<Instant>,
}

/// The clocks and durations that expiry and liveness are judged by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judge {
    /// This worker's monotonic time at the listing.
    pub(super) now: Instant,
    /// Its wall clock at the same moment (milliseconds since the epoch).
    pub(super) now_millis: u64,
    pub(super) failover: Duration,
    pub(super) skew: Duration,
    pub(super) window: Duration,
}

impl Judge {
    /// When `lease`, with a counter first seen now, expires: by its stamp, and never later than
    /// one failover time from now (the counter rule).
    pub(super) fn expiry(&self, lease: &Lease) -> Instant {
        let by_counter = self.now + self.failover;
        self.stamp_expiry(lease)
            .map_or(by_counter, |e| e.min(by_counter))
    }

    /// When `lease` expires by its renewal stamp (its last writer's send time + failover + the
    /// clock-skew margin, on this worker's clock); `None` when the stamp is not of the lease's
    /// counter (a Java writer wrote last).
    pub(super) fn stamp_expiry(&self, lease: &Lease) -> Option<Instant> {
        let stamp = lease.renewed_at.filter(|s| s.counter == lease.counter)?;
        Some(instant_of(stamp.unix_millis, self.now, self.now_millis) + self.failover + self.skew)
    }

    /// Whether `lease`'s current counter carries a stamp sent within the liveness window.
    fn freshly_stamped(&self, lease: &Lease) -> bool {
        let window = u64::try_from((self.window + self.skew).as_millis()).unwrap_or(u64::MAX);
        lease.renewed_at.is_some_and(|s| {
            s.counter == lease.counter && self.now_millis.saturating_sub(s.unix_millis) <= window
        })
    }

    /// The liveness rule (see the module docs): whether `lease`'s owner is renewing it.
    pub(super) fn alive(&self, lease: &Lease, seen: Option<&Seen>) -> bool {
        if seen.is_some_and(|s| self.now >= s.expires) {
            return false;
        }
        if lease.renewed_at.is_some_and(|s| s.counter == lease.counter) {
            return self.freshly_stamped(lease);
        }
        seen.and_then(|s| s.moved_at)
            .is_some_and(|at| self.now.saturating_duration_since(at) <= self.window)
    }
}

/// Folds one listing into `observed`; returns whether it showed a lease of another owner for the
/// first time: the taker looks again after one renewal, to see its counter move before it
/// steals (see [`Seen::moved_at`]).
pub(super) fn observe(observed: &mut Observed, leases: &[Lease], me: &str, judge: &Judge) -> bool {
    let listed: BTreeSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    observed.retain(|k, _| listed.contains(k.as_str()));
    let mut unknown = false;
    for lease in leases {
        match observed.get_mut(&lease.key) {
            Some(seen) if seen.counter != lease.counter => {
                *seen = Seen {
                    counter: lease.counter,
                    expires: judge.expiry(lease),
                    moved_at: Some(judge.now),
                };
            }
            Some(_) => {}
            None => {
                unknown |= lease.owner.as_deref().is_some_and(|o| o != me);
                observed.insert(
                    lease.key.clone(),
                    Seen {
                        counter: lease.counter,
                        expires: judge.expiry(lease),
                        moved_at: None,
                    },
                );
            }
        }
    }
    unknown
}

/// A live worker of this framework (it renews with kcl-rs stamps, so it reads its inbox and
/// lists for the fleet), by one listing.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Peer {
    /// The lease whose inbox it reads next (its oldest fresh stamp, not in a hand-off); `None`
    /// when every lease it renews is in a hand-off, so it cannot be offered anything.
    pub(super) inbox: Option<String>,
    /// Its smallest-keyed live lease not in a hand-off, with that lease's expiry: what a
    /// deputy watches when this peer leads.
    pub(super) watch: Option<(Lease, Instant)>,
    /// Leases with work it holds (not at SHARD_END).
    pub(super) load: usize,
    /// Its current stamps say it stepped down from leading (see
    /// [`crate::lease::RenewalStamp::stepped_down`]).
    pub(super) stepped_down: bool,
}

/// One listing's view of the fleet.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// Live workers of this framework, this one included (with its own leases as listed).
    pub(super) peers: BTreeMap<String, Peer>,
    /// Workers seen alive, of any framework, this one included: the fleet's size.
    pub(super) workers: usize,
}

impl View {
    /// The view of `leases` for worker `me`; `observed` holds what earlier listings saw (empty
    /// for a one-off listing: then only stamps tell liveness).
    pub(super) fn of(me: &str, leases: &[Lease], observed: &Observed, judge: &Judge) -> Self {
        let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
        peers.insert(
            me.to_string(),
            Peer {
                inbox: None,
                watch: None,
                load: 0,
                stepped_down: false,
            },
        );
        let mut alive_owners: BTreeSet<&str> = BTreeSet::from([me]);
        let mut oldest_stamp: BTreeMap<&str, u64> = BTreeMap::new();
        for lease in leases {
            let Some(owner) = lease.owner.as_deref() else {
                continue;
            };
            if !judge.alive(lease, observed.get(&lease.key)) {
                continue;
            }
            alive_owners.insert(owner);
            let Some(stamp) = lease.renewed_at.filter(|s| s.counter == lease.counter) else {
                continue;
            };
            let peer = peers.entry(owner.to_string()).or_insert(Peer {
                inbox: None,
                watch: None,
                load: 0,
                stepped_down: false,
            });
            // Its own word for itself comes from the worker, not from its last write.
            if owner != me {
                peer.stepped_down |= stamp.stepped_down;
            }
            if lease.checkpoint_owner.is_some() {
                continue;
            }
            let oldest = oldest_stamp.entry(owner).or_insert(u64::MAX);
            if stamp.unix_millis < *oldest {
                *oldest = stamp.unix_millis;
                peer.inbox = Some(lease.key.clone());
            }
            if peer.watch.as_ref().is_none_or(|(l, _)| lease.key < l.key) {
                let expires = observed
                    .get(&lease.key)
                    .map_or_else(|| judge.expiry(lease), |s| s.expires);
                peer.watch = Some((lease.clone(), expires));
            }
        }
        for lease in leases.iter().filter(|l| !l.is_shard_end()) {
            if let Some(p) = lease.owner.as_deref().and_then(|o| peers.get_mut(o)) {
                p.load += 1;
            }
        }
        Self {
            peers,
            workers: alive_owners.len(),
        }
    }

    /// Live peers other than `me` that can be offered leases (they have an inbox).
    pub(super) fn receivers<'a>(
        &'a self,
        me: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Peer)> {
        self.peers
            .iter()
            .filter(move |(w, p)| w.as_str() != me && p.inbox.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::RenewalStamp;
    use crate::model::{ExtendedSequenceNumber, ShardId};

    const F: Duration = Duration::from_secs(10);
    const NOW_MS: u64 = 1_000_000_000;

    fn judge(now: Instant) -> Judge {
        Judge {
            now,
            now_millis: NOW_MS,
            failover: F,
            skew: Duration::from_millis(250),
            window: Duration::from_millis(3308 + 1000),
        }
    }

    fn lease(i: u64, owner: &str, counter: u64, stamp_age_ms: Option<u64>) -> Lease {
        let mut l = Lease::new(&ShardId::from_index(i), ExtendedSequenceNumber::TrimHorizon);
        l.owner = Some(owner.to_string());
        l.counter = counter;
        l.renewed_at = stamp_age_ms.map(|age| RenewalStamp::new(counter, NOW_MS - age));
        l
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_stamp_is_alive_from_one_listing_an_old_one_is_not() {
        let j = judge(Instant::now());
        assert!(j.alive(&lease(0, "a", 3, Some(100)), None));
        assert!(j.alive(&lease(0, "a", 3, Some(4_500)), None));
        assert!(!j.alive(&lease(0, "a", 3, Some(6_000)), None));
        // A stamp of an earlier counter (a Java writer or a checkpoint wrote last) says nothing.
        let mut stale = lease(0, "a", 4, Some(100));
        stale.renewed_at.as_mut().unwrap().counter = 3;
        assert!(!j.alive(&stale, None));
    }

    #[tokio::test(start_paused = true)]
    async fn without_stamps_a_counter_seen_moving_within_the_window_is_alive() {
        let t0 = Instant::now();
        let mut observed = Observed::new();
        let java = |c| lease(0, "java", c, None);
        observe(&mut observed, &[java(1)], "me", &judge(t0));
        assert!(!judge(t0).alive(&java(1), observed.get(&java(1).key)));
        let t1 = t0 + Duration::from_secs(3);
        observe(&mut observed, &[java(2)], "me", &judge(t1));
        assert!(judge(t1).alive(&java(2), observed.get(&java(2).key)));
        // Listed again 250 ms later, unmoved: still alive (the rule is not "moved since my
        // previous listing").
        let t2 = t1 + Duration::from_millis(250);
        observe(&mut observed, &[java(2)], "me", &judge(t2));
        assert!(judge(t2).alive(&java(2), observed.get(&java(2).key)));
        // Unmoved for longer than the window: not renewing.
        let t3 = t1 + Duration::from_secs(5);
        assert!(!judge(t3).alive(&java(2), observed.get(&java(2).key)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_is_never_alive() {
        let t0 = Instant::now();
        let mut observed = Observed::new();
        let l = lease(0, "a", 1, None);
        observe(&mut observed, std::slice::from_ref(&l), "me", &judge(t0));
        let later = judge(t0 + F);
        assert!(!later.alive(&l, observed.get(&l.key)));
    }

    #[tokio::test(start_paused = true)]
    async fn first_sightings_of_other_owners_ask_for_another_look() {
        let j = judge(Instant::now());
        let mut observed = Observed::new();
        let a_lease = [lease(0, "a", 1, Some(10))];
        assert!(observe(&mut observed, &a_lease, "me", &j));
        assert!(!observe(&mut observed, &a_lease, "me", &j), "seen before");
        assert!(observe(
            &mut observed,
            &[lease(1, "java", 1, None)],
            "me",
            &j
        ));
        assert!(!observe(
            &mut observed,
            &[lease(2, "me", 1, None)],
            "me",
            &j
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_counts_every_live_owner_and_offers_only_to_stamping_ones() {
        let j = judge(Instant::now());
        let mut handing = lease(3, "b", 7, Some(10));
        handing.checkpoint_owner = Some("c".into());
        let leases = [
            lease(0, "a", 1, Some(2_000)),
            lease(1, "a", 1, Some(500)),
            lease(2, "b", 1, Some(10)),
            handing,
            lease(4, "dead", 1, Some(60_000)),
            lease(5, "java", 1, None),
        ];
        let mut observed = Observed::new();
        observe(&mut observed, &leases, "me", &j);
        // The Java worker proves itself by a move seen later.
        let mut moved = leases.clone();
        moved[5].counter = 2;
        let j2 = Judge {
            now: j.now + Duration::from_secs(1),
            now_millis: NOW_MS + 1_000,
            ..j
        };
        observe(&mut observed, &moved, "me", &j2);
        let view = View::of("me", &moved, &observed, &j2);
        assert_eq!(view.workers, 4, "me, a, b, java");
        let ids: Vec<&str> = view.peers.keys().map(String::as_str).collect();
        assert_eq!(
            ids,
            ["a", "b", "me"],
            "the dead and the Java worker are not peers"
        );
        assert_eq!(
            view.peers["a"].inbox.as_deref(),
            Some(leases[0].key.as_str()),
            "oldest stamp"
        );
        assert_eq!(view.peers["a"].load, 2);
        assert_eq!(view.peers["b"].watch.as_ref().unwrap().0.key, leases[2].key);
        let receivers: Vec<&String> = view.receivers("me").map(|(w, _)| w).collect();
        assert_eq!(receivers, ["a", "b"]);
    }
}

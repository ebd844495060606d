//! Who leads the fleet and who deputises, from one listing's [`View`]: no election writes, no
//! rows of its own. Every worker computes the same answer from listings that agree.
//!
//! - The **leader** is the smallest worker id among the live peers (workers renewing with this
//!   framework's stamps, this one included) that have not stepped down — a leader whose
//!   listings keep failing steps down for a while and says so in its stamps; if every peer
//!   has, the smallest id leads anyway. It lists at every expiry, takes every free or
//!   expired lease, passes on what it took beyond its share by offers, and runs shard sync.
//! - The **deputy** is the next smallest id. It watches one lease of the leader's (one GetItem
//!   per renew interval) and lists the table when that lease expires or moves, so a dead leader
//!   costs one failover time.
//! - Everyone else lists slowly (see the taker).
//!
//! Two workers may lead at once while their listings disagree: harmless, since every write is
//! conditional on the counter it read.

use std::time::Duration;

use tokio::time::Instant;

use super::view::View;

/// The roles by one listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Roles {
    pub(super) leader: String,
    pub(super) deputy: Option<String>,
    /// The leader's lease for the deputy to watch (`None` when the leader holds none that is
    /// not in a hand-off, or this worker leads).
    pub(super) watch: Option<Watch>,
}

/// The deputy's watch on the leader: one lease of the leader's, read each renew interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Watch {
    pub(super) key: String,
    pub(super) owner: String,
    pub(super) counter: u64,
    pub(super) expires: Instant,
    pub(super) check_at: Instant,
}

impl Roles {
    /// The roles `view` shows, judged at `now`; the deputy's first check comes one renew
    /// interval later (or at the lease's expiry, if sooner).
    pub(super) fn of(view: &View, now: Instant, renew: Duration) -> Self {
        let mut ids = view
            .peers
            .iter()
            .filter(|(_, p)| !p.stepped_down)
            .chain(view.peers.iter().filter(|(_, p)| p.stepped_down));
        let (leader, leads) = ids.next().expect("a view holds its own worker");
        let deputy = ids.next().map(|(id, _)| id.clone());
        let watch = leads.watch.as_ref().map(|(lease, expires)| Watch {
            key: lease.key.clone(),
            owner: leader.clone(),
            counter: lease.counter,
            expires: *expires,
            check_at: (*expires).min(now + renew),
        });
        Self {
            leader: leader.clone(),
            deputy,
            watch,
        }
    }

    /// Whether `me` leads.
    pub(super) fn leads(&self, me: &str) -> bool {
        self.leader == me
    }

    /// The watch `me` keeps, if it is the deputy.
    pub(super) fn watch_for(&self, me: &str) -> Option<Watch> {
        self.watch
            .clone()
            .filter(|_| self.deputy.as_deref() == Some(me))
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::{Judge, Observed, View, observe};
    use super::*;
    use crate::lease::{Lease, RenewalStamp};
    use crate::model::{ExtendedSequenceNumber, ShardId};

    const NOW_MS: u64 = 5_000_000;
    const RENEW: Duration = Duration::from_millis(3308);

    fn judge(now: Instant, now_millis: u64) -> Judge {
        Judge {
            now,
            now_millis,
            failover: Duration::from_secs(10),
            skew: Duration::from_millis(250),
            window: RENEW + Duration::from_secs(1),
        }
    }

    fn stamped(i: u64, owner: &str, counter: u64, at_ms: u64) -> Lease {
        let mut l = Lease::new(&ShardId::from_index(i), ExtendedSequenceNumber::TrimHorizon);
        l.owner = Some(owner.to_string());
        l.counter = counter;
        l.renewed_at = Some(RenewalStamp::new(counter, at_ms));
        l
    }

    fn roles_at(me: &str, leases: &[Lease], observed: &mut Observed, j: &Judge) -> Roles {
        observe(observed, leases, me, j);
        Roles::of(&View::of(me, leases, observed, j), j.now, RENEW)
    }

    #[tokio::test(start_paused = true)]
    async fn the_smallest_live_id_leads_and_the_next_deputises() {
        let now = Instant::now();
        let leases = [
            stamped(0, "c", 1, NOW_MS - 100),
            stamped(1, "a", 1, NOW_MS - 200),
            stamped(2, "a", 1, NOW_MS - 300),
        ];
        let roles = roles_at("b", &leases, &mut Observed::new(), &judge(now, NOW_MS));
        assert_eq!(roles.leader, "a");
        assert_eq!(roles.deputy.as_deref(), Some("b"));
        assert!(roles.leads("a") && !roles.leads("b"));
        let watch = roles.watch_for("b").expect("the deputy watches");
        assert_eq!(watch.key, leases[1].key, "the leader's smallest key");
        assert_eq!(watch.check_at, now + RENEW);
        assert_eq!(roles.watch_for("c"), None);
    }

    /// The self-election defect: listing twice within one renew interval must not make a worker
    /// leader while a smaller live id renews (the old rule required a counter move between the
    /// two listings).
    #[tokio::test(start_paused = true)]
    async fn listing_twice_within_a_renew_interval_keeps_the_leader() {
        let t0 = Instant::now();
        let leases = [
            stamped(0, "a", 4, NOW_MS - 1_000),
            stamped(1, "b", 9, NOW_MS - 10),
        ];
        let mut observed = Observed::new();
        let first = roles_at("b", &leases, &mut observed, &judge(t0, NOW_MS));
        assert_eq!(first.leader, "a");
        for step in 1..=4u64 {
            let j = judge(t0 + Duration::from_millis(250 * step), NOW_MS + 250 * step);
            assert_eq!(
                roles_at("b", &leases, &mut observed, &j).leader,
                "a",
                "listing {step}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_stopped_renewing_loses_the_role_within_the_window() {
        let t0 = Instant::now();
        let leases = [stamped(0, "a", 4, NOW_MS), stamped(1, "b", 9, NOW_MS)];
        let later = judge(t0 + Duration::from_secs(5), NOW_MS + 5_000);
        // b renewed since; a did not.
        let renewed = [leases[0].clone(), stamped(1, "b", 10, NOW_MS + 4_900)];
        let roles = roles_at("b", &renewed, &mut Observed::new(), &later);
        assert_eq!(roles.leader, "b");
        assert_eq!(roles.deputy, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_alone_or_among_java_workers_leads() {
        let now = Instant::now();
        let mut java = stamped(0, "0-java", 3, NOW_MS);
        java.renewed_at = None;
        let roles = roles_at("z", &[java], &mut Observed::new(), &judge(now, NOW_MS));
        assert_eq!(roles.leader, "z");
        assert_eq!(roles.deputy, None);
        assert_eq!(roles.watch, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stepped_down_worker_is_passed_over_unless_everyone_has_stepped_down() {
        let now = Instant::now();
        let mut a = stamped(0, "a", 4, NOW_MS - 100);
        a.renewed_at = a.renewed_at.map(RenewalStamp::stepped_down);
        let leases = [a.clone(), stamped(1, "b", 2, NOW_MS - 100)];
        let roles = roles_at("c", &leases, &mut Observed::new(), &judge(now, NOW_MS));
        assert_eq!(roles.leader, "b");
        assert_eq!(roles.deputy.as_deref(), Some("c"));
        assert_eq!(roles.watch_for("c").unwrap().key, leases[1].key);
        // Alone with a stepped-down peer and stepped down itself (the taker sets its own flag):
        // the smallest id leads anyway.
        let mut view = View::of("b", &[a], &Observed::new(), &judge(now, NOW_MS));
        view.peers.get_mut("b").unwrap().stepped_down = true;
        assert_eq!(Roles::of(&view, now, RENEW).leader, "a");
    }
}

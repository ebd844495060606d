//! The balancing plan: from one listing of the table, which leases this worker takes and steals.
//!
//! Free leases (unowned or expired) are taken at once by whoever sees them, up to its target
//! (counting itself first for the +1 among workers holding as many), and beyond it up to the
//! ceiling when the other workers could not absorb the rest: a crashed or stopped worker's leases
//! must not wait for a particular worker's next cycle. Workers start picking at different offsets
//! of the free list, so those acting on one snapshot rarely collide (and a collision only costs a
//! failed conditional write).
//!
//! Steals happen only when nothing is free. Every worker computes the same steal assignment from
//! the same listing and executes only its own part, so thieves acting on one snapshot pick
//! disjoint leases. Targets are `ceil(leases / live workers)` for the first `leases mod workers`
//! workers in the order (leases held descending, id) and the floor for the rest; a fleet already
//! within one lease of even therefore has every worker at its target and moves nothing (no
//! ping-pong).

use std::collections::BTreeMap;

use super::super::Lease;

/// What the taker knows about one lease besides the lease itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Held by a live worker (possibly this one).
    Live,
    /// Held, unexpired, but not seen renewing since the previous listing: counts as its owner's
    /// load and is never stolen. Its owner may be gone (a stopped fleet, say a Java 2.x one being
    /// replaced), and a graceful steal would wait a hand-off that cannot come; expiry frees it
    /// sooner, and a live owner proves itself by the next listing.
    Quiet,
    /// Free to take: unowned, expired, or owned by this worker without it knowing (ordered by
    /// how long it has been free, oldest first).
    Free { order: u128 },
}

/// This worker's part of the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// Free leases to take.
    pub(crate) take: Vec<Lease>,
    /// Leases of over-target workers to steal.
    pub(crate) steal: Vec<Lease>,

    /// This worker's target.
    pub(crate) target: usize,
}

pub(crate) struct PlanInput<'a> {
    pub(crate) me: &'a str,
    /// Every lease with its availability, in key order.
    pub(crate) leases: Vec<(&'a Lease, Availability)>,
    pub(crate) max_leases_for_worker: usize,
    pub(crate) max_steal: usize,
}

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let n = input.leases.len();
    // Live workers and what they hold; this worker always counts.
    // Each held lease with whether it may be stolen.
    let mut held: BTreeMap<&str, Vec<(&Lease, bool)>> = BTreeMap::new();
    held.insert(input.me, Vec::new());
    let mut free: Vec<(u128, &Lease)> = Vec::new();
    for (lease, availability) in &input.leases {
        match (availability, lease.owner.as_deref()) {
            (Availability::Live, Some(owner)) => held.entry(owner).or_default().push((lease, true)),
            (Availability::Quiet, Some(owner)) => {
                held.entry(owner).or_default().push((lease, false))
            }
            (Availability::Free { order }, _) => free.push((*order, lease)),
            (Availability::Live | Availability::Quiet, None) => free.push((0, lease)),
        }
    }
    free.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));

    // Targets: the +1s go to the workers holding most, so an even fleet stays put.
    let workers = held.len();
    let (base, extra) = (n / workers, n % workers);
    let mut order: Vec<(&str, usize)> = held.iter().map(|(w, l)| (*w, l.len())).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let targets: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (w, _))| {
            (
                *w,
                (base + usize::from(i < extra)).min(input.max_leases_for_worker),
            )
        })
        .collect();

    // Surplus of over-target workers: their highest keys, never a lease already handing off
    // or one whose owner was not seen renewing.
    let mut surplus: Vec<&Lease> = Vec::new();
    for (worker, leases) in &held {
        let over = leases.len().saturating_sub(targets[worker]);
        let movable: Vec<&Lease> = leases
            .iter()
            .filter(|(l, stealable)| *stealable && l.checkpoint_owner.is_none())
            .map(|(l, _)| *l)
            .collect();
        surplus.extend(movable.iter().rev().take(over).copied());
    }

    let mut my_plan = Plan {
        target: targets[input.me],
        ..Plan::default()
    };
    let mine = held[input.me].len();
    if !free.is_empty() {
        // Take free leases up to this worker's target, counting itself first for the +1 among
        // workers holding as many; and take more (up to the ceiling) when the others, filled to
        // the floor, could not absorb the rest: a free lease must not wait for another worker's
        // next cycle. Start at this worker's offset in the list to avoid colliding.
        let mut ties_me_first = order.clone();
        ties_me_first.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| (a.0 != input.me).cmp(&(b.0 != input.me)))
                .then_with(|| a.0.cmp(b.0))
        });
        let position = ties_me_first
            .iter()
            .position(|(w, _)| *w == input.me)
            .expect("this worker is listed");
        let target = base + usize::from(position < extra);
        let others_room: usize = held
            .iter()
            .filter(|(w, _)| **w != input.me)
            .map(|(_, l)| base.saturating_sub(l.len()))
            .sum();
        let ceiling = n.div_ceil(workers).min(input.max_leases_for_worker);
        let wanted = target
            .saturating_sub(mine)
            .max(free.len().saturating_sub(others_room));
        let quota = wanted.min(ceiling.saturating_sub(mine));
        let rank = held
            .keys()
            .position(|w| *w == input.me)
            .expect("this worker is listed");
        let offset = rank * free.len() / workers;
        my_plan.take = free
            .iter()
            .cycle()
            .skip(offset)
            .take(quota.min(free.len()))
            .map(|(_, l)| (*l).clone())
            .collect();
        return my_plan;
    }
    // Hand the surplus to the workers below target, in id order; a worker holding nothing is
    // invisible to the others, who may be planning without it, so it steals one lease to
    // announce itself and balances from the next cycle on.
    let mut surplus_iter = surplus.into_iter();
    for (worker, leases) in &held {
        let is_me = *worker == input.me;
        let deficit = targets[worker].saturating_sub(leases.len());
        let cap = if is_me && mine == 0 {
            1
        } else {
            input.max_steal
        };
        for lease in surplus_iter.by_ref().take(deficit.min(cap)) {
            if is_me {
                my_plan.steal.push(lease.clone());
            }
        }
    }
    my_plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExtendedSequenceNumber, ShardId};

    fn leases(owners: &[Option<&str>]) -> Vec<Lease> {
        owners
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut l = Lease::new(
                    &ShardId::from_index(i as u64),
                    ExtendedSequenceNumber::TrimHorizon,
                );
                l.owner = o.map(str::to_string);
                l
            })
            .collect()
    }

    fn run(me: &str, all: &[Lease]) -> Plan {
        let input = PlanInput {
            me,
            leases: all
                .iter()
                .map(|l| {
                    (
                        l,
                        if l.owner.is_some() {
                            Availability::Live
                        } else {
                            Availability::Free { order: 0 }
                        },
                    )
                })
                .collect(),
            max_leases_for_worker: usize::MAX,
            max_steal: usize::MAX,
        };
        plan(&input)
    }

    /// Applies every worker's plan to one snapshot, as if all ran at once.
    fn round(workers: &[&str], all: &mut [Lease]) {
        let plans: Vec<(String, Plan)> = workers
            .iter()
            .map(|w| (w.to_string(), run(w, all)))
            .collect();
        for (w, p) in plans {
            for l in &p.steal {
                let stored = all.iter_mut().find(|x| x.key == l.key).unwrap();
                assert_eq!(stored.owner, l.owner, "two plans stole {}", l.key);
                stored.owner = Some(w.clone());
            }
            for l in &p.take {
                // Free leases may collide: the first conditional write wins.
                let stored = all.iter_mut().find(|x| x.key == l.key).unwrap();
                if stored.owner == l.owner {
                    stored.owner = Some(w.clone());
                }
            }
        }
    }

    fn spread(all: &[Lease], workers: &[&str]) -> (usize, usize) {
        let counts: Vec<usize> = workers
            .iter()
            .map(|w| {
                all.iter()
                    .filter(|l| l.owner.as_deref() == Some(*w))
                    .count()
            })
            .collect();
        (*counts.iter().min().unwrap(), *counts.iter().max().unwrap())
    }

    #[test]
    fn free_leases_are_split_without_collisions() {
        let mut all = leases(&[None; 10]);
        // Nobody is visible yet: each takes everything it can; conditional writes would sort
        // collisions out, but here they all hold nothing, so check one worker's view.
        let p = run("a", &all);
        assert_eq!(p.take.len(), 10);
        all[0].owner = Some("b".into());
        let p = run("a", &all);
        assert_eq!((p.take.len(), p.target), (5, 5));
    }

    #[test]
    fn one_to_ten_converges_in_two_rounds() {
        let mut all = leases(&[Some("w0"); 100]);
        let workers: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
        let names: Vec<&str> = workers.iter().map(String::as_str).collect();
        // Round 1: newcomers announce themselves with one lease each (one at a time, since
        // their plans do not see each other).
        for w in &names[1..] {
            round(&[w], &mut all);
        }
        round(&names, &mut all);
        let (min, max) = spread(&all, &names);
        assert!(max - min <= 1, "{min}..{max}");
        // Balanced: nothing moves any more.
        let before = all.clone();
        round(&names, &mut all);
        assert_eq!(before, all);
    }

    #[test]
    fn released_leases_go_to_the_survivors_evenly() {
        let owners: Vec<Option<&str>> = (0..100)
            .map(|i| {
                if i % 10 < 3 {
                    Some(["a", "b", "c"][i % 10])
                } else {
                    None
                }
            })
            .collect();
        let mut all = leases(&owners);
        round(&["a", "b", "c"], &mut all);
        assert!(
            all.iter().all(|l| l.owner.is_some()),
            "every free lease taken in one round"
        );
        round(&["a", "b", "c"], &mut all);
        assert_eq!(spread(&all, &["a", "b", "c"]), (33, 34));
    }

    #[test]
    fn caps_and_steal_limits_hold() {
        let all = leases(&[Some("x"); 20]);
        let input = PlanInput {
            me: "y",
            leases: all.iter().map(|l| (l, Availability::Live)).collect(),
            max_leases_for_worker: 3,
            max_steal: 2,
        };
        let p = plan(&input);
        assert_eq!(
            (p.target, p.steal.len()),
            (3, 1),
            "an invisible worker steals one"
        );
        let mut all = all;
        all[0].owner = Some("y".into());
        let input = PlanInput {
            me: "y",
            leases: all.iter().map(|l| (l, Availability::Live)).collect(),
            max_leases_for_worker: 3,
            max_steal: 1,
        };
        assert_eq!(plan(&input).steal.len(), 1);
    }
}

//! The balancing plan: from one listing of the table, which leases this worker takes and steals.
//!
//! Free leases (unowned or expired) are taken at once by whoever sees them, up to its target
//! (counting itself first for the +1 among workers holding as many), and beyond it up to the
//! ceiling when the other workers could not absorb the rest: a crashed or stopped worker's leases
//! must not wait for a particular worker's next cycle. Workers start picking at different offsets
//! of the free list, so those acting on one snapshot rarely collide (and a collision only costs a
//! failed conditional write).
//!
//! Targets (for taking free leases) are `ceil(leases / live workers)` for the first
//! `leases mod workers` workers in the order (leases held descending, id) and the floor for the
//! rest.
//!
//! Steals happen only when nothing is free, by load rather than count (see [`rebalance`]: each
//! lease weighs 1 plus its throughput over the fleet's mean). Every worker computes the same
//! moves from the same listing and executes only its own part, so thieves acting on one snapshot
//! pick disjoint leases; a move must leave a gap above a margin, so a fleet within one lease (or
//! one band of load) of even moves nothing (no ping-pong).
//!
//! Only leases that carry work count: a lease at SHARD_END and a child waiting on a parent that
//! has not ended weigh nothing in targets and are never stolen (KCL #50, #54, #1247). Such
//! leases still need an owner — the first to finish the parent, the second to start when it
//! ends — so free ones are dealt out one per worker in turn. A free child whose parent (ended
//! or not) is held by a live worker goes to that worker alone, beyond its target if need be: it
//! starts where its parent ended, with no hand-off in between (KCL #78), and balancing moves it
//! later only if the fleet is uneven then.

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
    /// The most leases with work any worker should hold: `ceil(leases / workers)`, within
    /// `max_leases_for_worker`.
    pub(crate) ceiling: usize,
}

pub(crate) struct PlanInput<'a> {
    pub(crate) me: &'a str,
    /// Every lease with its availability, in key order.
    pub(crate) leases: Vec<(&'a Lease, Availability)>,
    pub(crate) max_leases_for_worker: usize,
    pub(crate) max_steal: usize,
    /// Take every free lease (up to `max_leases_for_worker`), not only this worker's share: the
    /// fleet's leader does, as the only worker listing often, and offers the excess on.
    pub(crate) take_all: bool,
}

/// Whether a lease carries no work now: at SHARD_END, or a child whose parent (still listed) has
/// not ended.
fn weightless(lease: &Lease, by_key: &BTreeMap<&str, (&Lease, Availability)>) -> bool {
    lease.is_shard_end()
        || lease.parent_shard_ids.iter().any(|p| {
            by_key
                .get(lease.key_in_stream(p).as_str())
                .is_some_and(|(parent, _)| !parent.is_shard_end())
        })
}

/// The live worker holding one of a lease's parents (the first parent so held), if any.
fn parent_owner<'a>(
    lease: &Lease,
    by_key: &BTreeMap<&str, (&'a Lease, Availability)>,
) -> Option<&'a str> {
    lease
        .parent_shard_ids
        .iter()
        .find_map(|p| match by_key.get(lease.key_in_stream(p).as_str()) {
            Some((parent, Availability::Live | Availability::Quiet)) => parent.owner.as_deref(),
            _ => None,
        })
}

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let by_key: BTreeMap<&str, (&Lease, Availability)> = input
        .leases
        .iter()
        .map(|(l, a)| (l.key.as_str(), (*l, *a)))
        .collect();
    let (loaded, weightless_leases): (Vec<(&Lease, Availability)>, Vec<_>) = input
        .leases
        .iter()
        .partition(|(l, _)| !weightless(l, &by_key));
    let n = loaded.len();
    // Live workers and what they hold; this worker always counts.
    // Each held lease with whether it may be stolen.
    let mut held: BTreeMap<&str, Vec<(&Lease, bool)>> = BTreeMap::new();
    held.insert(input.me, Vec::new());
    for (lease, availability) in &weightless_leases {
        if let (Availability::Live | Availability::Quiet, Some(owner)) =
            (availability, lease.owner.as_deref())
        {
            held.entry(owner).or_default();
        }
    }
    let mut free: Vec<(u128, &Lease)> = Vec::new();
    let mut to_parent_owner: Vec<Lease> = Vec::new();
    for (lease, availability) in &loaded {
        match (availability, lease.owner.as_deref()) {
            (Availability::Live, Some(owner)) => held.entry(owner).or_default().push((lease, true)),
            (Availability::Quiet, Some(owner)) => {
                held.entry(owner).or_default().push((lease, false))
            }
            (Availability::Free { order }, _) => match parent_owner(lease, &by_key) {
                // A child of a live worker's parent is that worker's (see the module docs).
                Some(heir) if heir == input.me => to_parent_owner.push((*lease).clone()),
                Some(_) => {}
                None => free.push((*order, lease)),
            },
            (Availability::Live | Availability::Quiet, None) => free.push((0, lease)),
        }
    }
    free.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
    let mut inherited = deal_weightless(input.me, &held, &weightless_leases, &by_key);
    inherited.append(&mut to_parent_owner);

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

    let ceiling = n.div_ceil(workers).min(input.max_leases_for_worker);
    let mut my_plan = Plan {
        target: targets[input.me],
        ceiling,
        take: inherited,
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
        let wanted = target
            .saturating_sub(mine)
            .max(free.len().saturating_sub(others_room));
        let quota = if input.take_all {
            free.len()
                .min(input.max_leases_for_worker.saturating_sub(mine))
        } else {
            wanted.min(ceiling.saturating_sub(mine))
        };
        let rank = held
            .keys()
            .position(|w| *w == input.me)
            .expect("this worker is listed");
        let offset = rank * free.len() / workers;
        my_plan.take.extend(
            free.iter()
                .cycle()
                .skip(offset)
                .take(quota.min(free.len()))
                .map(|(_, l)| (*l).clone()),
        );
        return my_plan;
    }
    my_plan.steal = rebalance(input, &held, mine);
    my_plan
}

/// Below this mean throughput (KB/s) a fleet is idle or trickling and balances by count.
const SIGNIFICANT_KBPS: f64 = 1.0;
/// A move must leave a gap between the two workers' loads: this much (in units of an idle
/// lease's weight) plus [`BAND`] of their mean load, so throughput figures that wander (by up to
/// that band between listings) move nothing.
const MARGIN: f64 = 0.25;
/// The relative band (the KCL 3.x's `reBalanceThresholdPercentage` default is 10 %).
const BAND: f64 = 0.1;

/// A lease's share of the work: 1 for being a shard to poll, plus its `throughputKBps` over the
/// mean throughput of the leases with work (a lease without a figure counts as the mean). While
/// the mean is below [`SIGNIFICANT_KBPS`], every lease weighs 1 and balancing is by count.
fn weights<'a>(leases: impl Iterator<Item = &'a Lease>) -> (impl Fn(&Lease) -> f64, bool) {
    let known: Vec<f64> = leases.filter_map(|l| l.throughput_kbps).collect();
    let mean = (!known.is_empty())
        .then(|| known.iter().sum::<f64>() / known.len() as f64)
        .filter(|m| *m >= SIGNIFICANT_KBPS);
    let weight = move |l: &Lease| match mean {
        Some(m) => 1.0 + l.throughput_kbps.unwrap_or(m) / m,
        None => 1.0,
    };
    (weight, mean.is_some())
}

/// This worker's steals when nothing is free: the moves every worker computes alike from the
/// same listing — repeatedly, from the most to the least loaded worker, the heaviest movable
/// lease that still leaves a gap of more than [`MARGIN`] (plus [`BAND`] when weighing
/// throughput) — of which it makes its own.
/// Each move lowers the sum of squared loads by more than 2 · MARGIN (weights are at least 1), so the moves
/// end, and a fleet whose loads no move can narrow moves nothing (no ping-pong). A worker holding
/// nothing is invisible to the others, who may be planning without it, so it steals one lease
/// to announce itself and balances from the next cycle on.
fn rebalance(
    input: &PlanInput<'_>,
    held: &BTreeMap<&str, Vec<(&Lease, bool)>>,
    mine: usize,
) -> Vec<Lease> {
    let (weight, by_throughput) = weights(held.values().flatten().map(|(l, _)| *l));
    // Counts do not wander: the band is for throughput figures only.
    let band = if by_throughput { BAND } else { 0.0 };
    let mut load: BTreeMap<&str, f64> = BTreeMap::new();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut movable: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for (worker, leases) in held {
        load.insert(*worker, leases.iter().map(|(l, _)| weight(l)).sum());
        count.insert(*worker, leases.len());
        // Never a lease already handing off or one whose owner was not seen renewing.
        movable.insert(
            *worker,
            leases
                .iter()
                .filter(|(l, stealable)| *stealable && l.checkpoint_owner.is_none())
                .map(|(l, _)| *l)
                .collect(),
        );
    }
    let my_cap = if mine == 0 { 1 } else { input.max_steal };
    let mut stolen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mine_stolen = Vec::new();
    let total: usize = count.values().sum();
    for _ in 0..total {
        // Receivers that may still take one: under the lease limit and their steal limit.
        let can_receive = |w: &str| {
            let cap = if w == input.me {
                my_cap
            } else {
                input.max_steal
            };
            count[w] < input.max_leases_for_worker && stolen.get(w).copied().unwrap_or(0) < cap
        };
        let by_load =
            |a: &(&&str, &f64), b: &(&&str, &f64)| a.1.total_cmp(b.1).then_with(|| a.0.cmp(b.0));
        // The least loaded receiver, and the most loaded worker with a lease that narrows the
        // gap to it (the most loaded may hold only one lease too heavy to move).
        let Some((&to, &lt)) = load.iter().filter(|(w, _)| can_receive(w)).min_by(by_load) else {
            break;
        };
        let mut givers: Vec<(&&str, &f64)> = load.iter().filter(|(w, _)| **w != to).collect();
        givers.sort_by(|a, b| by_load(b, a));
        let pick = givers.iter().find_map(|(from, lf)| {
            movable[**from]
                .iter()
                .enumerate()
                .filter(|(_, l)| lt + weight(l) + MARGIN + band * (lt + **lf) / 2.0 < **lf)
                .max_by(|(_, a), (_, b)| {
                    weight(a)
                        .total_cmp(&weight(b))
                        .then_with(|| a.key.cmp(&b.key))
                })
                .map(|(i, _)| (**from, i))
        });
        let Some((from, pos)) = pick else {
            break;
        };
        let lease = movable.get_mut(from).expect("listed").remove(pos);
        let w = weight(lease);
        *load.get_mut(from).expect("listed") -= w;
        *load.get_mut(to).expect("listed") += w;
        *count.get_mut(from).expect("listed") -= 1;
        *count.get_mut(to).expect("listed") += 1;
        *stolen.entry(to).or_default() += 1;
        if to == input.me {
            mine_stolen.push(lease.clone());
        }
    }
    mine_stolen
}

/// This worker's share of the free weightless leases: a child whose parent a live worker holds
/// goes to that worker; the rest are dealt one per worker in turn (every worker deals the same
/// listing the same way, so they rarely collide).
fn deal_weightless(
    me: &str,
    held: &BTreeMap<&str, Vec<(&Lease, bool)>>,
    weightless: &[(&Lease, Availability)],
    by_key: &BTreeMap<&str, (&Lease, Availability)>,
) -> Vec<Lease> {
    let workers: Vec<&str> = held.keys().copied().collect();
    let mut turn = 0usize;
    let mut mine = Vec::new();
    for (lease, availability) in weightless {
        let free = matches!(availability, Availability::Free { .. }) || lease.owner.is_none();
        if !free {
            continue;
        }
        let taker = match parent_owner(lease, by_key) {
            Some(owner) => owner,
            None => {
                turn += 1;
                workers[(turn - 1) % workers.len()]
            }
        };
        if taker == me {
            mine.push((*lease).clone());
        }
    }
    mine
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
            take_all: false,
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
            take_all: false,
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
            take_all: false,
        };
        assert_eq!(plan(&input).steal.len(), 1);
    }

    fn with_availability(all: &[Lease]) -> Vec<(&Lease, Availability)> {
        all.iter()
            .map(|l| {
                let a = if l.owner.is_some() {
                    Availability::Live
                } else {
                    Availability::Free { order: 0 }
                };
                (l, a)
            })
            .collect()
    }

    fn plan_for<'a>(me: &'a str, all: &'a [Lease]) -> Plan {
        plan(&PlanInput {
            me,
            leases: with_availability(all),
            max_leases_for_worker: usize::MAX,
            max_steal: usize::MAX,
            take_all: false,
        })
    }

    #[test]
    fn shard_end_leases_weigh_nothing_and_are_never_stolen() {
        // a: 10 ended parents and 4 active leases; b: 1 active lease.
        let mut all = leases(&[Some("a"); 15]);
        for l in &mut all[..10] {
            l.checkpoint = ExtendedSequenceNumber::ShardEnd;
        }
        all[14].owner = Some("b".into());
        let p = plan_for("b", &all);
        // 5 leases carry work: targets 3 and 2, so b steals one — an active one.
        assert_eq!((p.target, p.steal.len()), (2, 1));
        assert!(!p.steal[0].is_shard_end());
        // Counted by all leases, a would have looked 13 over b.
        assert!(plan_for("a", &all).steal.is_empty());
    }

    #[test]
    fn a_waiting_child_goes_to_its_parents_owner_only() {
        // a holds the active parent and is already above target; b holds one lease.
        let mut all = leases(&[Some("a"), Some("a"), Some("b"), None]);
        all[3].parent_shard_ids = vec![ShardId::from_index(0)];
        let child = all[3].key.clone();
        let a = plan_for("a", &all);
        assert_eq!(a.take.iter().map(|l| &l.key).collect::<Vec<_>>(), [&child]);
        assert!(plan_for("b", &all).take.is_empty(), "b leaves it to a");
        // Once the parent ended the child carries work, and still goes to a (it holds the
        // ended parent).
        all[0].checkpoint = ExtendedSequenceNumber::ShardEnd;
        let a = plan_for("a", &all);
        assert_eq!(a.take.iter().map(|l| &l.key).collect::<Vec<_>>(), [&child]);
        assert!(plan_for("b", &all).take.is_empty());
        // With the parent's owner gone, it is taken by target (b is under).
        all[0].owner = None;
        let b = plan_for("b", &all);
        assert!(b.take.iter().any(|l| l.key == child), "{b:?}");
    }

    #[test]
    fn free_weightless_leases_are_dealt_in_turn() {
        let mut all = leases(&[Some("a"), Some("b"), None, None, None, None]);
        for l in &mut all[2..] {
            l.checkpoint = ExtendedSequenceNumber::ShardEnd;
        }
        let a: Vec<String> = plan_for("a", &all)
            .take
            .into_iter()
            .map(|l| l.key)
            .collect();
        let b: Vec<String> = plan_for("b", &all)
            .take
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!((a.len(), b.len()), (2, 2));
        assert!(a.iter().all(|k| !b.contains(k)), "disjoint: {a:?} {b:?}");
    }

    #[test]
    fn a_hot_shard_ends_up_on_a_worker_with_fewer_leases_and_nothing_ping_pongs() {
        // Ten leases; lease 0 carries ten times the others' throughput.
        let owners: Vec<Option<&str>> = (0..10)
            .map(|i| Some(if i < 5 { "a" } else { "b" }))
            .collect();
        let mut all = leases(&owners);
        let set_throughput = |all: &mut [Lease], round: u64| {
            for (i, l) in all.iter_mut().enumerate() {
                // Figures that wander by up to ±5 % per round (after the renewals' smoothing).
                let noise = 1.0 + (((i as u64 * 7919 + round * 104_729) % 11) as f64 - 5.0) / 100.0;
                l.throughput_kbps = Some(if i == 0 { 1000.0 } else { 100.0 } * noise);
            }
        };
        let mut moves_per_round = Vec::new();
        for r in 0..360 {
            set_throughput(&mut all, r);
            let before: Vec<Option<String>> = all.iter().map(|l| l.owner.clone()).collect();
            round(&["a", "b"], &mut all);
            let moved = all
                .iter()
                .zip(&before)
                .filter(|(l, b)| l.owner != **b)
                .count();
            moves_per_round.push(moved);
        }
        let hot_owner = all[0].owner.clone().unwrap();
        let held = |w: &str| all.iter().filter(|l| l.owner.as_deref() == Some(w)).count();
        let other = if hot_owner == "a" { "b" } else { "a" };
        assert!(
            held(&hot_owner) < held(other),
            "{} vs {}",
            held(&hot_owner),
            held(other)
        );
        let settled = moves_per_round.iter().position(|m| *m == 0).unwrap();
        assert!(
            settled <= 2,
            "settled after {settled} rounds: {moves_per_round:?}"
        );
        assert!(
            moves_per_round[settled..].iter().all(|m| *m == 0),
            "no move in a simulated hour after settling: {moves_per_round:?}"
        );
    }

    #[test]
    fn equal_throughput_balances_by_count() {
        let mut all = leases(&[Some("a"); 9]);
        all[8].owner = Some("b".into());
        for l in &mut all {
            l.throughput_kbps = Some(50.0);
        }
        for _ in 0..3 {
            round(&["a", "b"], &mut all);
        }
        assert_eq!(spread(&all, &["a", "b"]), (4, 5));
    }
}

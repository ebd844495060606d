//! The lease coordinator: one per worker. It renews the leases it holds, takes free and expired
//! ones, balances the fleet, hands leases off gracefully, and reports every change as a
//! [`LeaseEvent`]. `scale-design.md` beside this file gives the argument; this is the map.
//!
//! # Rooms
//! - `config.rs`: [`CoordinatorConfig`], inputs only; every timing is a field or a method.
//! - `renewer.rs`: renews held leases each renew interval, polls leases in a hand-off every
//!   100 ms, reads inboxes from the renewals' responses, extends a hand-off while the giver's
//!   batch runs.
//! - `taker.rs`: one listing → a [`view`] → roles → the balancing plan (`plan.rs`, pure) →
//!   takes and steals; then the leader's part (`leader.rs`) and when to list next.
//! - `view.rs`: the one liveness rule and what a listing says about the fleet (pure).
//! - `roles.rs`: leader, deputy and the deputy's watch, from a view (pure).
//! - `leader.rs`: what the roles do: pass on, watch the leader, the listing cadence.
//! - `offer.rs`: planned hand-off — offer, accept, withdraw — and `ListNow` requests.
//! - `inbox.rs`: the typed inbox entries (`Offer`, `ListNow`).
//! - `clock.rs`: wall-clock stamps in tokio's (possibly virtual) time.
//!
//! # Who lists when
//! The leader (smallest live id that has not stepped down; a leader steps down after three
//! failed listings in a row) at every expiry it saw, batched, at most a taker interval
//! apart; the deputy (next id) reads one leader lease per renew interval and lists when it
//! lapses; everyone else while it has something to take or steal, else once per taker interval
//! × (live peers − 1). A `ListNow` in the inbox makes a worker list at once.
//!
//! # Lease states, as this worker sees them
//! One map (`Shared::leases`) holds every lease this worker has to do with; a key absent from
//! it is not this worker's. A held lease ([`Slot`]`::Held`) is in one [`State`]:
//! - *Ready*: held, processed, renewed.
//! - *Incoming*: owned after a graceful steal or an accepted offer; not processed until the
//!   previous owner ends the hand-off (or its timeout passes).
//! - *Offered*: stored as the receiver's, still processed here until it accepts (→ *Outgoing*)
//!   or the offer times out (taken back → *Ready*).
//! - *Gone*: lost, released or handed off; out of the map (tasks still holding the entry see it).
//!
//! *Outgoing* (`Slot::Outgoing`): another worker owns it and waits for this one's last
//! checkpoint ([`LeaseCoordinator::finish_hand_off`]); this worker neither takes nor accepts it
//! meanwhile. `Shared::insert` (→ Ready/Incoming) and `Shared::forget` (→ Gone/Outgoing) are the
//! only places a lease enters or leaves the map.
//!
//! Transitions are writes conditional on the lease counter this worker last saw: take
//! (→ Ready), steal (→ Incoming), offer (Ready → Offered), accept (→ Incoming), withdraw
//! (Offered → Ready), evict (→ Gone); a failed condition re-reads the lease and reconciles.
//!
//! # Safety
//! A worker believes it holds a lease until `failover_time` after it *sent* its last successful
//! renewal. Another worker takes a lease only after seeing its counter unchanged for
//! `failover_time` on its own clock, counted from a listing made after that renewal was applied,
//! so the two beliefs never overlap — with no clock agreement between workers. Or sooner, by
//! the renewal's stamp: each renewal also writes the owner's wall-clock time of sending it with
//! the counter it leaves (`kclRsRenewedAt`), and a listing that shows that counter lets the
//! observer take the lease at stamp + `failover_time` + `clock_skew_margin` on its own wall
//! clock — which is after the owner's belief ends as long as the two clocks differ by less than
//! the margin. A stamp whose counter is not the lease's (a Java worker or a checkpoint wrote
//! last) is not used, and clocks further apart than the margin cost at most a batch processed
//! twice, never a checkpoint: every write stays conditional on the counter. A graceful steal
//! moves the lease with `checkpointOwner` set: the thief does not process it until the victim
//! has finished (or `graceful_handoff_timeout` ≥ `failover_time` has passed).
//!
//! # Liveness
//! A crashed worker's leases move at its expiry (the leader lists then), a crashed leader's
//! when its deputy sees its lease lapse: one failover time and the skew margin either way
//! (tested: within F + 1 s). Leader and deputy lost together wait for the next listing of
//! another worker — a nudge from a released lease, or its slow listing.

mod clock;
mod config;
mod inbox;
mod leader;
mod offer;
mod plan;
mod renewer;
mod roles;
mod taker;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{CoordinatorConfig, CoordinatorConfigError};

use super::{CheckpointUpdate, Lease, LeaseError, LeaseStore};
use crate::model::ExtendedSequenceNumber;

/// A change in what this worker holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// The lease is this worker's: process the shard from `lease.checkpoint`. Checkpoints and
    /// releases for this holding must present `token`: a lease lost and gained again gets a new
    /// token, so a consumer left over from the earlier holding cannot write.
    Gained {
        /// The lease as stored when gained.
        lease: Lease,
        /// Identifies this holding of the lease.
        token: LeaseToken,
    },
    /// The lease is gone: stop processing the shard now, without checkpointing.
    Lost {
        /// The lease key.
        key: String,
        /// Why.
        reason: LostReason,
    },
    /// Another worker took the lease gracefully: stop processing, checkpoint what was processed
    /// through [`LeaseCoordinator::finish_hand_off`], and the new owner starts from there.
    HandingOff {
        /// The lease as stored (new owner in `owner`, this worker in `checkpoint_owner`).
        lease: Lease,
    },
    /// A lease offered by [`LeaseCoordinator::offer_leases`] found no taker in time: this
    /// worker took it back and holds it as before (same token).
    OfferWithdrawn {
        /// The lease key.
        key: String,
    },
}

/// Identifies one holding of a lease by this worker (the KCL's concurrency token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseToken(u64);

/// Why a lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// Another worker took it.
    Taken,
    /// It was deleted from the table.
    Deleted,
    /// Renewals failed for the whole failover time; others may have taken it.
    RenewalsFailed,
    /// A graceful hand-off this worker was finishing ran out: it could not keep the new owner
    /// waiting (store calls failed for a hand-off timeout, or the extension limit passed), so
    /// the new owner may already be processing.
    HandOffLapsed,
    /// This worker released it.
    Released,
}

/// Errors of operations on a lease this worker holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeldLeaseError {
    /// This worker does not hold the lease (never did, lost it, or it is handing off): nothing
    /// was written. The fence that keeps a former owner from checkpointing.
    #[error("lease {key} is not held by this worker")]
    NotHeld {
        /// The lease key.
        key: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] LeaseError),
}

impl HeldLeaseError {
    /// Whether retrying after a backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

/// A lease's state as this worker sees it (the module doc draws the transitions). Outgoing is
/// not here: an outgoing lease is no longer held, it is [`Slot::Outgoing`] in the same map.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Held and ready to process.
    Ready,
    /// Owned after a graceful steal or an accepted offer; the previous owner may still be
    /// finishing. Not processed until it ends the hand-off or `deadline` passes.
    Incoming { from: String, deadline: Instant },
    /// Offered to `to` in a planned hand-off (stored with `leaseOwner` = `to`,
    /// `checkpointOwner` = this worker): still processed here until `to` accepts by moving the
    /// counter, and taken back at `deadline` if it has not.
    Offered { to: String, deadline: Instant },
    /// Lost, released or handed off: out of the map; tasks still holding the entry see this.
    Gone,
}

impl State {
    /// Whether this worker may process the lease in this state.
    fn processable(&self) -> bool {
        matches!(self, Self::Ready | Self::Offered { .. })
    }

    fn is_gone(&self) -> bool {
        *self == Self::Gone
    }
}

#[derive(Debug)]
struct Held {
    lease: Lease,
    /// Send time of the last successful write that proved ownership, plus the failover time.
    valid_until: Instant,
    state: State,
    token: LeaseToken,
    /// What readers see without waiting for a write in flight (shared with the map's slot).
    shown: Arc<Shown>,
    measured_since: Instant,
}

/// The part of a holding readers take without waiting for the writes in flight on it.
#[derive(Debug)]
struct Shown {
    /// `until` is `valid_until` while processable.
    belief: Mutex<Belief>,
    /// Bytes processed since `measured_since`, for the `throughputKBps` renewals write.
    load: std::sync::atomic::AtomicU64,
}

/// The published view of a held lease.
#[derive(Debug, Clone)]
struct Belief {
    until: Option<Instant>,
    lease: Lease,
}

impl Held {
    /// Publishes whether (and until when) this worker may process the lease.
    fn publish(&self) {
        *self.shown.belief.lock() = Belief {
            until: self.state.processable().then_some(self.valid_until),
            lease: self.lease.clone(),
        };
    }
}

type Entry = Arc<tokio::sync::Mutex<Held>>;

/// A lease this worker is handing off: while the batch in progress lasts, it renews the
/// thief's lease so the thief keeps waiting (see `max_hand_off_extension`).
#[derive(Debug, Clone)]
struct HandingOff {
    since: Instant,
    /// The new owner waits at least the hand-off timeout past the send time of this worker's
    /// last successful write to the lease; past this, it may have started.
    safe_until: Instant,
    /// The thief's lease as last seen, for the next conditional renewal; `None` once this
    /// worker stopped extending (limit reached, or the thief ended the hand-off).
    lease: Option<Lease>,
    /// A `finish_hand_off` call is in flight. Until it answers, this worker must not hold the
    /// lease again: the call, landing late, would end a later hand-off of it (found by the
    /// coordinator safety test: a delayed finish ended an offer this worker had made since).
    finishing: bool,
}

impl HandingOff {
    /// Whether anything of this worker's is left to do for the hand-off: extending it, a
    /// finish in flight, or the time before the new owner starts anyway.
    fn pending(&self, now: Instant) -> bool {
        self.lease.is_some() || self.finishing || now < self.safe_until
    }
}

/// One lease in this worker's map: held (Ready, Incoming, Offered — locked around its store
/// writes, each under a deadline) or Outgoing. A key absent from the map is not this worker's.
#[derive(Debug, Clone)]
enum Slot {
    Held { held: Entry, shown: Arc<Shown> },
    Outgoing(Box<HandingOff>),
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn LeaseStore>,
    /// Whether the store has inboxes: without them nothing is offered or posted (planned
    /// stops release leases), so no write is wasted on a call that cannot succeed.
    inboxes: bool,
    config: CoordinatorConfig,
    /// Every lease this worker holds or hands off, by key.
    leases: Mutex<BTreeMap<String, Slot>>,
    observed: tokio::sync::Mutex<view::Observed>,
    next_token: std::sync::atomic::AtomicU64,
    /// Listings decided so far (the jitter's seed).
    listings: std::sync::atomic::AtomicU64,
    events: mpsc::UnboundedSender<LeaseEvent>,
    /// Which leases the taker considers; `None` means all.
    filter: FilterSlot,
    metrics: crate::telemetry::LeaseMetrics,
    /// The fleet by the taker's last listing (`None` before the first one).
    fleet: Mutex<Option<Arc<Fleet>>>,
    /// Held leases in `leases` (the `CurrentLeases` gauge).
    held_count: std::sync::atomic::AtomicUsize,
    /// Listings failed in a row while this worker led.
    failed_listings: std::sync::atomic::AtomicU32,
    /// Until when this worker stays out of the lead (its listings kept failing as leader).
    stepped_down_until: Mutex<Option<Instant>>,
    /// Cancelled when this worker stops taking; a taker cycle checks it once it has the turn.
    taking: CancellationToken,
    /// Notified when the inbox asked this worker to list the table now (an `inbox::Entry::ListNow`).
    nudged: tokio::sync::Notify,
    /// Inbox entries read from a lease that moved to another worker, for the renewer to act on.
    late_offers: Mutex<Vec<String>>,
    /// The deputy this worker, as leader, last told of its role.
    told_deputy: Mutex<Option<String>>,
    /// Leases this worker took as leader beyond its share and has not passed on (an upper
    /// bound: the leader offers at most this many, and only while beyond its share).
    owed: std::sync::atomic::AtomicUsize,
}

/// The fleet as one listing showed it: who is alive, and who leads.
#[derive(Debug)]
struct Fleet {
    view: view::View,
    roles: roles::Roles,
}

#[derive(Default)]
struct FilterSlot(Mutex<Option<LeaseFilter>>);

impl std::fmt::Debug for FilterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.lock().is_some() {
            "Some(..)"
        } else {
            "None"
        })
    }
}

/// Decides which leases of the table a coordinator may take (multi-stream: the leases of the
/// streams it currently consumes).
pub type LeaseFilter = Arc<dyn Fn(&Lease) -> bool + Send + Sync>;

impl Shared {
    fn me(&self) -> &str {
        &self.config.worker_id
    }

    /// A seed for this worker's listing jitter: differs between workers and listings, and is
    /// the same in every run (a simulation's seed replays exactly).
    fn jitter_seed(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let listing = self
            .listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        BuildHasherDefault::<DefaultHasher>::default().hash_one((self.me(), listing))
    }

    /// Stamps `lease` for a write sent now that moves its counter by one. Every counter-moving
    /// write of the coordinator stamps afresh: a stamp left from a write that never landed would
    /// name the counter this one makes current, with a time long past.
    fn stamp_next(&self, lease: &mut Lease) {
        let stamp = crate::lease::RenewalStamp::new(lease.counter + 1, clock::unix_millis_now());
        lease.renewed_at = Some(if self.stepped_down() {
            stamp.stepped_down()
        } else {
            stamp
        });
    }

    /// Whether this worker stays out of the lead now (see [`Shared::listing_failed`]).
    fn stepped_down(&self) -> bool {
        self.stepped_down_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Counts a failed listing: a leader that fails
    /// [`CoordinatorConfig::leader_failed_listings`] in a row steps down for
    /// [`CoordinatorConfig::step_down_for`]. Its renewals say so from then on, its deputy sees
    /// it at its next check of the leader's lease and leads.
    fn listing_failed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let leading = self
            .fleet
            .lock()
            .as_ref()
            .is_some_and(|f| f.roles.leads(self.me()));
        if !leading || self.stepped_down() {
            self.failed_listings.store(0, Relaxed);
            return;
        }
        let failed = self.failed_listings.fetch_add(1, Relaxed) + 1;
        if failed >= self.config.leader_failed_listings() {
            self.failed_listings.store(0, Relaxed);
            let until = Instant::now() + self.config.step_down_for();
            *self.stepped_down_until.lock() = Some(until);
            self.metrics.stepped_down.increment(1);
            warn!(worker_id = %self.me(), failed, step_down_for = ?self.config.step_down_for(), "leader stepping down: its listings keep failing");
        }
    }

    /// Counts a successful listing.
    fn listing_succeeded(&self) {
        self.failed_listings
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The clocks and settings liveness and expiry are judged by, now.
    fn judge(&self) -> view::Judge {
        view::Judge {
            now: Instant::now(),
            now_millis: clock::unix_millis_now(),
            failover: self.config.failover_time,
            skew: self.config.clock_skew_margin,
            window: self.config.liveness_window(),
        }
    }

    /// The fleet by a listing made now, for a one-off decision (a planned stop, a release):
    /// liveness by stamps alone.
    async fn fresh_view(&self) -> Result<view::View, LeaseError> {
        let listing = self.store.list_eventually().await?;
        Ok(view::View::of(
            self.me(),
            &listing.leases,
            &view::Observed::new(),
            &self.judge(),
        ))
    }

    fn emit(&self, event: LeaseEvent) {
        // A closed receiver means nobody listens any more (shutting down); events are advisory.
        let _ = self.events.send(event);
    }

    /// The leases this worker holds (Ready, Incoming, Offered).
    fn entries(&self) -> Vec<(String, Entry)> {
        self.leases
            .lock()
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Held { held, .. } => Some((k.clone(), held.clone())),
                Slot::Outgoing(_) => None,
            })
            .collect()
    }

    fn entry(&self, key: &str) -> Option<Entry> {
        match self.leases.lock().get(key) {
            Some(Slot::Held { held, .. }) => Some(held.clone()),
            _ => None,
        }
    }

    fn shown(&self, key: &str) -> Option<Arc<Shown>> {
        match self.leases.lock().get(key) {
            Some(Slot::Held { shown, .. }) => Some(shown.clone()),
            _ => None,
        }
    }

    /// Whether `key` is in this worker's map at all: held, or outgoing (then see
    /// [`HandingOff::finishing`]: it must not take or accept the lease meanwhile).
    fn knows(&self, key: &str) -> bool {
        self.leases.lock().contains_key(key)
    }

    /// Whether this worker is handing `key` off.
    fn is_handing_off(&self, key: &str) -> bool {
        matches!(self.leases.lock().get(key), Some(Slot::Outgoing(_)))
    }

    /// The keys this worker is handing off.
    fn outgoing(&self) -> std::collections::BTreeSet<String> {
        self.leases
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Outgoing(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Runs `f` on the hand-off of `key`, if this worker is handing it off.
    fn with_outgoing<R>(&self, key: &str, f: impl FnOnce(&mut HandingOff) -> R) -> Option<R> {
        match self.leases.lock().get_mut(key) {
            Some(Slot::Outgoing(h)) => Some(f(h)),
            _ => None,
        }
    }

    /// Drops the hand-offs with nothing of this worker's left to do (no longer extended, no
    /// finish in flight, past the time the new owner starts anyway); returns the keys of those
    /// still extended.
    fn settle_outgoing(&self, now: Instant) -> Vec<String> {
        let mut map = self.leases.lock();
        map.retain(|_, s| !matches!(s, Slot::Outgoing(h) if !h.pending(now)));
        map.iter()
            .filter(|(_, s)| matches!(s, Slot::Outgoing(h) if h.lease.is_some()))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Outgoing → out of the map: the hand-off is over for this worker.
    fn end_outgoing(&self, key: &str) {
        let mut map = self.leases.lock();
        if matches!(map.get(key), Some(Slot::Outgoing(_))) {
            map.remove(key);
        }
    }

    /// Whether this worker may process `key` now, without waiting for writes in flight.
    fn believes(&self, key: &str) -> bool {
        let belief = self.shown(key).and_then(|s| s.belief.lock().until);
        belief.is_some_and(|until| Instant::now() < until)
    }

    /// Counts a held lease in or out (`replaced`/`removed`: what the map held under its key)
    /// and reports the count; called under the map's lock, so the count matches the map
    /// without scanning it on every take.
    fn count_held(&self, added: bool, previous: Option<&Slot>) {
        use std::sync::atomic::Ordering::Relaxed;
        let was_held = matches!(previous, Some(Slot::Held { .. }));
        let held = match (added, was_held) {
            (true, false) => self.held_count.fetch_add(1, Relaxed) + 1,
            (false, true) => self.held_count.fetch_sub(1, Relaxed) - 1,
            _ => self.held_count.load(Relaxed),
        };
        self.metrics.current.set(held as f64);
    }

    /// → Ready (a take) or → Incoming (a steal, an accepted offer): starts holding `lease`,
    /// written at `sent`.
    fn insert(&self, lease: Lease, sent: Instant, state: State) {
        let key = lease.key.clone();
        let ready = state == State::Ready;
        let shown = Arc::new(Shown {
            belief: Mutex::new(Belief {
                until: None,
                lease: lease.clone(),
            }),
            load: std::sync::atomic::AtomicU64::new(0),
        });
        let token = LeaseToken(
            self.next_token
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let held = Held {
            lease: lease.clone(),
            valid_until: sent + self.config.failover_time,
            state,
            token,
            shown: shown.clone(),
            measured_since: sent,
        };
        held.publish();
        let slot = Slot::Held {
            held: Arc::new(tokio::sync::Mutex::new(held)),
            shown,
        };
        {
            let mut map = self.leases.lock();
            debug_assert!(
                !matches!(map.get(&key), Some(Slot::Outgoing(_))),
                "took a lease this worker is handing off"
            );
            let previous = map.insert(key.clone(), slot);
            self.count_held(true, previous.as_ref());
        }
        if ready {
            info!(worker_id = %self.me(), lease_key = %key, "lease gained");
            self.emit(LeaseEvent::Gained { lease, token });
        } else {
            info!(worker_id = %self.me(), lease_key = %key, "lease stolen gracefully, waiting for the previous owner");
        }
    }

    /// → Gone, or → Outgoing with `outgoing`: this worker stops processing the lease at once.
    fn forget(&self, key: &str, held: &mut Held, outgoing: Option<HandingOff>) {
        held.state = State::Gone;
        held.publish();
        let mut map = self.leases.lock();
        let previous = match outgoing {
            Some(h) => map.insert(key.to_string(), Slot::Outgoing(Box::new(h))),
            None => map.remove(key),
        };
        self.count_held(false, previous.as_ref());
    }

    /// → Gone, reported.
    fn lose(&self, key: &str, held: &mut Held, reason: LostReason) {
        self.forget(key, held, None);
        warn!(worker_id = %self.me(), lease_key = %key, ?reason, "lease lost");
        if reason != LostReason::Released {
            self.metrics.lost.increment(1);
        }
        self.emit(LeaseEvent::Lost {
            key: key.to_string(),
            reason,
        });
    }

    /// A conditional write failed: the stored lease moved on. Adopt it if this worker still owns
    /// it (our view was stale, e.g. a write that timed out after landing), report a hand-off if
    /// another worker stole it gracefully, else report it lost. Returns whether it was adopted.
    async fn reconcile(&self, key: &str, held: &mut Held) -> bool {
        let asked = Instant::now();
        let read = self.store.get(key).await;
        if let Ok(Some(stored)) = &read
            && !stored.is_owned_by(self.me())
        {
            // Offers posted to this lease's inbox after this worker last renewed it: it will
            // not renew it again, so it reads them here (the giver waits for them).
            let late: Vec<String> = stored
                .inbox
                .iter()
                .filter(|e| !held.lease.inbox.contains(e))
                .cloned()
                .collect();
            if !late.is_empty() {
                debug!(worker_id = %self.me(), lease_key = %key, ?late, "offers in the inbox of a lease gone elsewhere");
                self.late_offers.lock().extend(late);
            }
        }
        match read {
            Ok(Some(stored))
                if stored.is_owned_by(self.me()) && stored.checkpoint_owner.is_none() =>
            {
                held.lease = stored;
                true
            }
            Ok(Some(stored))
                if stored.is_owned_by(self.me())
                    && matches!(&held.state, State::Incoming { from, .. }
                        if stored.checkpoint_owner.as_ref() == Some(from)) =>
            {
                // The victim renewed our lease: still inside its batch. Wait the hand-off
                // timeout from now; our next renewal goes from its counter.
                if let State::Incoming { deadline, .. } = &mut held.state {
                    *deadline =
                        (*deadline).max(Instant::now() + self.config.graceful_handoff_timeout());
                }
                debug!(worker_id = %self.me(), lease_key = %key, "previous owner still finishing a batch; hand-off extended");
                held.lease = stored;
                // Keeps the renewer from counting these conflicts as failed renewals. An
                // incoming lease is never published as processable on this: a successful
                // renewal sets it again before the lease turns ready.
                held.valid_until = asked + self.config.failover_time;
                false
            }
            Ok(Some(stored)) if stored.checkpoint_owner.as_deref() == Some(self.me()) => {
                let last_write = held.valid_until - self.config.failover_time;
                let outgoing = HandingOff {
                    since: Instant::now(),
                    safe_until: last_write + self.config.graceful_handoff_timeout(),
                    lease: Some(stored.clone()),
                    finishing: false,
                };
                self.forget(key, held, Some(outgoing));
                info!(worker_id = %self.me(), lease_key = %key, new_owner = ?stored.owner, "lease handing off");
                self.metrics.handed_off.increment(1);
                self.emit(LeaseEvent::HandingOff { lease: stored });
                false
            }
            Ok(Some(_)) => {
                self.lose(key, held, LostReason::Taken);
                false
            }
            Ok(None) => {
                self.lose(key, held, LostReason::Deleted);
                false
            }
            Err(e) => {
                warn!(worker_id = %self.me(), lease_key = %key, error = %crate::error::Report(&e), "could not re-read a lease after a failed condition");
                self.lose(key, held, LostReason::Taken);
                false
            }
        }
    }
}

/// One worker's lease coordinator. Dropping it stops its tasks without releasing anything, as a
/// crash would; call [`LeaseCoordinator::shutdown`] to hand leases off.
#[derive(Debug)]
pub struct LeaseCoordinator {
    shared: Arc<Shared>,
    renewer_cancel: CancellationToken,
    taker: Mutex<Option<JoinHandle<()>>>,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

impl LeaseCoordinator {
    /// Validates `config` and starts renewing and taking on the current tokio runtime. Events
    /// arrive on the returned receiver.
    pub fn start(
        store: Arc<dyn LeaseStore>,
        config: CoordinatorConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LeaseEvent>), CoordinatorConfigError> {
        Self::start_filtered(store, config, None)
    }

    /// [`start`](Self::start) with a lease filter in place before the first taker cycle.
    pub fn start_filtered(
        store: Arc<dyn LeaseStore>,
        config: CoordinatorConfig,
        filter: Option<LeaseFilter>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LeaseEvent>), CoordinatorConfigError> {
        config.validate()?;
        let (events, receiver) = mpsc::unbounded_channel();
        let metrics = crate::telemetry::LeaseMetrics::new(&config.worker_id);
        // Every store call of the coordinator answers within its deadline and is measured.
        let store: Arc<dyn LeaseStore> = Arc::new(
            super::DeadlineStore::new(store, config.store_call_timeout(), config.list_timeout())
                .with_metrics(metrics.clone()),
        );
        let inboxes = store.capabilities().inboxes;
        if !inboxes {
            info!(worker_id = %config.worker_id, "the lease store has no inboxes: stopping workers release their leases instead of offering them");
        }
        let shared = Arc::new(Shared {
            store,
            inboxes,
            config,
            leases: Mutex::new(BTreeMap::new()),
            observed: tokio::sync::Mutex::new(view::Observed::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
            listings: std::sync::atomic::AtomicU64::new(0),
            events,
            filter: FilterSlot(Mutex::new(filter)),
            metrics,
            fleet: Mutex::new(None),
            nudged: tokio::sync::Notify::new(),
            told_deputy: Mutex::new(None),
            late_offers: Mutex::new(Vec::new()),
            owed: std::sync::atomic::AtomicUsize::new(0),
            taking: CancellationToken::new(),
            held_count: std::sync::atomic::AtomicUsize::new(0),
            failed_listings: std::sync::atomic::AtomicU32::new(0),
            stepped_down_until: Mutex::new(None),
        });
        let renewer_cancel = CancellationToken::new();
        let renewer = tokio::spawn(renewer::run(shared.clone(), renewer_cancel.clone()));
        let taker = tokio::spawn(taker::run(shared.clone()));
        Ok((
            Self {
                shared,
                renewer_cancel,
                taker: Mutex::new(Some(taker)),
                renewer: Mutex::new(Some(renewer)),
            },
            receiver,
        ))
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        self.shared.me()
    }

    /// The configuration in use.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.shared.config
    }

    /// The store as the coordinator calls it (deadlines and metrics applied), for the other
    /// lease-table calls of its worker.
    pub(crate) fn store(&self) -> Arc<dyn LeaseStore> {
        self.shared.store.clone()
    }

    /// Leases this worker holds and may process now. Never waits for a store call in flight.
    pub async fn held_leases(&self) -> Vec<Lease> {
        let now = Instant::now();
        let shown: Vec<Arc<Shown>> = self
            .shared
            .leases
            .lock()
            .values()
            .filter_map(|s| match s {
                Slot::Held { shown, .. } => Some(shown.clone()),
                Slot::Outgoing(_) => None,
            })
            .collect();
        let mut out: Vec<Lease> = shown
            .iter()
            .filter_map(|s| {
                let b = s.belief.lock();
                b.until.is_some_and(|u| now < u).then(|| b.lease.clone())
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Whether this worker should run periodic shard sync: it is the fleet's leader by its last
    /// listing — the smallest worker id among this worker and the owners seen renewing leases
    /// with this framework's stamps — or it has not listed yet. The leader also lists the table
    /// often and takes what is free (see the taker). Every worker derives the answer from the
    /// listings it makes anyway (no extra reads); if the leader dies, its deputy (the next id)
    /// sees its lease expire and leads from then on (one failover time). Two workers may both
    /// sync while their listings disagree, which is harmless: shard sync only makes
    /// conditional writes. A worker that stopped taking (it is leaving) does not lead.
    pub fn is_sync_leader(&self) -> bool {
        // A worker that stopped taking is leaving: its last listing no longer speaks for it.
        !self.shared.taking.is_cancelled()
            && !self.shared.stepped_down()
            && self
                .shared
                .fleet
                .lock()
                .as_ref()
                .is_none_or(|f| f.roles.leads(self.shared.me()))
    }

    /// Counts `bytes` of record data processed on `key`: the next renewal writes the lease's
    /// `throughputKBps` from it (as the KCL 3.x does), which balancing weighs. Does not await
    /// (one short lock and an atomic add); a key this worker does not hold is ignored.
    pub fn record_processed_bytes(&self, key: &str, bytes: u64) {
        if let Some(shown) = self.shared.shown(key) {
            shown
                .load
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether this worker holds `key` and may process it right now. Never waits.
    pub fn is_held(&self, key: &str) -> bool {
        self.shared.believes(key)
    }

    #[cfg(test)]
    async fn debug_state(&self, key: &str) -> String {
        match self.shared.entry(key) {
            Some(e) => format!("{:?} now={:?}", *e.lock().await, Instant::now()),
            None => "none".into(),
        }
    }

    /// Runs one taker cycle now, besides the periodic ones: lists the table, takes and steals per
    /// the balancing plan. For tests and tools that step a fleet deterministically.
    pub async fn take_now(&self) {
        taker::cycle(&self.shared).await;
    }

    /// The token of this worker's current holding of `key`, if it holds it.
    pub async fn token(&self, key: &str) -> Option<LeaseToken> {
        let entry = self.shared.entry(key)?;
        let h = entry.lock().await;
        (!h.state.is_gone()).then_some(h.token)
    }

    /// Writes a checkpoint of a held lease, fenced: unless this worker holds the lease under
    /// `token`, it gets [`HeldLeaseError::NotHeld`] and writes nothing.
    pub async fn checkpoint(
        &self,
        key: &str,
        token: LeaseToken,
        update: CheckpointUpdate,
    ) -> Result<Lease, HeldLeaseError> {
        let not_held = || HeldLeaseError::NotHeld {
            key: key.to_string(),
        };
        let entry = self.shared.entry(key).ok_or_else(not_held)?;
        let mut h = entry.lock().await;
        for _attempt in 0..2 {
            if h.token != token || !h.state.processable() || Instant::now() >= h.valid_until {
                return Err(not_held());
            }
            self.shared.stamp_next(&mut h.lease);
            match self.shared.store.checkpoint(&h.lease, update.clone()).await {
                Ok(lease) => {
                    let ended = lease.is_shard_end() && !h.lease.is_shard_end();
                    h.lease = lease.clone();
                    h.publish();
                    drop(h);
                    if ended {
                        self.take_children(&lease).await;
                    }
                    return Ok(lease);
                }
                Err(e) if e.is_lost() => {
                    if !self.shared.reconcile(key, &mut h).await {
                        return Err(not_held());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(not_held())
    }

    /// Takes the free leases of an ended shard's children: a child starts where its parent
    /// ended, on the parent's worker (KCL #78), at once rather than at this worker's next
    /// listing — which, on a worker that is not the fleet's leader, may be many taker intervals
    /// away. A GetItem per child; a child taken meanwhile by another worker is left alone.
    async fn take_children(&self, parent: &Lease) {
        for child in &parent.child_shard_ids {
            let key = parent.key_in_stream(child);
            if self.shared.knows(&key) {
                continue;
            }
            match self.shared.store.get(&key).await {
                Ok(Some(lease))
                    if lease.owner.is_none()
                        && self
                            .shared
                            .filter
                            .0
                            .lock()
                            .as_ref()
                            .is_none_or(|f| f(&lease)) =>
                {
                    taker::take(&self.shared, &lease).await;
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(worker_id = %self.shared.me(), lease_key = %key, error = %crate::error::Report(&e), "could not read a child lease; the taker will find it")
                }
            }
        }
    }

    /// Ends a hand-off this worker is the previous owner of, with its last checkpoint.
    pub async fn finish_hand_off(
        &self,
        key: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        // The batch is over whatever this call answers: stop keeping the thief waiting, so a
        // failed write costs it one hand-off timeout, not the extension limit.
        self.shared.with_outgoing(key, |h| {
            h.lease = None;
            h.finishing = true;
        });
        let result = self
            .shared
            .store
            .finish_hand_off(key, self.shared.me(), checkpoint)
            .await;
        if !matches!(&result, Err(e) if e.is_retryable()) {
            self.shared.end_outgoing(key);
        } else {
            // Kept for a retry; the renewer drops it once the new owner starts anyway.
            self.shared.with_outgoing(key, |h| h.finishing = false);
        }
        result
    }

    /// Whether this worker is handing `key` off to a thief (a checkpoint now must go through
    /// [`finish_hand_off`](Self::finish_hand_off)).
    pub fn is_handing_off(&self, key: &str) -> bool {
        self.shared.is_handing_off(key)
    }

    /// Releases a held lease so another worker takes it at its next taker cycle. With a
    /// `token`, only that holding is released (a newer holding of the same lease is left alone).
    pub async fn release(
        &self,
        key: &str,
        token: Option<LeaseToken>,
    ) -> Result<(), HeldLeaseError> {
        let entry = self
            .shared
            .entry(key)
            .ok_or_else(|| HeldLeaseError::NotHeld {
                key: key.to_string(),
            })?;
        let mut h = entry.lock().await;
        if h.state.is_gone() || token.is_some_and(|t| t != h.token) {
            return Err(HeldLeaseError::NotHeld {
                key: key.to_string(),
            });
        }
        let state = h.state.clone();
        // Stop believing first: from here on this worker must not process the shard.
        self.shared.forget(key, &mut h, None);
        if let State::Incoming { from, .. } = &state {
            // Evicting would clear `checkpointOwner` while the previous owner may still be
            // processing; another worker could then take the lease at once. Leave it to expire.
            info!(worker_id = %self.shared.me(), lease_key = %key, previous_owner = %from, "incoming lease left to expire");
            return Ok(());
        }
        if let State::Offered { to, .. } = &state {
            // Stored as `to`'s already: it accepts it, or it expires.
            info!(worker_id = %self.shared.me(), lease_key = %key, receiver = %to, "offered lease left to its receiver");
            return Ok(());
        }
        let result = self.shared.store.evict(&h.lease).await;
        info!(worker_id = %self.shared.me(), lease_key = %key, ok = result.is_ok(), "lease released");
        self.shared.emit(LeaseEvent::Lost {
            key: key.to_string(),
            reason: LostReason::Released,
        });
        match result {
            Ok(_) => Ok(()),
            // Someone else moved it already: it is released as far as this worker is concerned.
            Err(e) if e.is_lost() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Planned hand-off, the first step of a graceful shutdown: lists the table once and
    /// offers every held lease with work to a worker that renewed within a renew interval and
    /// a second by its stamps (the least loaded first), and tells each
    /// receiver through the inbox of a lease it holds. This worker goes on processing an
    /// offered lease until its receiver accepts — then it gets [`LeaseEvent::HandingOff`] and
    /// checkpoints through [`finish_hand_off`](Self::finish_hand_off), after which the receiver
    /// starts at once — or until the offer times out (a renew interval and a second), when it
    /// takes the lease back and gets [`LeaseEvent::OfferWithdrawn`]. So shards pass to live
    /// workers with a gap of a few store round trips instead of waiting for their next listing.
    /// Returns the keys offered, with those already on offer (the fleet's leader passes on
    /// leases it took beyond its share the same way); call [`stop_taking`](Self::stop_taking)
    /// first. Leases that
    /// could not be offered (no live peer, a failed listing, a store without inboxes, a failed
    /// write) stay held.
    pub async fn offer_leases(&self) -> Vec<String> {
        offer::offer_all(&self.shared).await
    }

    /// Whether an offer of [`offer_leases`](Self::offer_leases) is still waiting for its
    /// receiver (not yet handed off, taken back or lost).
    pub fn offers_pending(&self) -> bool {
        self.shared.entries().iter().any(|(_, entry)| {
            entry
                .try_lock()
                .map_or(true, |h| matches!(h.state, State::Offered { .. }))
        })
    }

    /// Restricts the taker to the leases `filter` accepts (`None`: every lease). Leases it
    /// rejects are neither taken nor counted when balancing; held ones stay held until released.
    pub fn set_lease_filter(&self, filter: Option<LeaseFilter>) {
        *self.shared.filter.0.lock() = filter;
    }

    /// Lists the table now rather than at the next taker cycle (new leases to take).
    pub(crate) fn list_now(&self) {
        self.shared.nudged.notify_one();
    }

    /// Workers seen alive (renewing a lease, of any framework; this one included) when the
    /// taker last listed the table (at least 1).
    pub fn fleet_size(&self) -> usize {
        self.shared
            .fleet
            .lock()
            .as_ref()
            .map_or(1, |f| f.view.workers)
    }

    /// Stops taking and stealing leases; held leases keep being renewed.
    pub fn stop_taking(&self) {
        self.shared.taking.cancel();
    }

    /// Graceful shutdown: stops taking, releases every lease (so others take them within one
    /// taker cycle instead of after expiry), then stops renewing. Checkpoint before calling.
    ///
    /// Leaves nothing owned in the table when the store answers: a take in flight lands first
    /// and is released too, and a graceful steal still waiting for its previous owner is waited
    /// for (at most the hand-off timeout) and then released with that owner's final checkpoint.
    pub async fn shutdown(&self) {
        let config = &self.shared.config;
        // Renewals keep an incoming lease until its hand-off deadline; the failover time on top
        // bounds a store that renews but keeps failing to end the hand-off.
        let by = Instant::now() + config.graceful_handoff_timeout() + config.failover_time;
        self.shutdown_by(by).await;
    }

    /// [`shutdown`](Self::shutdown), waiting for incoming graceful steals and a taker cycle in
    /// flight only until `deadline`; a steal still waiting then is left to expire (releasing it
    /// would clear `checkpointOwner` while its previous owner may still be processing), and a
    /// cycle still running is aborted (a take of it that lands expires like a crash's lease).
    /// Returns within the store call timeout after `deadline` (the releases, in parallel).
    pub async fn shutdown_by(&self, deadline: Instant) {
        self.stop_taking();
        let taker = self.taker.lock().take();
        if let Some(mut taker) = taker
            && tokio::time::timeout_at(deadline, &mut taker).await.is_err()
        {
            warn!(worker_id = %self.shared.me(), "taker cycle still running at the shutdown deadline; aborted");
            taker.abort();
        }
        // A `take_now` cycle in flight; later ones see taking stopped and do nothing.
        let _ = tokio::time::timeout_at(deadline, self.shared.observed.lock()).await;
        // Bounded as a whole: its reads of entries wait for calls in flight on them.
        let _ = tokio::time::timeout_at(deadline, self.settle_incoming(deadline)).await;
        let keys: Vec<String> = self.shared.entries().into_iter().map(|(k, _)| k).collect();
        let releases = keys.iter().map(|k| self.release(k, None));
        // A lease whose entry is busy with a slow call (a renewal, an offer's poll) waits for
        // it, so the releases as a whole are bounded too.
        let by = deadline.max(Instant::now()) + self.shared.config.store_call_timeout();
        match tokio::time::timeout_at(by, futures::future::join_all(releases)).await {
            Ok(results) => {
                for (key, result) in keys.iter().zip(results) {
                    if let Err(e) = result {
                        warn!(worker_id = %self.shared.me(), lease_key = %key, error = %crate::error::Report(&e), "lease not released; it will expire");
                    }
                }
            }
            Err(_) => {
                warn!(worker_id = %self.shared.me(), "releases still waiting at the shutdown deadline; what is left will expire");
            }
        }
        if !keys.is_empty() {
            // Released leases wait for a listing, and most workers list rarely: ask the ones
            // that list first to list now (within what is left of the releases' bound).
            let _ = tokio::time::timeout_at(by, offer::nudge_leaders(&self.shared)).await;
        }
        self.renewer_cancel.cancel();
        let renewer = self.renewer.lock().take();
        if let Some(renewer) = renewer {
            let _ = renewer.await;
        }
    }

    /// Waits until no graceful steal of this worker is still waiting for its previous owner:
    /// each becomes ready (the previous owner checkpointed, or the hand-off timed out) or is
    /// lost. Releasing one earlier would clear `checkpointOwner` while the previous owner may
    /// still be processing, so it would have to be left to expire instead.
    async fn settle_incoming(&self, give_up: Instant) {
        let poll = self.shared.config.hand_off_poll();
        loop {
            let mut incoming = Vec::new();
            for (key, entry) in self.shared.entries() {
                let h = entry.lock().await;
                if matches!(h.state, State::Incoming { .. }) {
                    drop(h);
                    incoming.push((key, entry));
                }
            }
            if incoming.is_empty() || Instant::now() >= give_up {
                return;
            }
            tokio::time::sleep(poll).await;
            let checks = incoming
                .into_iter()
                .map(|(key, entry)| renewer::renew_one(&self.shared, key, entry));
            // A check is a renewal and, on a conflict (the victim extending), a re-read: bound
            // them by `give_up`. One cut short leaves its lease incoming, so it is left to
            // expire rather than released.
            let _ = tokio::time::timeout_at(give_up, futures::future::join_all(checks)).await;
        }
    }
}

impl Drop for LeaseCoordinator {
    fn drop(&mut self) {
        self.shared.taking.cancel();
        self.renewer_cancel.cancel();
        for task in [self.taker.lock().take(), self.renewer.lock().take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Coordinator settings, named after the KCL's, validated when the coordinator starts.

use std::time::Duration;

/// Settings of a [`super::LeaseCoordinator`]. Defaults follow the KCL where its users rely on
/// them, and depart from it where its defaults make failover and rebalancing slow (each such
/// setting says so).
///
/// It stores what was set and computes the rest: the renew and taker intervals, the hand-off
/// timeout and the call deadlines follow the failover time unless set themselves, so no
/// combination of settings can disagree with itself. Build it with [`CoordinatorConfig::new`]
/// and the `with_*` setters (the public fields may also be assigned).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// This worker's id, written as `leaseOwner`. Unique in the fleet.
    pub worker_id: String,
    /// `failoverTimeMillis`: a lease whose counter has not changed for this long, on the
    /// observer's own clock, is expired and may be taken. KCL default: 10 s.
    pub failover_time: Duration,
    /// `maxLeasesForWorker`: most leases with work this worker takes by balancing. KCL default:
    /// unlimited. Leases without work (at SHARD_END, or children waiting on a parent) are not
    /// counted, and a child of a parent this worker holds is taken even at the limit (it starts
    /// where its parent ended; balancing moves it on if another worker has room).
    pub max_leases_for_worker: usize,
    /// `maxLeasesToStealAtOneTime`: most leases stolen per taker cycle. KCL default: 1, which
    /// makes a fleet converge one lease per 20 s; here unlimited — the balancing plan bounds
    /// steals to this worker's deficit. Set 1 for the KCL's pace.
    pub max_leases_to_steal_at_one_time: usize,
    /// Steal with a graceful hand-off (the victim checkpoints before the thief starts) instead
    /// of an abrupt take. The KCL 2.x steals abruptly.
    pub steal_gracefully: bool,
    /// How long the victim of a graceful steal, still inside a batch it started before the
    /// steal, may keep the thief waiting past the hand-off timeout: while it is, it renews the
    /// thief's lease each renew interval (a write conditional on the thief's counter), and the
    /// thief waits the hand-off timeout after the last such renewal. So a slow batch ends
    /// before the thief starts and is not processed twice. Past this limit the victim stops
    /// renewing, warns, and the thief starts after one more hand-off timeout (the batch then
    /// may be processed twice). Zero: no extension. Default: 5 minutes.
    pub max_hand_off_extension: Duration,
    /// How far apart the wall clocks of two workers may be. Renewals stamp the lease with the
    /// owner's wall clock (`kclRsRenewedAt`), and another worker takes a lease whose stamp is
    /// still current once `failover_time + clock_skew_margin` has passed since the stamp on its
    /// own clock — from one listing, instead of watching the counter for a whole failover time
    /// (which costs up to a taker interval more). Never later than the counter rule. Clocks
    /// further apart than this can let a lease be taken before its owner's belief ends: the
    /// owner's checkpoints stay fenced, so at most its batch in progress is processed twice.
    /// Default: 250 ms (NTP-synchronised hosts agree within milliseconds; AWS hosts on the
    /// Amazon Time Sync Service within a millisecond).
    pub clock_skew_margin: Duration,
    /// Set explicitly, else derived from the failover time (see the methods of the same name).
    renew_interval: Option<Duration>,
    taker_interval: Option<Duration>,
    graceful_handoff_timeout: Option<Duration>,
    store_call_timeout: Option<Duration>,
    list_timeout: Option<Duration>,
}

impl CoordinatorConfig {
    /// The defaults for a worker.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            failover_time: Duration::from_secs(10),
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: usize::MAX,
            steal_gracefully: true,
            max_hand_off_extension: Duration::from_secs(300),
            clock_skew_margin: Duration::from_millis(250),
            renew_interval: None,
            taker_interval: None,
            graceful_handoff_timeout: None,
            store_call_timeout: None,
            list_timeout: None,
        }
    }

    /// Sets the failover time; the settings derived from it follow unless set themselves.
    pub fn with_failover_time(mut self, failover: Duration) -> Self {
        self.failover_time = failover;
        self
    }

    /// Sets how often held leases are renewed (see [`renew_interval`](Self::renew_interval)).
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// Sets the taker interval (see [`taker_interval`](Self::taker_interval)).
    pub fn with_taker_interval(mut self, interval: Duration) -> Self {
        self.taker_interval = Some(interval);
        self
    }

    /// Sets the graceful hand-off timeout (see
    /// [`graceful_handoff_timeout`](Self::graceful_handoff_timeout)).
    pub fn with_graceful_handoff_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_handoff_timeout = Some(timeout);
        self
    }

    /// Sets the deadline of single-lease store calls (see
    /// [`store_call_timeout`](Self::store_call_timeout)).
    pub fn with_store_call_timeout(mut self, timeout: Duration) -> Self {
        self.store_call_timeout = Some(timeout);
        self
    }

    /// Sets the deadline of a listing (see [`list_timeout`](Self::list_timeout)).
    pub fn with_list_timeout(mut self, timeout: Duration) -> Self {
        self.list_timeout = Some(timeout);
        self
    }

    /// Sets `maxLeasesForWorker`.
    pub fn with_max_leases_for_worker(mut self, max: usize) -> Self {
        self.max_leases_for_worker = max;
        self
    }

    /// Sets `maxLeasesToStealAtOneTime`.
    pub fn with_max_leases_to_steal_at_one_time(mut self, max: usize) -> Self {
        self.max_leases_to_steal_at_one_time = max;
        self
    }

    /// Sets whether steals are graceful hand-offs.
    pub fn with_steal_gracefully(mut self, gracefully: bool) -> Self {
        self.steal_gracefully = gracefully;
        self
    }

    /// Sets the hand-off extension limit.
    pub fn with_max_hand_off_extension(mut self, limit: Duration) -> Self {
        self.max_hand_off_extension = limit;
        self
    }

    /// Sets the clock-skew margin.
    pub fn with_clock_skew_margin(mut self, margin: Duration) -> Self {
        self.clock_skew_margin = margin;
        self
    }

    /// How often held leases are renewed. KCL: failover / 3 − 25 ms (3,308 ms by default; at
    /// least 1 ms).
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
            .unwrap_or_else(|| kcl_renew_interval(self.failover_time))
    }

    /// The longest time between two listings of the table by the fleet's leader (to take and
    /// balance leases). KCL 2.x: (failover + 25 ms) × 2 ≈ 20 s; by default here the failover
    /// time. The leader also lists at the earliest expiry a listing showed, so a crashed
    /// worker's leases move one failover time (and `clock_skew_margin`) after its last renewal.
    /// Other workers list this often only while they have leases to take or steal, and
    /// otherwise once per this interval times the number of other workers, so the fleet's
    /// reads do not grow with its size.
    pub fn taker_interval(&self) -> Duration {
        self.taker_interval.unwrap_or(self.failover_time)
    }

    /// How long a thief waits for the victim of a graceful steal to finish before starting
    /// anyway. At least the failover time, so the victim's belief in the lease has expired by
    /// then. By default the failover time; KCL 3.x: 30 s.
    pub fn graceful_handoff_timeout(&self) -> Duration {
        self.graceful_handoff_timeout.unwrap_or(self.failover_time)
    }

    /// Deadline of each single-lease store call (renew, take, checkpoint, ...). A call still
    /// unanswered then counts as failed and is retried, so one hung call costs at most the
    /// lease it concerns. By default the renew interval; below the failover time.
    pub fn store_call_timeout(&self) -> Duration {
        self.store_call_timeout
            .unwrap_or_else(|| self.renew_interval())
    }

    /// Deadline of a listing of the whole table (paged). By default the failover time.
    pub fn list_timeout(&self) -> Duration {
        self.list_timeout.unwrap_or(self.failover_time)
    }

    /// How recently a lease's owner must have renewed it (by its stamp, or a counter move seen
    /// by a listing) for the owner to count as alive: one renew interval and a second for the
    /// write's round trip and a listing's staleness, within the failover time.
    pub fn liveness_window(&self) -> Duration {
        (self.renew_interval() + Duration::from_secs(1)).min(self.failover_time)
    }

    /// How long a receiver has to accept an offered lease: it reads its inbox at its next
    /// renewal, so a renew interval and a second, within half the failover time.
    pub fn offer_timeout(&self) -> Duration {
        (self.renew_interval() + Duration::from_secs(1)).min(self.failover_time / 2)
    }

    /// When the taker looks again at owners a listing showed for the first time without a
    /// fresh stamp: after one renewal and half a renew interval for its round trip.
    pub fn relist_after_first_sighting(&self) -> Duration {
        let renew = self.renew_interval();
        renew.saturating_add(renew / 2)
    }

    /// The shortest time between two listings made for expiries: a dead worker's leases
    /// expire one after another over a renew interval, and one listing per batch takes them.
    pub fn expiry_batch(&self) -> Duration {
        Duration::from_millis(250)
    }

    /// How often a lease in a hand-off is polled (the receiver waiting for the giver, the
    /// giver waiting for an acceptance).
    pub fn hand_off_poll(&self) -> Duration {
        self.renew_interval().min(Duration::from_millis(100))
    }

    /// How many of the smallest live ids a worker that released leases asks to list: enough
    /// that one of them outlives any few stops at once, few enough to cost next to nothing.
    pub fn nudged_on_release(&self) -> usize {
        8
    }

    /// How many listings in a row a leader may fail before it steps down (as the KCL 3.x
    /// leader does after three failed lease-assignment runs): a leader that cannot list cannot
    /// take a crashed worker's leases, while its renewals keep telling the fleet it leads.
    pub fn leader_failed_listings(&self) -> u32 {
        3
    }

    /// How long a worker that stepped down stays out of the lead: its renewals say so, and
    /// the next worker by id leads meanwhile. Six taker intervals (a minute by default).
    pub fn step_down_for(&self) -> Duration {
        self.taker_interval().saturating_mul(6)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), CoordinatorConfigError> {
        use CoordinatorConfigError as E;
        if self.worker_id.trim().is_empty() {
            return Err(E::EmptyWorkerId);
        }
        if self.failover_time < Duration::from_millis(100) {
            return Err(E::FailoverTooShort(self.failover_time));
        }
        for (field, value) in [
            ("failover_time", self.failover_time),
            ("renew_interval", self.renew_interval()),
            ("taker_interval", self.taker_interval()),
            ("graceful_handoff_timeout", self.graceful_handoff_timeout()),
            ("max_hand_off_extension", self.max_hand_off_extension),
            ("store_call_timeout", self.store_call_timeout()),
            ("list_timeout", self.list_timeout()),
            ("clock_skew_margin", self.clock_skew_margin),
        ] {
            if value > crate::limits::MAX_SETTING_DURATION {
                return Err(E::TooLong { field, value });
            }
        }
        if self.store_call_timeout().is_zero() || self.store_call_timeout() >= self.failover_time {
            return Err(E::StoreCallTimeout {
                timeout: self.store_call_timeout(),
                failover: self.failover_time,
            });
        }
        if self.list_timeout().is_zero() {
            return Err(E::Zero("list_timeout"));
        }
        if self.renew_interval().is_zero() || self.renew_interval() >= self.failover_time {
            return Err(E::RenewInterval {
                renew: self.renew_interval(),
                failover: self.failover_time,
            });
        }
        if self.taker_interval().is_zero() {
            return Err(E::ZeroTakerInterval);
        }
        if self.max_leases_for_worker == 0 {
            return Err(E::Zero("max_leases_for_worker"));
        }
        if self.max_leases_to_steal_at_one_time == 0 {
            return Err(E::Zero("max_leases_to_steal_at_one_time"));
        }
        if self.graceful_handoff_timeout() < self.failover_time {
            return Err(E::HandoffTimeout {
                timeout: self.graceful_handoff_timeout(),
                failover: self.failover_time,
            });
        }
        Ok(())
    }
}

/// The KCL's renew interval: failover / 3 − 25 ms in whole milliseconds (at least 1 ms).
fn kcl_renew_interval(failover: Duration) -> Duration {
    let millis = u64::try_from(failover.as_millis() / 3).unwrap_or(u64::MAX);
    Duration::from_millis(millis.saturating_sub(25).max(1))
}

/// An invalid coordinator setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorConfigError {
    /// The worker id is empty.
    #[error("worker_id must not be empty")]
    EmptyWorkerId,
    /// The failover time is too short to be meaningful.
    #[error("failover_time {0:?} is below the minimum of 100 ms")]
    FailoverTooShort(Duration),
    /// Renewals must happen several times per failover time.
    #[error("renew_interval {renew:?} must be positive and below failover_time {failover:?}")]
    RenewInterval {
        /// The renew interval.
        renew: Duration,
        /// The failover time.
        failover: Duration,
    },
    /// The taker interval is zero.
    #[error("taker_interval must be positive")]
    ZeroTakerInterval,
    /// A count that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A duration so long that deadlines computed from it could overflow.
    #[error("{field} {value:?} exceeds the maximum of {max:?}", max = crate::limits::MAX_SETTING_DURATION)]
    TooLong {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: Duration,
    },
    /// A store call could outlast the lease it renews.
    #[error("store_call_timeout {timeout:?} must be positive and below failover_time {failover:?}")]
    StoreCallTimeout {
        /// The call timeout.
        timeout: Duration,
        /// The failover time.
        failover: Duration,
    },
    /// A thief could start before the victim's belief in the lease expired.
    #[error("graceful_handoff_timeout {timeout:?} must be at least failover_time {failover:?}")]
    HandoffTimeout {
        /// The hand-off timeout.
        timeout: Duration,
        /// The failover time.
        failover: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_kcl_where_users_rely_on_them() {
        let c = CoordinatorConfig::new("w");
        assert_eq!(c.failover_time, Duration::from_secs(10));
        assert_eq!(c.renew_interval(), Duration::from_millis(3308));
        assert_eq!(c.taker_interval(), Duration::from_secs(10));
        assert_eq!(c.store_call_timeout(), c.renew_interval());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_named() {
        let base = CoordinatorConfig::new("w");
        assert_eq!(
            CoordinatorConfig::new(" ").validate(),
            Err(CoordinatorConfigError::EmptyWorkerId)
        );
        let bad = base
            .clone()
            .with_renew_interval(Duration::from_secs(10))
            .with_store_call_timeout(Duration::from_secs(1));
        assert!(matches!(
            bad.validate(),
            Err(CoordinatorConfigError::RenewInterval { .. })
        ));
        let bad = base.clone().with_max_leases_for_worker(0);
        assert_eq!(
            bad.validate(),
            Err(CoordinatorConfigError::Zero("max_leases_for_worker"))
        );
        let bad = base
            .clone()
            .with_graceful_handoff_timeout(Duration::from_secs(1));
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("graceful_handoff_timeout")
        );
        let bad = base
            .clone()
            .with_failover_time(Duration::from_secs(u64::MAX / 4));
        assert!(matches!(
            bad.validate(),
            Err(CoordinatorConfigError::TooLong {
                field: "failover_time",
                ..
            })
        ));
        let bad = base
            .clone()
            .with_store_call_timeout(Duration::from_secs(10));
        assert!(matches!(
            bad.validate(),
            Err(CoordinatorConfigError::StoreCallTimeout { .. })
        ));
        let bad = base.clone().with_failover_time(Duration::from_millis(10));
        assert!(matches!(
            bad.validate(),
            Err(CoordinatorConfigError::FailoverTooShort(_))
        ));
    }

    /// Derived settings follow the failover time whenever it is set, before or after the
    /// others: a later failover time never leaves an earlier derived value behind.
    #[test]
    fn derived_settings_follow_the_failover_time_unless_set() {
        let c = CoordinatorConfig::new("w").with_failover_time(Duration::from_secs(30));
        assert_eq!(c.renew_interval(), Duration::from_millis(9975));
        assert_eq!(c.taker_interval(), Duration::from_secs(30));
        assert_eq!(c.graceful_handoff_timeout(), Duration::from_secs(30));
        assert_eq!(c.list_timeout(), Duration::from_secs(30));
        let c = CoordinatorConfig::new("w")
            .with_taker_interval(Duration::from_secs(5))
            .with_failover_time(Duration::from_secs(30));
        assert_eq!(c.taker_interval(), Duration::from_secs(5), "set, so kept");
        assert_eq!(c.renew_interval(), Duration::from_millis(9975));
        let bad = CoordinatorConfig::new("w").with_failover_time(Duration::from_millis(10));
        assert!(matches!(
            bad.validate(),
            Err(CoordinatorConfigError::FailoverTooShort(_))
        ));
    }
}

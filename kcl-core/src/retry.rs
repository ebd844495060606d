//! One retry policy for every retry loop of the workspace: exponential backoff with jitter,
//! bounded by attempts and by total waiting time, over the `backon` crate.

use std::time::Duration;

use backon::BackoffBuilder;

/// How a retry loop waits between attempts and when it gives up.
///
/// Delays start at `min_backoff` and double up to `max_backoff`, each with jitter (a random
/// part up to the delay itself, so workers retrying one outage spread out). The loop gives up
/// after `max_attempts` attempts in all (the first included) or once the delays waited add up
/// to `max_total`, whichever comes first; `None` means no such bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// The first delay.
    pub min_backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
    /// Most attempts in all, the first included (`None`: no limit).
    pub max_attempts: Option<u32>,
    /// Most time spent waiting between attempts, in all (`None`: no limit).
    pub max_total: Option<Duration>,
}

impl RetryConfig {
    /// Retries for ever, `min_backoff` doubling to `max_backoff`.
    pub const fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            min_backoff,
            max_backoff,
            max_attempts: None,
            max_total: None,
        }
    }

    /// At most `n` attempts in all (the first included; at least 1).
    pub const fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(if n == 0 { 1 } else { n });
        self
    }

    /// At most `total` spent waiting between attempts.
    pub const fn with_max_total(mut self, total: Duration) -> Self {
        self.max_total = Some(total);
        self
    }

    /// The delays of one retry loop; `seed` makes the jitter reproducible (simulations, tests)
    /// and differ between loops.
    pub fn backoff(&self, seed: u64) -> Backoff {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff.max(self.min_backoff))
            .with_jitter()
            .with_jitter_seed(seed)
            .with_total_delay(self.max_total);
        let builder = match self.max_attempts {
            // backon counts retries, not attempts.
            Some(n) => builder.with_max_times(n.saturating_sub(1) as usize),
            None => builder.without_max_times(),
        };
        Backoff {
            inner: builder.build(),
        }
    }
}

/// The delays of one retry loop (see [`RetryConfig::backoff`]).
#[derive(Debug)]
pub struct Backoff {
    inner: backon::ExponentialBackoff,
}

impl Backoff {
    /// How long to wait before the next attempt; `None` once the policy gives up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.inner.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_the_first_one() {
        let policy = RetryConfig::new(Duration::from_millis(100), Duration::from_secs(2))
            .with_max_attempts(5);
        let mut b = policy.backoff(7);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(delays.len(), 4, "five attempts: four waits");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(100)));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(4)),
            "{delays:?}"
        );
    }

    #[test]
    fn delays_grow_to_the_cap_and_the_total_bounds_them() {
        let policy = RetryConfig::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_max_total(Duration::from_secs(10));
        let mut b = policy.backoff(1);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay()).take(1000).collect();
        assert!(delays.len() < 1000, "the total ends the loop");
        let waited: Duration = delays.iter().sum();
        assert!(waited <= Duration::from_secs(10), "{waited:?}");
        assert!(
            delays.last().unwrap() >= &Duration::from_secs(1),
            "{delays:?}"
        );
    }

    #[test]
    fn unbounded_retries_never_give_up_and_a_seed_replays() {
        let policy = RetryConfig::new(Duration::from_millis(10), Duration::from_millis(50));
        let (mut a, mut b) = (policy.backoff(3), policy.backoff(3));
        for _ in 0..10_000 {
            let d = a.next_delay().expect("never gives up");
            assert_eq!(Some(d), b.next_delay());
        }
    }
}

//! Adaptive pacing of GetRecords for one shard.
//!
//! The 5 GetRecords/s/shard budget is shared by every application reading the shard, so a
//! throttle means "slow down", not "retry now". The pacer doubles the gap between calls on each
//! throttle (with jitter, so shards and applications do not retry in lockstep) and shrinks it by
//! a quarter on each success, recovering smoothly instead of storming back.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Smallest gap after a throttle: one call per 200 ms is the whole per-shard budget.
const THROTTLED_FLOOR: Duration = Duration::from_millis(200);
/// Smallest gap after another retryable error.
const ERROR_FLOOR: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Pacer {
    base: Duration,
    max: Duration,
    gap: Duration,
    last_call: Option<Instant>,
    rng: SmallRng,
}

impl Pacer {
    pub(crate) fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max: max.max(base),
            gap: base,
            last_call: None,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Waits until the next call may go out, and records that it does.
    pub(crate) async fn wait(&mut self) {
        if let Some(last) = self.last_call {
            let gap = if self.gap > self.base {
                // Half fixed, half jitter.
                let half = self.gap / 2;
                half + half.mul_f64(self.rng.random::<f64>())
            } else {
                self.gap
            };
            tokio::time::sleep_until(last + gap).await;
        }
        self.last_call = Some(Instant::now());
    }

    pub(crate) fn success(&mut self) {
        self.gap = (self.gap * 3 / 4).max(self.base);
        if self.gap < Duration::from_millis(1) {
            self.gap = self.base;
        }
    }

    pub(crate) fn throttled(&mut self) {
        self.gap = (self.gap * 2).max(THROTTLED_FLOOR).min(self.max);
    }

    pub(crate) fn failed(&mut self) {
        self.gap = (self.gap * 2).max(ERROR_FLOOR).min(self.max);
    }

    #[cfg(test)]
    pub(crate) fn gap(&self) -> Duration {
        self.gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_on_throttles_and_recovers_gradually() {
        let mut p = Pacer::new(Duration::ZERO, Duration::from_secs(10), 1);
        p.throttled();
        assert_eq!(p.gap(), Duration::from_millis(200));
        for _ in 0..10 {
            p.throttled();
        }
        assert_eq!(p.gap(), Duration::from_secs(10), "capped");
        p.success();
        assert_eq!(
            p.gap(),
            Duration::from_millis(7500),
            "recovers by a quarter per success"
        );
        for _ in 0..60 {
            p.success();
        }
        assert_eq!(p.gap(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_calls_are_spaced_out() {
        let mut p = Pacer::new(Duration::ZERO, Duration::from_secs(10), 7);
        let start = Instant::now();
        p.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..5 {
            p.throttled();
        }
        p.wait().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1600) && waited <= Duration::from_millis(3200),
            "{waited:?}"
        );
    }
}

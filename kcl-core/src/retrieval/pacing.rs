//! Adaptive pacing of GetRecords for one shard.
//!
//! The 5 GetRecords/s/shard budget is shared by every application reading the shard, so a
//! throttle means "slow down", not "retry now". The pacer doubles the gap between calls on each
//! throttle (with jitter, so shards and applications do not retry in lockstep) and shrinks it by
//! a quarter on each success, recovering smoothly instead of storming back.
//!
//! A shard also allows 2 MiB/s of reads: after a response of B bytes, Kinesis throttles every
//! call for the next B / 2 MiB seconds (10 MiB: 5 s). The pacer waits that long after a large
//! response instead of drawing the throttle, so a shard that is behind drains at the read limit.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Smallest gap after a throttle: one call per 200 ms is the whole per-shard budget.
const THROTTLED_FLOOR: Duration = Duration::from_millis(200);
/// A shard's read rate, for all applications together.
const SHARD_READ_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
/// Smallest gap after another retryable error.
const ERROR_FLOOR: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Pacer {
    base: Duration,
    max: Duration,
    gap: Duration,
    last_call: Option<Instant>,
    /// No call before this: the read budget the last response used.
    not_before: Option<Instant>,
    rng: SmallRng,
}

impl Pacer {
    pub(crate) fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max: max.max(base),
            gap: base,
            last_call: None,
            not_before: None,
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
            let at = self.not_before.map_or(last + gap, |t| t.max(last + gap));
            tokio::time::sleep_until(at).await;
        }
        self.last_call = Some(Instant::now());
    }

    /// A call succeeded with a response of `bytes` bytes of record data.
    pub(crate) fn success(&mut self, bytes: usize) {
        self.not_before = self
            .last_call
            .map(|last| last + Duration::from_secs_f64(bytes as f64 / SHARD_READ_BYTES_PER_SECOND));
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
        p.success(0);
        assert_eq!(
            p.gap(),
            Duration::from_millis(7500),
            "recovers by a quarter per success"
        );
        for _ in 0..60 {
            p.success(0);
        }
        assert_eq!(p.gap(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_response_spends_the_shards_read_budget() {
        let mut p = Pacer::new(Duration::ZERO, Duration::from_secs(10), 1);
        let start = Instant::now();
        p.wait().await;
        p.success(10 * 1024 * 1024);
        p.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        p.success(0);
        p.wait().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "an empty response costs nothing"
        );
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

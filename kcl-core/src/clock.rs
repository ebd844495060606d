//! Wall-clock time that advances with `tokio::time`, so record ages and arrival times follow a
//! paused test clock the same way they follow real time.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A wall-clock reading taken at start, advanced by tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    wall: SystemTime,
    base: Instant,
}

impl WallClock {
    /// Starts now.
    pub(crate) fn start() -> Self {
        Self {
            wall: SystemTime::now(),
            base: Instant::now(),
        }
    }

    /// Time since start, by tokio's clock.
    pub(crate) fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.base)
    }

    /// The current wall-clock time.
    pub(crate) fn now(&self) -> SystemTime {
        self.wall + self.elapsed()
    }

    /// How long ago `t` was (zero for a time in the future).
    pub(crate) fn age(&self, t: SystemTime) -> Duration {
        self.now().duration_since(t).unwrap_or_default()
    }
}

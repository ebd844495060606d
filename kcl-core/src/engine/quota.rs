//! Opt-in emulation of the per-shard Kinesis quotas, with token buckets on `tokio::time`.

use tokio::time::Instant;

/// Per-shard quotas the in-memory engine enforces when quota emulation is on. Defaults are the
/// AWS limits.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct QuotaLimits {
    /// GetRecords calls per second per shard (shared by every reader of the shard). AWS: 5.
    pub get_records_per_sec: f64,
    /// Bytes read per second per shard. AWS: 2 MiB. One call may read up to 10 MiB, after which
    /// the shard's reads are throttled until the budget is paid back (≈ 5 s for 10 MiB).
    pub read_bytes_per_sec: f64,
    /// Bytes written per second per shard. AWS: 1 MiB.
    pub write_bytes_per_sec: f64,
    /// Records written per second per shard. AWS: 1,000.
    pub write_records_per_sec: f64,
}

impl QuotaLimits {
    /// Sets [`get_records_per_sec`](Self::get_records_per_sec).
    pub fn with_get_records_per_sec(mut self, get_records_per_sec: f64) -> Self {
        self.get_records_per_sec = get_records_per_sec;
        self
    }

    /// Sets [`read_bytes_per_sec`](Self::read_bytes_per_sec).
    pub fn with_read_bytes_per_sec(mut self, read_bytes_per_sec: f64) -> Self {
        self.read_bytes_per_sec = read_bytes_per_sec;
        self
    }

    /// Sets [`write_bytes_per_sec`](Self::write_bytes_per_sec).
    pub fn with_write_bytes_per_sec(mut self, write_bytes_per_sec: f64) -> Self {
        self.write_bytes_per_sec = write_bytes_per_sec;
        self
    }

    /// Sets [`write_records_per_sec`](Self::write_records_per_sec).
    pub fn with_write_records_per_sec(mut self, write_records_per_sec: f64) -> Self {
        self.write_records_per_sec = write_records_per_sec;
        self
    }
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            get_records_per_sec: 5.0,
            read_bytes_per_sec: 2.0 * 1024.0 * 1024.0,
            write_bytes_per_sec: 1024.0 * 1024.0,
            write_records_per_sec: 1000.0,
        }
    }
}

/// A bucket refilled continuously at `rate` per second up to one second's worth.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// Takes `amount` if the bucket holds it.
    fn take(&mut self, amount: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens + 1e-9 >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is out of debt (reads may borrow beyond one second's budget).
    fn has_credit(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }
}

/// The quota state of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardQuota {
    get_calls: TokenBucket,
    read_bytes: TokenBucket,
    write_bytes: TokenBucket,
    write_records: TokenBucket,
}

impl ShardQuota {
    pub(crate) fn new(limits: &QuotaLimits, now: Instant) -> Self {
        Self {
            get_calls: TokenBucket::new(limits.get_records_per_sec, now),
            read_bytes: TokenBucket::new(limits.read_bytes_per_sec, now),
            write_bytes: TokenBucket::new(limits.write_bytes_per_sec, now),
            write_records: TokenBucket::new(limits.write_records_per_sec, now),
        }
    }

    /// Admits one GetRecords call, or says which quota refused it.
    pub(crate) fn admit_read(&mut self, now: Instant) -> Result<(), &'static str> {
        if !self.read_bytes.has_credit(now) {
            return Err("read throughput of 2 MiB/s for the shard exceeded");
        }
        if !self.get_calls.take(1.0, now) {
            return Err("rate of GetRecords calls for the shard exceeded");
        }
        Ok(())
    }

    /// Charges the bytes an admitted read returned (may go into debt).
    pub(crate) fn charge_read(&mut self, bytes: usize) {
        self.read_bytes.tokens -= bytes as f64;
    }

    /// Admits one record write of `bytes`, or refuses it.
    pub(crate) fn admit_write(&mut self, bytes: usize, now: Instant) -> bool {
        self.write_records.refill(now);
        self.write_bytes.refill(now);
        if self.write_records.tokens + 1e-9 >= 1.0 && self.write_bytes.tokens + 1e-9 >= bytes as f64
        {
            self.write_records.tokens -= 1.0;
            self.write_bytes.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn five_reads_per_second() {
        let mut q = ShardQuota::new(&QuotaLimits::default(), Instant::now());
        for _ in 0..5 {
            assert!(q.admit_read(Instant::now()).is_ok());
        }
        assert!(q.admit_read(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(q.admit_read(Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ten_mib_read_blocks_the_shard_for_seconds() {
        let mut q = ShardQuota::new(&QuotaLimits::default(), Instant::now());
        assert!(q.admit_read(Instant::now()).is_ok());
        q.charge_read(10 * 1024 * 1024);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(q.admit_read(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(q.admit_read(Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn writes_limited_by_records_and_bytes() {
        let mut q = ShardQuota::new(&QuotaLimits::default(), Instant::now());
        let admitted = (0..2000)
            .filter(|_| q.admit_write(10, Instant::now()))
            .count();
        assert_eq!(admitted, 1000);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(q.admit_write(1024 * 1024, Instant::now()));
        assert!(!q.admit_write(1, Instant::now()));
    }
}

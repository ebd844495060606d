//! Bounds that keep every deadline computed from a setting finite.

use std::time::Duration;

/// The longest duration any setting accepts (one year). `Instant + Duration` panics on
/// overflow, so settings are bounded where they are validated rather than at each use.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + d`, saturating at a year from now instead of panicking on overflow.
pub(crate) fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d.min(MAX_SETTING_DURATION))
        .unwrap_or(now + MAX_SETTING_DURATION)
}

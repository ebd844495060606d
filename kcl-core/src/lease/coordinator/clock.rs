//! Wall-clock time for renewal stamps, as tokio sees it: the system clock normally, and the
//! same clock moved with tokio's virtual time under a paused test runtime, so simulations
//! judge stamps in virtual time too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch now.
pub(super) fn unix_millis_now() -> u64 {
    let real = std::time::Instant::now();
    let virtual_now = Instant::now().into_std();
    let system = SystemTime::now();
    let now = if virtual_now >= real {
        system + (virtual_now - real)
    } else {
        system - (real - virtual_now)
    };
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The local instant of a wall-clock time in milliseconds, given the wall clock `now_millis`
/// read at `now`. Times too far off to represent saturate.
pub(super) fn instant_of(unix_millis: u64, now: Instant, now_millis: u64) -> Instant {
    if unix_millis <= now_millis {
        now.checked_sub(Duration::from_millis(now_millis - unix_millis))
            .unwrap_or(now)
    } else {
        now + Duration::from_millis(
            (unix_millis - now_millis).min(crate::limits::MAX_SETTING_DURATION.as_millis() as u64),
        )
    }
}

//! Wall-clock time for renewal stamps, as tokio sees it: the system clock normally, and the
//! same clock moved with tokio's virtual time under a paused test runtime, so simulations
//! judge stamps in virtual time too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where the system clock stood at one instant of the monotonic clock. Wall-clock times are
/// taken from it plus tokio's (possibly virtual) monotonic time, so a paused test runtime gets
/// stamps that are a pure function of its virtual time (reading the system clock beside it
/// would add the real time between the two reads, which varies run to run). Re-anchored every
/// ten minutes of real time while tokio's clock follows the real one, so a stepped system
/// clock is followed.
static ANCHOR: parking_lot::Mutex<Option<(SystemTime, std::time::Instant)>> =
    parking_lot::Mutex::new(None);

const REANCHOR: Duration = Duration::from_secs(600);

/// Milliseconds since the Unix epoch now.
pub(super) fn unix_millis_now() -> u64 {
    let virtual_now = Instant::now().into_std();
    let (system, at) = {
        let mut anchor = ANCHOR.lock();
        let real = std::time::Instant::now();
        let follows_real = virtual_now.max(real) - virtual_now.min(real) < Duration::from_secs(1);
        match *anchor {
            Some((_, at)) if !(follows_real && real.saturating_duration_since(at) > REANCHOR) => {}
            _ => *anchor = Some((SystemTime::now(), real)),
        }
        anchor.expect("anchored above")
    };
    let now = if virtual_now >= at {
        system + (virtual_now - at)
    } else {
        system - (at - virtual_now)
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

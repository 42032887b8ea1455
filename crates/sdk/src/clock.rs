//! Wall-clock time from a monotonic reading, without a second clock read per
//! prediction.
//!
//! `predict()` already reads `Instant::now()` to time the model; reading
//! `SystemTime::now()` as well for the event's timestamp and id would cost
//! another ~50 ns on the 2-core VM. Instead the wall-clock time of a fixed
//! base instant is estimated, and re-estimated at most once a second, so a
//! step of the system clock shows within a second.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the estimate is refreshed from the system clock.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

struct WallClock {
    base: Instant,
    /// Unix time of `base`, in nanoseconds, as last estimated.
    unix_nanos_at_base: AtomicU64,
    /// When it was estimated, in nanoseconds after `base`.
    estimated_at: AtomicU64,
}

static WALL_CLOCK: OnceLock<WallClock> = OnceLock::new();

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since_epoch| u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The Unix time, in milliseconds, at `instant` (a recent reading).
#[inline]
pub(crate) fn unix_millis_at(instant: Instant) -> u64 {
    let clock = WALL_CLOCK.get_or_init(|| {
        let base = Instant::now();
        WallClock {
            base,
            unix_nanos_at_base: AtomicU64::new(unix_nanos_now()),
            estimated_at: AtomicU64::new(0),
        }
    });
    let since_base = nanos(instant.saturating_duration_since(clock.base));
    let estimated_at = clock.estimated_at.load(Ordering::Relaxed);
    let mut unix_nanos_at_base = clock.unix_nanos_at_base.load(Ordering::Relaxed);
    if since_base.saturating_sub(estimated_at) >= nanos(REFRESH_EVERY) {
        // Two threads may refresh at once; either estimate is right.
        let now = Instant::now();
        let unix_now = unix_nanos_now();
        let now_since_base = nanos(now.saturating_duration_since(clock.base));
        unix_nanos_at_base = unix_now.saturating_sub(now_since_base);
        clock
            .unix_nanos_at_base
            .store(unix_nanos_at_base, Ordering::Relaxed);
        clock.estimated_at.store(now_since_base, Ordering::Relaxed);
    }
    (unix_nanos_at_base + since_base) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock() {
        let estimated = unix_millis_at(Instant::now());
        let actual = unix_nanos_now() / 1_000_000;
        assert!(estimated.abs_diff(actual) <= 5, "{estimated} vs {actual}");
    }
}

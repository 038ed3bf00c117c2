//! The host's clocks, which the sans-IO engine never reads itself: the wall clock for
//! `now` (leases, refills) and a monotonic ticker for latency metrics.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clpe_core::Time;
use clpe_core::dispatcher::Ticker;

/// Now, as nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now() -> Time {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Time(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A monotonic reading in nanoseconds since the ticker was made.
pub fn ticker() -> Ticker {
    let start = Instant::now();
    Arc::new(move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

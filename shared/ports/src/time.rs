//! Time as the control plane stores and compares it: milliseconds since the Unix epoch.
//!
//! Decisions take `now` as an argument instead of reading a clock, so tests choose the time.
//! Only adapters at the edge call [`Timestamp::now`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, in whole milliseconds since the Unix epoch (UTC).
///
/// Milliseconds, not seconds: leases and idempotency keys expire on sub-second scales in
/// tests, and DynamoDB compares numbers exactly. Saturating arithmetic: an absurd TTL gives
/// "never expires", not a wrapped time in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded up: the unit of DynamoDB's TTL attribute.
    /// Rounding up means TTL deletion never happens before the expiry we compare against.
    pub const fn as_secs_ceil(self) -> u64 {
        self.0.div_ceil(1000)
    }

    /// The wall clock. Only adapters and binaries call this; decisions take `now`.
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn minus(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_500);
        assert_eq!(t.plus(Duration::from_millis(500)).as_millis(), 2_000);
        assert_eq!(t.minus(Duration::from_secs(10)), Timestamp::EPOCH);
        assert_eq!(t.plus(Duration::MAX).as_millis(), u64::MAX);
        assert_eq!(t.since(Timestamp::from_millis(2_000)), Duration::ZERO);
        assert_eq!(t.as_secs_ceil(), 2);
        assert_eq!(Timestamp::from_millis(2_000).as_secs_ceil(), 2);
        assert_eq!(t.to_string(), "1.500");
    }
}

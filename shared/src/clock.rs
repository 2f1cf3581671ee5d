//! Time as a port: leases, TTLs and `expiresAt` are computed from an injectable clock so
//! tests can move time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// RFC 3339 UTC timestamp of now.
    fn now_rfc3339(&self) -> String {
        crate::instant::rfc3339(self.now_ms())
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at_ms(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at_ms(1_700_000_000_500);
        assert_eq!(clock.now_secs(), 1_700_000_000);
        clock.advance_ms(1_500);
        assert_eq!(clock.now_ms(), 1_700_000_002_000);
        assert_eq!(clock.now_rfc3339(), "2023-11-14T22:13:22.000Z");
    }
}

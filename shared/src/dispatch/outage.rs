//! Outage back-off: when the Workflow Service fails every call, each waiting match
//! spending its own attempts only adds load and burns retry budgets. After `threshold`
//! consecutive transient failures in this instance the dispatcher stops calling for a
//! cool-down (doubling per failed probe, up to the backoff cap); messages that arrive
//! meanwhile go back to the queue without an RPC. When the cool-down ends, exactly one
//! call probes the service: success closes the breaker, failure re-opens it.

use std::sync::{Mutex, PoisonError};

/// Whether a dispatch may call the Workflow Service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Call,
    /// The service is considered down for at least this long.
    Wait {
        remaining_ms: i64,
    },
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// How many times the breaker opened since the last success (the cool-down exponent).
    openings: u32,
    /// 0 while closed.
    open_until_ms: i64,
    /// When the current probe was let through (0: none in flight).
    probe_started_ms: i64,
}

#[derive(Debug)]
pub struct OutageBreaker {
    threshold: u32,
    base_ms: i64,
    cap_ms: i64,
    state: Mutex<State>,
}

/// A probe that never reports back (its worker lost the claim race, or crashed) stops
/// blocking others after this long (longer than one Workflow Service call may take).
const PROBE_TIMEOUT_MS: i64 = 30_000;

impl OutageBreaker {
    /// Opens after `threshold` consecutive transient failures; cool-downs start at 1 s
    /// and double up to `cap_secs`.
    pub fn new(threshold: u32, cap_secs: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            base_ms: 1_000,
            cap_ms: i64::from(cap_secs.max(1)) * 1_000,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cooldown_ms(&self, openings: u32) -> i64 {
        let exponent = openings.saturating_sub(1).min(30);
        self.base_ms.saturating_mul(1 << exponent).min(self.cap_ms)
    }

    pub fn is_open(&self) -> bool {
        self.lock().open_until_ms != 0
    }

    pub fn admit(&self, now_ms: i64) -> Gate {
        let mut state = self.lock();
        if state.open_until_ms == 0 {
            return Gate::Call;
        }
        if now_ms < state.open_until_ms {
            return Gate::Wait {
                remaining_ms: state.open_until_ms - now_ms,
            };
        }
        let probe_pending = state.probe_started_ms != 0
            && now_ms < state.probe_started_ms.saturating_add(PROBE_TIMEOUT_MS);
        if probe_pending {
            return Gate::Wait {
                remaining_ms: self.cooldown_ms(state.openings),
            };
        }
        state.probe_started_ms = now_ms;
        Gate::Call
    }

    pub fn record_success(&self) {
        *self.lock() = State::default();
    }

    /// Counts a transient failure; returns true when this failure opened the breaker.
    pub fn record_failure(&self, now_ms: i64) -> bool {
        let mut state = self.lock();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let probe_failed = state.probe_started_ms != 0;
        let tripped = state.open_until_ms == 0 && state.consecutive_failures >= self.threshold;
        if !(probe_failed || tripped) {
            return false;
        }
        state.openings = state.openings.saturating_add(1);
        state.open_until_ms = now_ms.saturating_add(self.cooldown_ms(state.openings));
        state.probe_started_ms = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_waits_out_the_cooldown() {
        let breaker = OutageBreaker::new(3, 8);
        assert!(!breaker.record_failure(0));
        assert!(!breaker.record_failure(0));
        assert_eq!(
            breaker.admit(0),
            Gate::Call,
            "still closed below the threshold"
        );
        assert!(breaker.record_failure(100));
        assert_eq!(breaker.admit(600), Gate::Wait { remaining_ms: 500 });
    }

    #[test]
    fn one_probe_after_the_cooldown_and_doubling_cooldowns_up_to_the_cap() {
        let breaker = OutageBreaker::new(1, 4);
        breaker.record_failure(0);
        assert_eq!(breaker.admit(1_000), Gate::Call, "the probe");
        assert!(
            matches!(breaker.admit(1_001), Gate::Wait { .. }),
            "only one probe at a time"
        );
        assert!(breaker.record_failure(1_100), "a failed probe re-opens");
        assert_eq!(
            breaker.admit(1_100),
            Gate::Wait {
                remaining_ms: 2_000
            }
        );
        assert_eq!(breaker.admit(3_100), Gate::Call);
        breaker.record_failure(3_100);
        assert_eq!(
            breaker.admit(3_100),
            Gate::Wait {
                remaining_ms: 4_000
            }
        );
        assert_eq!(breaker.admit(7_100), Gate::Call);
        breaker.record_failure(7_100);
        assert_eq!(
            breaker.admit(7_100),
            Gate::Wait {
                remaining_ms: 4_000
            },
            "capped"
        );
    }

    #[test]
    fn a_success_closes_it_and_an_abandoned_probe_expires() {
        let breaker = OutageBreaker::new(1, 60);
        breaker.record_failure(0);
        assert_eq!(breaker.admit(1_000), Gate::Call);
        assert!(matches!(breaker.admit(2_000), Gate::Wait { .. }));
        assert_eq!(
            breaker.admit(1_000 + PROBE_TIMEOUT_MS),
            Gate::Call,
            "the silent probe is replaced"
        );
        breaker.record_success();
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(0), Gate::Call);
    }

    #[test]
    fn stragglers_of_an_open_breaker_do_not_extend_it() {
        let breaker = OutageBreaker::new(2, 60);
        breaker.record_failure(0);
        assert!(breaker.record_failure(0));
        assert!(!breaker.record_failure(10), "already open");
        assert_eq!(breaker.admit(10), Gate::Wait { remaining_ms: 990 });
    }
}

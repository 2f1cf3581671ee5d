//! Every wait before trying again, in one place: the retry delays of transient dispatch
//! failures (SQS visibility timeouts are whole seconds, so 1, 2, 4, 8, ... s, capped,
//! plus up to 25% jitter so a burst of failures does not come back as a burst), the
//! hold of messages while the Workflow Service is down (it grows with the outage, under
//! the same cap), and the short random pause before retrying a store call that lost a
//! race or was throttled.

/// Exponential backoff with a cap and additive jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_secs: u32,
    pub cap_secs: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_secs: 1,
            // SQS allows up to 12 h; a stuck Workflow Service should not park work longer
            // than 15 min per attempt.
            cap_secs: 900,
        }
    }
}

impl Backoff {
    /// Delay before the attempt after attempt number `attempt` (1-based), with `jitter`
    /// in `[0, 1)` scaling the extra 0–25%.
    pub fn delay_secs(&self, attempt: u32, jitter: f64) -> u32 {
        let exponent = attempt.saturating_sub(1).min(31);
        let raw = u64::from(self.base_secs).saturating_mul(1u64 << exponent);
        let capped = raw.min(u64::from(self.cap_secs));
        let extra = (capped as f64 * 0.25 * jitter.clamp(0.0, 1.0)).floor() as u64;
        u32::try_from((capped + extra).min(u64::from(self.cap_secs))).unwrap_or(self.cap_secs)
    }

    /// How long a message waits without calling after an outage has lasted `age_ms`: a
    /// fifteenth of the outage, at least [`MIN_OUTAGE_HOLD_SECS`], at most the cap (a
    /// long outage is not hammered, a short one is not overslept).
    pub fn outage_hold_secs(&self, age_ms: i64) -> u32 {
        let cap = i64::from(self.cap_secs.max(1));
        let secs = (age_ms / 15_000).max(MIN_OUTAGE_HOLD_SECS).min(cap);
        u32::try_from(secs).unwrap_or(self.cap_secs)
    }
}

/// The shortest hold of a message during an outage.
pub const MIN_OUTAGE_HOLD_SECS: i64 = 5;

/// A random pause before another try at a store call that lost a race or was throttled:
/// up to `base_ms` doubled per earlier try (six doublings at most), none before the first
/// try, so contenders on one hot key spread out instead of retrying in lockstep.
pub async fn contention_pause(attempt: u32, base_ms: u64) {
    if attempt == 0 {
        return;
    }
    let ceiling_ms = base_ms.max(1) << attempt.min(6);
    let ms = rand::random_range(0..ceiling_ms);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_holds_grow_with_the_outage_between_the_floor_and_the_cap() {
        let b = Backoff {
            base_secs: 1,
            cap_secs: 60,
        };
        assert_eq!(b.outage_hold_secs(0), 5);
        assert_eq!(b.outage_hold_secs(300_000), 20);
        assert_eq!(b.outage_hold_secs(86_400_000), 60);
    }

    #[test]
    fn doubles_per_attempt_without_jitter() {
        let b = Backoff::default();
        let delays: Vec<u32> = (1..=6).map(|n| b.delay_secs(n, 0.0)).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn is_capped_even_for_huge_attempt_numbers() {
        let b = Backoff::default();
        assert_eq!(b.delay_secs(11, 0.0), 900);
        assert_eq!(b.delay_secs(u32::MAX, 0.99), 900);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let b = Backoff::default();
        assert_eq!(b.delay_secs(4, 0.999), 9);
        assert_eq!(b.delay_secs(6, 0.5), 36);
        assert_eq!(b.delay_secs(6, 7.0), 40, "jitter is clamped");
    }
}

//! The generic cell rate algorithm behind rate limits and throttles: one number per
//! bucket (the theoretical arrival time) instead of a window of timestamps, so a bucket
//! is a single DynamoDB item updated with one compare-and-set.

/// `limit` events per `period_ms`, `burst` of them back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Spacing between events at the sustained rate.
    interval_ms: i64,
    /// How far ahead of its spacing an event may run (the burst allowance).
    tolerance_ms: i64,
}

/// Where an event falls in its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// When the event may run (`<= now`: at once).
    pub run_at_ms: i64,
    /// The bucket's next theoretical arrival time once this event takes its slot.
    pub next_tat_ms: i64,
}

impl Gcra {
    pub fn new(limit: u32, period_ms: i64, burst: u32) -> Self {
        let limit = i64::from(limit.max(1));
        let interval_ms = (period_ms / limit).max(1);
        let tolerance_ms = interval_ms.saturating_mul(i64::from(burst.max(1)) - 1);
        Self {
            interval_ms,
            tolerance_ms,
        }
    }

    /// A rate limit allows its whole `limit` within one period.
    pub fn rate_limit(limit: u32, period_ms: i64) -> Self {
        Self::new(limit, period_ms, limit)
    }

    /// The slot an event arriving at `now_ms` gets, given the stored arrival time.
    pub fn slot(&self, tat_ms: Option<i64>, now_ms: i64) -> Slot {
        let base = tat_ms.map_or(now_ms, |tat| tat.max(now_ms));
        Slot {
            run_at_ms: base.saturating_sub(self.tolerance_ms).max(now_ms),
            next_tat_ms: base.saturating_add(self.interval_ms),
        }
    }

    /// How long a bucket's cell must be kept: until its arrival time has passed.
    pub fn keep_until_ms(&self, next_tat_ms: i64) -> i64 {
        next_tat_ms.saturating_add(self.tolerance_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_admits_its_limit_per_period_and_refuses_the_rest() {
        let rule = Gcra::rate_limit(3, 60_000);
        let mut tat = None;
        let mut admitted = 0;
        for i in 0..10 {
            let now = 1_000 + i * 100;
            let slot = rule.slot(tat, now);
            if slot.run_at_ms <= now {
                admitted += 1;
                tat = Some(slot.next_tat_ms);
            }
        }
        assert_eq!(admitted, 3);
        // A third of the period later, one more slot is free.
        let later = 1_000 + 20_000;
        assert!(rule.slot(tat, later).run_at_ms <= later);
        assert!(rule.slot(tat, later - 1_001).run_at_ms > later - 1_001);
    }

    #[test]
    fn a_throttle_spaces_a_burst_evenly_and_in_order() {
        // 2 per 10 s, burst 1: one run every 5 s.
        let rule = Gcra::new(2, 10_000, 1);
        let mut tat = None;
        let mut runs = Vec::new();
        for i in 0..20 {
            let slot = rule.slot(tat, 1_000 + i);
            tat = Some(slot.next_tat_ms);
            runs.push(slot.run_at_ms);
        }
        assert_eq!(runs[0], 1_000);
        assert_eq!(runs[1], 6_000);
        assert_eq!(runs[19], 1_000 + 19 * 5_000);
        assert!(runs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_burst_lets_that_many_run_at_once_then_spaces_the_rest() {
        let rule = Gcra::new(2, 10_000, 3);
        let mut tat = None;
        let runs: Vec<i64> = (0..5)
            .map(|_| {
                let slot = rule.slot(tat, 0);
                tat = Some(slot.next_tat_ms);
                slot.run_at_ms
            })
            .collect();
        assert_eq!(runs, [0, 0, 0, 5_000, 10_000]);
    }

    #[test]
    fn an_idle_bucket_starts_over() {
        let rule = Gcra::new(1, 10_000, 1);
        let first = rule.slot(None, 0);
        let much_later = rule.slot(Some(first.next_tat_ms), 60_000);
        assert_eq!(much_later.run_at_ms, 60_000);
    }
}

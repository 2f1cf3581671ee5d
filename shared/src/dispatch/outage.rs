//! Outage back-off: when the Workflow Service fails every call, each waiting match
//! spending its own attempts only adds load and burns retry budgets. After `threshold`
//! consecutive transient failures the dispatcher stops calling; messages that arrive
//! meanwhile go back to the queue without an RPC. The breaker's state is shared by every
//! dispatcher instance (a [`BreakerStore`]: one DynamoDB item when deployed), so one
//! caller at a time probes the service, whichever instance it runs in. Waits grow with
//! the outage's age rather than per message, so the whole backlog comes back soon after
//! the service does: a probe once the outage is as old again (2–20 s apart), held
//! messages every `age / 15` (5 s up to the backoff cap) or just after the next probe,
//! whichever is later (2 s while a probe is in flight). A 5-minute outage drains within
//! about 45 s of recovery with about 20 probes, while a long one costs each held message
//! only a few dozen receives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::store::StoreError;

/// Whether a dispatch may call the Workflow Service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Call,
    /// The service is considered down: come back in `hold_secs` (no RPC).
    Wait {
        hold_secs: u32,
    },
    /// The service just failed and another call from this instance is testing it: come
    /// back in `hold_secs` (no RPC; not an outage, so not counted as one).
    Pace {
        hold_secs: u32,
    },
}

/// The shared state: consecutive transient failures, and while open when it opened and
/// when the next probe is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerState {
    pub failures: u32,
    /// 0 while closed.
    pub opened_at_ms: i64,
    pub next_probe_at_ms: i64,
    /// While a probe is in flight, until when (0: none).
    pub probe_until_ms: i64,
}

impl BreakerState {
    pub fn is_open(&self) -> bool {
        self.opened_at_ms != 0
    }
}

/// Where the breaker's state lives (shared by all dispatcher instances).
#[async_trait]
pub trait BreakerStore: Send + Sync {
    async fn read(&self) -> Result<BreakerState, StoreError>;

    /// Counts a transient failure; opens the breaker (first probe at `first_probe_at_ms`)
    /// when the count reaches `threshold` and it is closed. Returns the state after.
    async fn record_failure(
        &self,
        now_ms: i64,
        threshold: u32,
        first_probe_at_ms: i64,
    ) -> Result<BreakerState, StoreError>;

    /// Takes the probe that is due (open, `next_probe_at <= now`, no live probe) and
    /// schedules the one after at `next_probe_at_ms`; `false` when another caller has it.
    async fn take_probe(
        &self,
        now_ms: i64,
        probe_until_ms: i64,
        next_probe_at_ms: i64,
    ) -> Result<bool, StoreError>;

    /// A call succeeded: closed, count reset.
    async fn close(&self) -> Result<(), StoreError>;
}

/// A probe that never reports back (its worker crashed) stops blocking others after
/// this long (longer than one Workflow Service call may take).
const PROBE_TIMEOUT_MS: i64 = 30_000;
/// How long an instance trusts a clean state (closed, no failures) it last read.
const CLEAN_CACHE_MS: i64 = 250;
const MIN_PROBE_INTERVAL_MS: i64 = 2_000;
const MAX_PROBE_INTERVAL_MS: i64 = 20_000;
/// How long a probe usually takes to report (a held message comes back after it).
const PROBE_REPORT_MS: i64 = 2_000;
/// How long a message waits while another call from this instance tests a service that
/// just failed.
const SUSPECT_HOLD_SECS: u32 = 1;

pub struct OutageBreaker {
    threshold: u32,
    backoff: crate::backoff::Backoff,
    store: Box<dyn BreakerStore>,
    /// The state as last read or written, and when (epoch ms).
    cached: Mutex<(BreakerState, i64)>,
    /// Calls this instance admitted that have not reported back ([`InFlight`]).
    in_flight: AtomicUsize,
}

/// One admitted call, until it reports back (dropped).
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for OutageBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutageBreaker")
            .field("threshold", &self.threshold)
            .field("cached", &self.view())
            .finish_non_exhaustive()
    }
}

impl OutageBreaker {
    /// Opens after `threshold` consecutive transient failures; holds follow `backoff`
    /// (capped at the dispatch backoff cap).
    pub fn new(
        threshold: u32,
        backoff: crate::backoff::Backoff,
        store: Box<dyn BreakerStore>,
    ) -> Self {
        Self {
            threshold: threshold.max(1),
            backoff,
            store,
            cached: Mutex::new((BreakerState::default(), i64::MIN)),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn view(&self) -> (BreakerState, i64) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, state: BreakerState, now_ms: i64) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = (state, now_ms);
    }

    /// The longest hold: the dispatch backoff cap.
    fn cap_secs(&self) -> u32 {
        self.backoff.cap_secs.max(1)
    }

    /// Whether the breaker was open when this instance last looked.
    pub fn is_open(&self) -> bool {
        self.view().0.is_open()
    }

    /// The time between probes after the outage has lasted `age_ms`.
    fn probe_interval_ms(&self, age_ms: i64) -> i64 {
        age_ms
            .clamp(MIN_PROBE_INTERVAL_MS, MAX_PROBE_INTERVAL_MS)
            .min(i64::from(self.cap_secs()) * 1_000)
    }

    /// How long a message waits without calling after the outage has lasted `age_ms`.
    pub fn hold_secs(&self, age_ms: i64) -> u32 {
        self.backoff.outage_hold_secs(age_ms)
    }

    /// The hold for a message now, when the breaker is open.
    pub fn current_hold_secs(&self, now_ms: i64) -> Option<u32> {
        let (state, _) = self.view();
        state
            .is_open()
            .then(|| self.hold_secs(now_ms - state.opened_at_ms))
    }

    /// Whether this dispatch may call now. A clean breaker is read at most four times
    /// a second per instance; one counting failures, or open, on every message (held
    /// messages are few and spaced out), so an opening and a recovery are seen at once. When the shared store cannot be read,
    /// the call goes ahead: a missing breaker must never stop dispatching.
    /// An admission is counted until the [`InFlight`] from [`Self::admitted`] is dropped.
    pub async fn admit(&self, now_ms: i64) -> Gate {
        let gate = self.decide(now_ms).await;
        if gate == Gate::Call {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        gate
    }

    /// The guard of a call [`Self::admit`] let through: hold it until the call's result
    /// is recorded.
    pub fn admitted(&self) -> InFlight<'_> {
        InFlight(&self.in_flight)
    }

    async fn decide(&self, now_ms: i64) -> Gate {
        let (cached, read_at) = self.view();
        // Only a clean state is trusted from memory: once failures are counted, every
        // message looks again, so an opening is seen by the very next one.
        let clean = cached == BreakerState::default();
        let state = if clean && now_ms.saturating_sub(read_at) < CLEAN_CACHE_MS {
            cached
        } else {
            match self.store.read().await {
                Ok(state) => {
                    self.remember(state, now_ms);
                    state
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outage breaker state unreadable; calling");
                    return Gate::Call;
                }
            }
        };
        if !state.is_open() {
            // Failures counted but not yet enough to open: one call at a time from this
            // instance, so a burst of concurrent messages does not all hit a service that
            // has just started failing.
            if state.failures > 0 && self.in_flight.load(Ordering::SeqCst) > 0 {
                return Gate::Pace {
                    hold_secs: SUSPECT_HOLD_SECS,
                };
            }
            return Gate::Call;
        }
        let age = now_ms - state.opened_at_ms;
        // A probe is in flight: its answer is a moment away, so come back right after it
        // rather than a whole hold later.
        if state.probe_until_ms > now_ms {
            let secs = u32::try_from(PROBE_REPORT_MS / 1_000).unwrap_or(1);
            return Gate::Wait {
                hold_secs: secs.min(self.cap_secs()),
            };
        }
        if now_ms >= state.next_probe_at_ms {
            let next = now_ms + self.probe_interval_ms(age);
            match self
                .store
                .take_probe(now_ms, now_ms + PROBE_TIMEOUT_MS, next)
                .await
            {
                Ok(true) => return Gate::Call,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "probe not taken; holding"),
            }
        }
        // Back just after the next probe has had time to report: arriving while it is
        // still in flight would cost a whole further hold.
        let until_probe = state.next_probe_at_ms.saturating_sub(now_ms).max(0) + PROBE_REPORT_MS;
        let until_probe_secs = u32::try_from((until_probe + 999) / 1_000).unwrap_or(u32::MAX);
        Gate::Wait {
            hold_secs: self
                .hold_secs(age)
                .max(until_probe_secs)
                .min(self.cap_secs()),
        }
    }

    /// A call succeeded: the breaker closes (one write, only when it was not clean).
    pub async fn record_success(&self, now_ms: i64) {
        let (cached, _) = self.view();
        if cached == BreakerState::default() {
            return;
        }
        match self.store.close().await {
            Ok(()) => self.remember(BreakerState::default(), now_ms),
            Err(e) => tracing::warn!(error = %e, "outage breaker not closed"),
        }
    }

    /// Counts a transient failure; returns true when this failure opened the breaker.
    pub async fn record_failure(&self, now_ms: i64) -> bool {
        let was_open = self.view().0.is_open();
        let first_probe = now_ms + MIN_PROBE_INTERVAL_MS;
        match self
            .store
            .record_failure(now_ms, self.threshold, first_probe)
            .await
        {
            Ok(state) => {
                self.remember(state, now_ms);
                state.is_open() && !was_open
            }
            Err(e) => {
                tracing::warn!(error = %e, "outage breaker failure not recorded");
                false
            }
        }
    }
}

/// One process's breaker state: what a dispatcher uses when it shares it with nobody
/// (unit tests, a single local process). Deployed dispatchers share a DynamoDB item.
#[derive(Debug, Default)]
pub struct LocalBreaker {
    state: Mutex<(BreakerState, i64)>,
}

impl LocalBreaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, (BreakerState, i64)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl BreakerStore for LocalBreaker {
    async fn read(&self) -> Result<BreakerState, StoreError> {
        let (state, probe_until) = *self.lock();
        Ok(BreakerState {
            probe_until_ms: probe_until,
            ..state
        })
    }

    async fn record_failure(
        &self,
        now_ms: i64,
        threshold: u32,
        first_probe_at_ms: i64,
    ) -> Result<BreakerState, StoreError> {
        let mut guard = self.lock();
        let (state, probe_until) = &mut *guard;
        state.failures = state.failures.saturating_add(1);
        if !state.is_open() && state.failures >= threshold {
            // (0 means closed: an opening at the epoch itself counts from 1 ms.)
            state.opened_at_ms = now_ms.max(1);
            state.next_probe_at_ms = first_probe_at_ms;
        }
        // A failed probe frees the probe slot; the next is already scheduled.
        *probe_until = 0;
        Ok(*state)
    }

    async fn take_probe(
        &self,
        now_ms: i64,
        probe_until_ms: i64,
        next_probe_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut guard = self.lock();
        let (state, probe_until) = &mut *guard;
        if !state.is_open() || state.next_probe_at_ms > now_ms || *probe_until > now_ms {
            return Ok(false);
        }
        *probe_until = probe_until_ms;
        state.next_probe_at_ms = next_probe_at_ms;
        Ok(true)
    }

    async fn close(&self) -> Result<(), StoreError> {
        *self.lock() = (BreakerState::default(), 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(cap_secs: u32) -> crate::backoff::Backoff {
        crate::backoff::Backoff {
            base_secs: 1,
            cap_secs,
        }
    }

    fn breaker(threshold: u32, cap_secs: u32) -> OutageBreaker {
        OutageBreaker::new(
            threshold,
            capped(cap_secs),
            Box::new(LocalBreaker::default()),
        )
    }

    #[tokio::test]
    async fn opens_after_the_threshold_and_holds_messages_without_calling() {
        let breaker = breaker(3, 300);
        assert!(!breaker.record_failure(0).await);
        assert!(!breaker.record_failure(0).await);
        assert_eq!(
            breaker.admit(0).await,
            Gate::Call,
            "closed below the threshold"
        );
        assert!(breaker.record_failure(100).await);
        assert_eq!(breaker.admit(600).await, Gate::Wait { hold_secs: 5 });
    }

    #[tokio::test]
    async fn one_probe_at_a_time_and_probes_and_holds_grow_with_the_outage_age() {
        let breaker = breaker(1, 300);
        breaker.record_failure(0).await;
        assert_eq!(breaker.admit(2_000).await, Gate::Call, "the first probe");
        assert!(
            matches!(breaker.admit(2_001).await, Gate::Wait { .. }),
            "only one probe at a time"
        );
        // Probes keep failing for five minutes: count them, as the service sees them.
        let mut probes = 1;
        let mut now = 2_000;
        while now < 300_000 {
            if breaker.admit(now).await == Gate::Call {
                probes += 1;
                breaker.record_failure(now).await;
            }
            now += 500;
        }
        // Far fewer than one per waiting message.
        assert!((10..=20).contains(&probes), "{probes} probes in 5 minutes");
        // Held messages come back every age / 15, or at the next probe.
        assert_eq!(breaker.current_hold_secs(301_000), Some(20));
        assert!(
            matches!(breaker.admit(300_100).await, Gate::Wait { hold_secs } if hold_secs <= 30)
        );
    }

    #[tokio::test]
    async fn holds_are_capped_by_the_backoff_cap_and_a_success_closes_it() {
        let breaker = breaker(1, 60);
        breaker.record_failure(0).await;
        assert_eq!(breaker.hold_secs(86_400_000), 60);
        assert_eq!(breaker.hold_secs(0), 5);
        assert_eq!(breaker.admit(2_000).await, Gate::Call);
        breaker.record_success(2_000).await;
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(2_001).await, Gate::Call);
    }

    #[tokio::test]
    async fn after_a_failure_one_call_at_a_time_until_it_reports_back() {
        let breaker = breaker(5, 300);
        assert_eq!(breaker.admit(0).await, Gate::Call);
        let first = breaker.admitted();
        assert_eq!(
            breaker.admit(1).await,
            Gate::Call,
            "clean: calls side by side"
        );
        let second = breaker.admitted();
        breaker.record_failure(10).await;
        drop(first);
        assert_eq!(
            breaker.admit(20).await,
            Gate::Pace { hold_secs: 1 },
            "a failure seen and a call still in flight: the rest wait"
        );
        drop(second);
        assert_eq!(breaker.admit(30).await, Gate::Call, "one at a time");
        let third = breaker.admitted();
        assert_eq!(breaker.admit(31).await, Gate::Pace { hold_secs: 1 });
        breaker.record_success(40).await;
        drop(third);
        assert_eq!(breaker.admit(50).await, Gate::Call);
        let _fourth = breaker.admitted();
        assert_eq!(breaker.admit(60).await, Gate::Call, "clean again: no limit");
    }

    #[tokio::test]
    async fn an_abandoned_probe_expires() {
        let breaker = breaker(1, 60);
        breaker.record_failure(0).await;
        assert_eq!(breaker.admit(2_000).await, Gate::Call);
        assert!(matches!(breaker.admit(3_000).await, Gate::Wait { .. }));
        assert_eq!(
            breaker.admit(2_000 + PROBE_TIMEOUT_MS).await,
            Gate::Call,
            "the silent probe is replaced"
        );
    }

    #[tokio::test]
    async fn instances_sharing_a_store_probe_one_at_a_time_and_see_recovery_at_once() {
        let shared = std::sync::Arc::new(LocalBreaker::default());
        struct Shared(std::sync::Arc<LocalBreaker>);
        #[async_trait]
        impl BreakerStore for Shared {
            async fn read(&self) -> Result<BreakerState, StoreError> {
                self.0.read().await
            }
            async fn record_failure(
                &self,
                n: i64,
                t: u32,
                f: i64,
            ) -> Result<BreakerState, StoreError> {
                self.0.record_failure(n, t, f).await
            }
            async fn take_probe(&self, n: i64, u: i64, x: i64) -> Result<bool, StoreError> {
                self.0.take_probe(n, u, x).await
            }
            async fn close(&self) -> Result<(), StoreError> {
                self.0.close().await
            }
        }
        let a = OutageBreaker::new(1, capped(300), Box::new(Shared(shared.clone())));
        let b = OutageBreaker::new(1, capped(300), Box::new(Shared(shared.clone())));
        assert!(a.record_failure(0).await);
        assert!(
            matches!(b.admit(10).await, Gate::Wait { .. }),
            "b sees a's opening"
        );
        assert_eq!(a.admit(2_000).await, Gate::Call);
        assert!(
            matches!(b.admit(2_000).await, Gate::Wait { .. }),
            "one probe overall"
        );
        a.record_success(2_500).await;
        assert_eq!(
            b.admit(2_600).await,
            Gate::Call,
            "recovery seen by b at once"
        );
    }
}

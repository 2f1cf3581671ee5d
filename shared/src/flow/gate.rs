//! The flow gate: decides, for one matched event and one subscription's `flow`, whether
//! it runs now, runs later (and when), or is skipped and why. Every decision is a
//! compare-and-set on the bucket's cell, so concurrent match instances share one count.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Debounce, FlowCell, FlowSpec, FlowStore, Gcra, Mode};
use crate::ids::{EventId, SubscriptionId, WorkspaceId};
use crate::selector::{EventScope, SelectorCache};
use crate::store::StoreError;

/// How often a decision re-reads a cell another instance changed meanwhile.
const SWAP_ATTEMPTS: usize = 16;

/// What flow control makes of one matched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dispatch it; `not_before_ms` when a throttle delays it.
    Run { not_before_ms: Option<i64> },
    /// Do not dispatch it: which mode refused it, why, and (idempotency) which event
    /// holds the key.
    Skip {
        mode: Mode,
        detail: String,
        owner: Option<EventId>,
    },
}

/// What a debounced event finds when its window is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fire {
    /// It is the window's last event: it runs (the window is closed for it).
    Run,
    /// Its window is due later than it was scheduled for: wait until then.
    Wait { until_ms: i64 },
    /// A later event of the key took the window over: this one does not run.
    Debounced { latest: Option<EventId> },
}

/// How long a debounce cell outlives its due time (for redeliveries of its check).
const DEBOUNCE_KEEP_SECS: i64 = 86_400;

/// The event being decided, and where it is decided.
pub struct Subject<'a> {
    pub workspace: &'a WorkspaceId,
    pub subscription: &'a SubscriptionId,
    pub event_id: &'a EventId,
    pub scope: &'a EventScope,
    pub now_ms: i64,
}

pub struct FlowGate {
    store: Arc<dyn FlowStore>,
}

impl FlowGate {
    pub fn new(store: Arc<dyn FlowStore>) -> Self {
        Self { store }
    }

    /// Applies the modes in order: idempotency, rate limit, throttle.
    pub async fn decide(
        &self,
        flow: &FlowSpec,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> Result<Verdict, StoreError> {
        if let Some(mode) = &flow.idempotency {
            let cell = cell_id(subject, Mode::Idempotency, mode.key.as_deref(), cache);
            if let Some(holder) = self.own_key(&cell, subject, mode.period.ms()).await? {
                return Ok(Verdict::Skip {
                    mode: Mode::Idempotency,
                    detail: format!(
                        "event {holder} already took this key within {}",
                        mode.period.as_str()
                    ),
                    owner: EventId::new(holder).ok(),
                });
            }
        }
        if let Some(mode) = &flow.rate_limit {
            let cell = cell_id(subject, Mode::RateLimit, mode.key.as_deref(), cache);
            let rule = Gcra::rate_limit(mode.limit, mode.period.ms());
            if self
                .take_slot(&cell, rule, subject.now_ms, true)
                .await?
                .is_none()
            {
                return Ok(Verdict::Skip {
                    mode: Mode::RateLimit,
                    detail: format!(
                        "more than {} runs within {} for this key",
                        mode.limit,
                        mode.period.as_str()
                    ),
                    owner: None,
                });
            }
        }
        let mut not_before_ms = None;
        if let Some(mode) = &flow.throttle {
            let cell = cell_id(subject, Mode::Throttle, mode.key.as_deref(), cache);
            let rule = Gcra::new(mode.limit, mode.period.ms(), mode.burst.unwrap_or(1));
            let run_at = self.take_slot(&cell, rule, subject.now_ms, false).await?;
            not_before_ms = run_at.filter(|at| *at > subject.now_ms);
        }
        Ok(Verdict::Run { not_before_ms })
    }

    /// The cell of the event's debounce window (where its check looks).
    pub fn debounce_cell(
        &self,
        mode: &Debounce,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> String {
        cell_id(subject, Mode::Debounce, mode.key.as_deref(), cache)
    }

    /// Makes the event its window's latest (opening a window if none is open): when the
    /// window is due, which is when this event's check runs.
    pub async fn debounce(
        &self,
        mode: &Debounce,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> Result<i64, StoreError> {
        let cell_id = self.debounce_cell(mode, subject, cache);
        let now_ms = subject.now_ms;
        for _ in 0..SWAP_ATTEMPTS {
            let current = self.store.load(&cell_id).await?;
            let open = current.as_ref().filter(|c| c.value_ms > 0);
            let since_ms = open.map_or(now_ms, |c| c.since_ms);
            let mut due_ms = now_ms.saturating_add(mode.period.ms());
            if let Some(timeout) = &mode.timeout {
                due_ms = due_ms
                    .min(since_ms.saturating_add(timeout.ms()))
                    .max(now_ms);
            }
            let next = FlowCell {
                value_ms: due_ms,
                owner: Some(subject.event_id.as_str().to_owned()),
                since_ms,
                version: current.as_ref().map_or(1, |c| c.version + 1),
            };
            let expected = current.as_ref().map(|c| c.version);
            let expires_at = due_ms / 1000 + DEBOUNCE_KEEP_SECS;
            if self
                .store
                .swap(&cell_id, &next, expected, expires_at)
                .await?
            {
                return Ok(due_ms);
            }
        }
        Err(contended(&cell_id))
    }

    /// The check of a debounced event at its due time: it runs only if no later event
    /// took the window over, and closing the window for it is a compare-and-set, so an
    /// event entering at the same moment either lands before (and wins) or opens the
    /// next window.
    pub async fn fire(
        &self,
        cell_id: &str,
        event_id: &EventId,
        now_ms: i64,
    ) -> Result<Fire, StoreError> {
        let me = event_id.as_str();
        for _ in 0..SWAP_ATTEMPTS {
            // A cell gone (kept a day past its due time) cannot say otherwise: run.
            let Some(cell) = self.store.load(cell_id).await? else {
                return Ok(Fire::Run);
            };
            if cell.owner.as_deref() != Some(me) {
                let latest = cell.owner.as_deref().and_then(|o| EventId::new(o).ok());
                return Ok(Fire::Debounced { latest });
            }
            if cell.value_ms == 0 {
                return Ok(Fire::Run);
            }
            if cell.value_ms > now_ms.saturating_add(1_000) {
                return Ok(Fire::Wait {
                    until_ms: cell.value_ms,
                });
            }
            let closed = FlowCell {
                value_ms: 0,
                owner: cell.owner.clone(),
                since_ms: cell.since_ms,
                version: cell.version + 1,
            };
            let expires_at = now_ms / 1000 + DEBOUNCE_KEEP_SECS;
            if self
                .store
                .swap(cell_id, &closed, Some(cell.version), expires_at)
                .await?
            {
                return Ok(Fire::Run);
            }
        }
        Err(contended(cell_id))
    }

    /// Takes the key for this event unless another event holds it: the holder, if any.
    async fn own_key(
        &self,
        cell_id: &str,
        subject: &Subject<'_>,
        period_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let me = subject.event_id.as_str();
        for _ in 0..SWAP_ATTEMPTS {
            let current = self.store.load(cell_id).await?;
            if let Some(held) = current
                .as_ref()
                .filter(|c| c.value_ms > subject.now_ms && c.owner.as_deref() != Some(me))
            {
                return Ok(Some(held.owner.clone().unwrap_or_default()));
            }
            if current
                .as_ref()
                .is_some_and(|c| c.owner.as_deref() == Some(me))
            {
                return Ok(None);
            }
            let until_ms = subject.now_ms.saturating_add(period_ms);
            let next = FlowCell {
                value_ms: until_ms,
                owner: Some(me.to_owned()),
                since_ms: 0,
                version: current.as_ref().map_or(1, |c| c.version + 1),
            };
            let expected = current.as_ref().map(|c| c.version);
            if self
                .store
                .swap(cell_id, &next, expected, until_ms / 1000 + 1)
                .await?
            {
                return Ok(None);
            }
        }
        Err(contended(cell_id))
    }

    /// Takes the event's slot in a GCRA bucket: when it may run, or `None` when
    /// `refuse_late` and it may not run now (the bucket is left as it was).
    async fn take_slot(
        &self,
        cell_id: &str,
        rule: Gcra,
        now_ms: i64,
        refuse_late: bool,
    ) -> Result<Option<i64>, StoreError> {
        for _ in 0..SWAP_ATTEMPTS {
            let current = self.store.load(cell_id).await?;
            let slot = rule.slot(current.as_ref().map(|c| c.value_ms), now_ms);
            if refuse_late && slot.run_at_ms > now_ms {
                return Ok(None);
            }
            let next = FlowCell {
                value_ms: slot.next_tat_ms,
                owner: None,
                since_ms: 0,
                version: current.as_ref().map_or(1, |c| c.version + 1),
            };
            let expires_at = rule.keep_until_ms(slot.next_tat_ms) / 1000 + 1;
            let expected = current.as_ref().map(|c| c.version);
            if self
                .store
                .swap(cell_id, &next, expected, expires_at)
                .await?
            {
                return Ok(Some(slot.run_at_ms));
            }
        }
        Err(contended(cell_id))
    }
}

fn contended(cell_id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "flow cell {cell_id} changed {SWAP_ATTEMPTS} times while it was updated; retry"
    ))
}

/// The cell of one mode and key value of a subscription: tenant, subscription and mode
/// are part of the id, the key value is hashed (any size, any characters).
fn cell_id(subject: &Subject<'_>, mode: Mode, key: Option<&str>, cache: &SelectorCache) -> String {
    let value = key.map_or_else(
        || "-".to_owned(),
        |expr| key_hash(expr, subject.scope, cache),
    );
    format!(
        "{}#{}#{}#{value}",
        subject.workspace,
        subject.subscription,
        mode.as_str()
    )
}

/// The key's value as a short hash; a key that does not evaluate (a missing field)
/// counts as `null`, so such events share one bucket rather than escaping the limit.
fn key_hash(expr: &str, scope: &EventScope, cache: &SelectorCache) -> String {
    let value = cache
        .mapping(expr)
        .ok()
        .and_then(|compiled| compiled.evaluate(scope).ok())
        .and_then(|value| value.json().ok())
        .unwrap_or(serde_json::Value::Null);
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

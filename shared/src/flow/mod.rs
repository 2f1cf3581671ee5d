//! Flow control of start subscriptions: the optional `flow` object that shapes a burst
//! of matching events into runs (at most one run per key and period, at most N runs per
//! period with the excess skipped, or at most N per period with the excess delayed in
//! order), with every event's fate recorded in the dedup ledger.

mod gate;
mod gcra;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::selector::CompiledExpr;

pub use gate::{Fire, FlowGate, Joined, Subject, Take, Verdict};
pub use gcra::{Gcra, Slot};

/// The longest period any mode accepts (and so the longest a flow cell lives).
pub const MAX_PERIOD_SECS: u64 = 7 * 86_400;
/// The most runs per period a rate limit or throttle may allow.
pub const MAX_LIMIT: u32 = 10_000;

/// A subscription's flow control; every mode is optional and they compose in the order
/// idempotency → rate limit → throttle (a skipped event takes no throttle slot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowSpec {
    /// At most one run per key value and period; later events of the key are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// At most `limit` runs per period per key; the excess is skipped (`rate_limited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// At most `limit` runs per period per key; the excess is delayed, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// One run per burst: after `period` without a new event of the key, with the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<Debounce>,
    /// At most `limit` runs of the key running at once; the others wait in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// While a run of the key is running (or about to), new events are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<Singleton>,
    /// Scheduled subscriptions: what a tick does while the previous tick's run runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// One run per batch of up to `maxSize` events of the key, or after `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
}

/// The most events a batch (or a debounce window delivering all) hands one run.
pub const MAX_BATCH: u32 = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub max_size: u32,
    /// How long a batch stays open after its first event.
    pub timeout: Period,
}

/// Which events a debounced run gets besides the last one as `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Deliver {
    #[default]
    Last,
    /// Also every event of the window (the latest [`MAX_BATCH`]) as `events`.
    All,
}

/// Where a batch (or a debounce window) keeps its events: the key's cell, and the
/// batch's id (its first event; a debounce window's winner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRef {
    pub cell: String,
    pub batch_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Concurrency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub limit: u32,
    /// How long a slot is held when its run never reports an end (default 1 hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Singleton {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Period>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Overlap {
    /// A tick is skipped while the previous tick's run is still running.
    Skip,
    /// One tick waits for the running one; more are skipped.
    BufferOne,
    /// Every tick runs (the default).
    AllowAll,
}

/// The most runs a concurrency limit may allow at once.
pub const MAX_CONCURRENCY: u32 = 1_000;
/// How long a slot is held without word from its run, unless the mode says otherwise.
pub const DEFAULT_SLOT_TIMEOUT_SECS: u64 = 3_600;

/// What a dispatch message carries to take its slot at dispatch time: the slot cell,
/// how many may hold one, and how long a slot is held without word from its run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slots {
    pub cell: String,
    pub limit: u32,
    pub timeout_ms: i64,
}

/// A slot mode's rule, before the key is known: at most `limit` hold a slot;
/// `max_waiting` events may wait in line (`None`: any number), the rest are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRule<'a> {
    pub key: Option<&'a str>,
    pub limit: u32,
    pub max_waiting: Option<usize>,
    pub timeout_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Debounce {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub period: Period,
    /// The longest a burst may postpone its run, counted from its first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Period>,
    /// `all`: the run also gets every event of the window as `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Deliver>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Idempotency {
    /// CEL over `event.*` whose value names the bucket (absent: one per subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub limit: u32,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throttle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub limit: u32,
    pub period: Period,
    /// Runs that may start back to back before the spacing applies (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// An ISO-8601 duration (`PT10S`, `PT1M`, `P7D`) as written, and its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    text: String,
    secs: u64,
}

impl Period {
    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn secs(&self) -> u64 {
        self.secs
    }

    pub fn ms(&self) -> i64 {
        i64::try_from(self.secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl TryFrom<String> for Period {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match crate::resume::parse_ttl(&text) {
            Some(secs) if (1..=MAX_PERIOD_SECS).contains(&secs) => Ok(Self { text, secs }),
            Some(_) => Err(format!("{text:?} is outside 1 second to 7 days (P7D)")),
            None => Err(format!(
                "{text:?} is not an ISO-8601 duration of the form P[nW][nD][T[nH][nM][nS]]"
            )),
        }
    }
}

impl From<Period> for String {
    fn from(period: Period) -> Self {
        period.text
    }
}

/// Why a `flow` object is not usable (a 422 `trigger.flow_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("flow{}{path}: {reason}", if path.is_empty() { "" } else { "." })]
pub struct FlowError {
    pub path: String,
    pub reason: String,
}

fn invalid(path: &str, reason: impl Into<String>) -> FlowError {
    FlowError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl FlowSpec {
    /// Reads and checks an authored `flow` object (keys compile, limits in range).
    pub fn parse(value: &serde_json::Value) -> Result<Self, FlowError> {
        let spec: FlowSpec =
            serde_json::from_value(value.clone()).map_err(|e| invalid("", e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// No mode set: the same as no `flow` at all.
    pub fn is_empty(&self) -> bool {
        self.idempotency.is_none()
            && self.rate_limit.is_none()
            && self.throttle.is_none()
            && self.debounce.is_none()
            && self.batch.is_none()
            && self.slot_rule().is_none()
    }

    /// The slot mode, if any (at most one is allowed).
    pub fn slot_rule(&self) -> Option<SlotRule<'_>> {
        let timeout = |t: &Option<Period>| {
            t.as_ref().map_or(
                i64::try_from(DEFAULT_SLOT_TIMEOUT_SECS * 1000).unwrap_or(i64::MAX),
                Period::ms,
            )
        };
        if let Some(mode) = &self.concurrency {
            return Some(SlotRule {
                key: mode.key.as_deref(),
                limit: mode.limit,
                max_waiting: None,
                timeout_ms: timeout(&mode.timeout),
            });
        }
        if let Some(mode) = &self.singleton {
            return Some(SlotRule {
                key: mode.key.as_deref(),
                limit: 1,
                max_waiting: Some(0),
                timeout_ms: timeout(&mode.timeout),
            });
        }
        let max_waiting = match self.overlap? {
            Overlap::Skip => 0,
            Overlap::BufferOne => 1,
            Overlap::AllowAll => return None,
        };
        Some(SlotRule {
            key: None,
            limit: 1,
            max_waiting: Some(max_waiting),
            timeout_ms: timeout(&None),
        })
    }

    fn check(&self) -> Result<(), FlowError> {
        if let Some(mode) = &self.idempotency {
            check_key("idempotency.key", mode.key.as_deref())?;
        }
        if let Some(mode) = &self.rate_limit {
            check_key("rateLimit.key", mode.key.as_deref())?;
            check_limit("rateLimit.limit", mode.limit)?;
        }
        if let Some(mode) = &self.throttle {
            check_key("throttle.key", mode.key.as_deref())?;
            check_limit("throttle.limit", mode.limit)?;
            if let Some(burst) = mode.burst {
                check_limit("throttle.burst", burst)?;
            }
        }
        if let Some(mode) = &self.concurrency {
            check_key("concurrency.key", mode.key.as_deref())?;
            if !(1..=MAX_CONCURRENCY).contains(&mode.limit) {
                return Err(invalid(
                    "concurrency.limit",
                    format!("must be 1 to {MAX_CONCURRENCY}, not {}", mode.limit),
                ));
            }
        }
        if let Some(mode) = &self.singleton {
            check_key("singleton.key", mode.key.as_deref())?;
        }
        let slot_modes = [
            self.concurrency.is_some(),
            self.singleton.is_some(),
            self.overlap.is_some(),
        ];
        if slot_modes.iter().filter(|set| **set).count() > 1 {
            return Err(invalid(
                "",
                "concurrency, singleton and overlap are one mode each: set at most one",
            ));
        }
        if slot_modes.contains(&true) && (self.throttle.is_some() || self.debounce.is_some()) {
            return Err(invalid(
                "",
                "concurrency, singleton and overlap cannot be combined with throttle or debounce",
            ));
        }
        if let Some(mode) = &self.batch {
            check_key("batch.key", mode.key.as_deref())?;
            if !(1..=MAX_BATCH).contains(&mode.max_size) {
                return Err(invalid(
                    "batch.maxSize",
                    format!("must be 1 to {MAX_BATCH}, not {}", mode.max_size),
                ));
            }
            let others = FlowSpec {
                batch: None,
                ..self.clone()
            };
            if !others.is_empty() {
                return Err(invalid("batch", "cannot be combined with other modes"));
            }
        }
        if let Some(mode) = &self.debounce {
            check_key("debounce.key", mode.key.as_deref())?;
            if self.idempotency.is_some() || self.rate_limit.is_some() || self.throttle.is_some() {
                return Err(invalid(
                    "debounce",
                    "cannot be combined with idempotency, rateLimit or throttle",
                ));
            }
        }
        Ok(())
    }
}

fn check_key(path: &str, key: Option<&str>) -> Result<(), FlowError> {
    let Some(expr) = key else {
        return Ok(());
    };
    if expr.trim().is_empty() {
        return Err(invalid(
            path,
            "must not be blank (leave it out for one bucket)",
        ));
    }
    CompiledExpr::mapping(expr)
        .map(|_| ())
        .map_err(|e| invalid(path, e.to_string()))
}

fn check_limit(path: &str, limit: u32) -> Result<(), FlowError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("must be 1 to {MAX_LIMIT}, not {limit}"),
        ))
    }
}

/// Which mode a flow cell belongs to (part of its id, so modes never share a cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Idempotency,
    RateLimit,
    Throttle,
    Debounce,
    Slots,
    Batch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Idempotency => "idempotency",
            Mode::RateLimit => "rateLimit",
            Mode::Throttle => "throttle",
            Mode::Debounce => "debounce",
            Mode::Slots => "slots",
            Mode::Batch => "batch",
        }
    }
}

/// One piece of flow state: a GCRA's theoretical arrival time, the event that owns an
/// idempotency key until `value_ms`, or a debounce window's latest event, when it is due
/// (`value_ms`, 0 once it fired) and when it opened (`since_ms`). `version` makes every
/// write a compare-and-set.
///
/// Concurrency slots use `holders` (event → until when its slot is held without a word
/// from its run), `waiting` (events in arrival order) and `since_ms` (since when the
/// head of the line is the head or a slot is free); a run's cell links its run id to
/// the slot cell (`link`) and its event (`owner`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowCell {
    pub value_ms: i64,
    pub owner: Option<String>,
    pub since_ms: i64,
    pub holders: std::collections::BTreeMap<String, i64>,
    pub waiting: Vec<String>,
    pub link: Option<String>,
    pub version: u64,
}

/// The port that keeps flow cells: read, and write only over the version read (`None`:
/// the cell must not exist yet). Cells expire by themselves after `expires_at` (secs).
#[async_trait::async_trait]
pub trait FlowStore: Send + Sync {
    async fn load(&self, cell_id: &str) -> Result<Option<FlowCell>, crate::store::StoreError>;

    /// `false` when another writer got there first (the caller re-reads).
    async fn swap(
        &self,
        cell_id: &str,
        cell: &FlowCell,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, crate::store::StoreError>;

    /// Two such writes that happen together or not at all (a batch and the membership
    /// of the event joining it): `false` when either cell was not as read.
    async fn swap_pair(
        &self,
        first: CellWrite<'_>,
        second: CellWrite<'_>,
    ) -> Result<bool, crate::store::StoreError>;
}

/// One conditional write of [`FlowStore::swap_pair`].
#[derive(Debug, Clone, Copy)]
pub struct CellWrite<'a> {
    pub cell_id: &'a str,
    pub cell: &'a FlowCell,
    /// The version read (`None`: the cell must not exist yet).
    pub expected: Option<u64>,
    pub expires_at: i64,
}

#[cfg(test)]
mod tests;

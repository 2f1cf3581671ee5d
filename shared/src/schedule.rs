//! Schedules: when a `scheduled` subscription fires. A cron expression in an IANA time
//! zone (`cron`: our own rules, [`crate::zone`] for the zones) or a fixed rate, the
//! catch-up policy for ticks the scheduler missed. What a scheduled *subscription*
//! does with them (its ticks, the due index) is in [`crate::scheduled`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;

use crate::zone::Zone;

/// The shortest rate: the scheduler runs once a minute.
pub const MIN_RATE_MS: i64 = 60_000;
/// The longest rate (a year); longer intervals are a cron expression's job.
pub const MAX_RATE_MS: i64 = 366 * 86_400_000;
/// Ticks `catchUp: "all"` emits at most for one subscription in one scheduler run (the
/// latest ones); older missed instants are dropped, and logged.
pub const MAX_CATCH_UP_TICKS: usize = 60;
/// How late a tick may be and still fire under `catchUp: "none"`: the scheduler's own
/// one-minute cadence plus a minute of slack.
pub const ON_TIME_MS: i64 = 120_000;

/// What a `scheduled` subscription carries (`schedule` in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields (minute hour day-of-month month day-of-week), names and `@daily`-style
    /// nicknames allowed; exclusive with `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `"<n> minute(s)|hour(s)|day(s)"`, at least one minute; exclusive with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// IANA zone of the cron expression (default UTC); a rate ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub catch_up: CatchUp,
}

/// What becomes of instants the scheduler missed (paused, throttled, failing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Only a tick that is on time (at most [`ON_TIME_MS`] late) fires.
    None,
    /// The most recent missed instant fires once.
    #[default]
    Latest,
    /// Every missed instant fires, up to [`MAX_CATCH_UP_TICKS`] (the latest ones).
    All,
}

/// Why a schedule is refused (`422 trigger.schedule_invalid`, with this as the detail).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error("give exactly one of schedule.cron and schedule.rate")]
    CronOrRate,
    #[error("schedule.cron {expression:?} is not a five-field cron expression: {reason}")]
    Cron { expression: String, reason: String },
    #[error("schedule.timezone {0:?} is not an IANA time zone (like Europe/Berlin or UTC)")]
    TimeZone(String),
    #[error("schedule.rate {0:?} is not \"<n> minutes|hours|days\"")]
    Rate(String),
    #[error("schedule.rate {0:?} is shorter than one minute or longer than a year")]
    RateRange(String),
    #[error("schedule.cron {0:?} never fires")]
    Never(String),
}

/// A validated schedule, ready to compute fire times.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: CronExpr,
        zone: Zone,
    },
    /// Instants at whole multiples of the period since the Unix epoch (UTC).
    Rate {
        period_ms: i64,
    },
}

impl Schedule {
    pub fn compile(spec: &ScheduleSpec) -> Result<Self, ScheduleError> {
        match (&spec.cron, &spec.rate) {
            (Some(expression), None) => {
                let zone = match spec.timezone.as_deref() {
                    None => Zone::utc(),
                    Some(name) => {
                        Zone::named(name).ok_or_else(|| ScheduleError::TimeZone(name.to_owned()))?
                    }
                };
                let cron = CronExpr::parse(expression).map_err(|reason| ScheduleError::Cron {
                    expression: expression.clone(),
                    reason,
                })?;
                let schedule = Schedule::Cron { cron, zone };
                // A pattern such as `0 0 31 2 *` parses but has no instant at all.
                schedule
                    .next_after(0)
                    .ok_or_else(|| ScheduleError::Never(expression.clone()))?;
                Ok(schedule)
            }
            (None, Some(rate)) => Ok(Schedule::Rate {
                period_ms: parse_rate(rate)?,
            }),
            _ => Err(ScheduleError::CronOrRate),
        }
    }

    /// The first fire instant strictly after `after_ms` (epoch ms), if there is one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Rate { period_ms } => after_ms
                .div_euclid(*period_ms)
                .checked_add(1)?
                .checked_mul(*period_ms),
            Schedule::Cron { cron, zone } => cron.next_after(after_ms, zone),
        }
    }

    /// The next `count` fire instants after `after_ms`.
    pub fn upcoming(&self, after_ms: i64, count: usize) -> Vec<i64> {
        let mut instants = Vec::with_capacity(count);
        let mut cursor = after_ms;
        while instants.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            instants.push(next);
            cursor = next;
        }
        instants
    }

    /// The zone instants are shown in (UTC for rates).
    pub fn zone(&self) -> Zone {
        match self {
            Schedule::Cron { zone, .. } => zone.clone(),
            Schedule::Rate { .. } => Zone::utc(),
        }
    }

    /// The latest fire instant at or before `at_ms`, if there is one.
    fn latest_at_or_before(&self, at_ms: i64) -> Option<i64> {
        match self {
            Schedule::Rate { period_ms } => at_ms.div_euclid(*period_ms).checked_mul(*period_ms),
            Schedule::Cron { cron, zone } => cron.latest_at_or_before(at_ms, zone),
        }
    }

    /// The instants due at `now_ms` for a schedule whose earliest unfired instant is
    /// `next_fire_ms`, under `catch_up`, and the earliest instant after `now_ms` (the
    /// next `next_fire_ms`). Walks back from now, so a schedule paused for a year costs
    /// at most [`MAX_CATCH_UP_TICKS`] steps, not one per missed instant.
    pub fn due(&self, next_fire_ms: i64, now_ms: i64, catch_up: CatchUp) -> Due {
        if next_fire_ms > now_ms {
            return Due {
                fire: Vec::new(),
                next_fire_ms,
                truncated: false,
            };
        }
        let wanted = match catch_up {
            CatchUp::All => MAX_CATCH_UP_TICKS,
            CatchUp::Latest | CatchUp::None => 1,
        };
        let mut fire = Vec::new();
        let mut cursor = now_ms;
        while let Some(instant) = self.latest_at_or_before(cursor) {
            if instant < next_fire_ms || fire.len() == wanted {
                break;
            }
            fire.push(instant);
            cursor = instant - 1;
        }
        // More missed instants than `all` may fire: the oldest are left out.
        let truncated = catch_up == CatchUp::All
            && fire.len() == wanted
            && self
                .latest_at_or_before(cursor)
                .is_some_and(|older| older >= next_fire_ms);
        fire.reverse();
        if catch_up == CatchUp::None {
            fire.retain(|instant| now_ms - instant <= ON_TIME_MS);
        }
        Due {
            fire,
            next_fire_ms: self.next_after(now_ms).unwrap_or(i64::MAX),
            truncated,
        }
    }
}

/// What one scheduler run does for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Scheduled instants to emit a tick for, oldest first.
    pub fire: Vec<i64>,
    /// The earliest instant after now (`i64::MAX`: never again).
    pub next_fire_ms: i64,
    /// `catchUp: "all"` left older missed instants out (more than
    /// [`MAX_CATCH_UP_TICKS`] were missed).
    pub truncated: bool,
}

/// `"5 minutes"`, `"1 hour"`, `"2 days"` (EventBridge's rate units, singular or plural).
fn parse_rate(rate: &str) -> Result<i64, ScheduleError> {
    let invalid = || ScheduleError::Rate(rate.to_owned());
    let (count, unit) = rate.trim().split_once(' ').ok_or_else(invalid)?;
    let count: i64 = count.parse().map_err(|_| invalid())?;
    let unit_ms = match unit.trim() {
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => return Err(invalid()),
    };
    count
        .checked_mul(unit_ms)
        .filter(|ms| (MIN_RATE_MS..=MAX_RATE_MS).contains(ms))
        .ok_or_else(|| ScheduleError::RateRange(rate.to_owned()))
}

/// A schedule's fire times as the preview route shows them.
pub fn preview(schedule: &Schedule, after_ms: i64, count: usize) -> Value {
    let zone = schedule.zone();
    let items: Vec<Value> = schedule
        .upcoming(after_ms, count)
        .into_iter()
        .map(|ms| json!({"utc": crate::instant::rfc3339(ms), "local": crate::instant::zoned(ms, &zone)}))
        .collect();
    json!({ "timezone": zone.name(), "fireTimes": items })
}

pub mod cron;
#[cfg(test)]
mod tests;

pub use cron::CronExpr;

/// Shards of the due index: one workspace with many schedules spreads over all of them,
/// so no partition key gets hot.
pub const SHARDS: u32 = 16;

/// The shard of a subscription in the due index.
pub fn shard_of(subscription_id: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(subscription_id.as_bytes());
    u32::from(digest[0]) % SHARDS
}

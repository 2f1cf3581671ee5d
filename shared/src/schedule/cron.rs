//! Five-field cron expressions and their fire instants in an IANA zone, with one written
//! set of rules (README "Schedules") rather than whatever a library happens to do:
//!
//! - Fields: minute, hour, day of month, month, day of week; items are `*`, `n`, `a-b`,
//!   each optionally `/step`, separated by commas. Month names (`JAN`) only in the month
//!   field, day names (`MON`) only in the day-of-week field; 0 and 7 are Sunday.
//!   Nicknames: `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
//! - Day of month and day of week: when both are restricted (neither starts with `*`),
//!   a day matches if either does (Vixie cron and POSIX); otherwise both must.
//! - Daylight saving, as Vixie cron: a *fixed-time* expression (neither the minute nor
//!   the hour field starts with `*`) fires a skipped wall-clock time once at the end of
//!   the gap and a repeated one once, at its first occurrence; a *wildcard* expression
//!   (`*/15 1 * * *`, `0 * * * *`) fires on both passes of a repeated time and has
//!   nothing in a gap.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::zone::Zone;

/// A parsed expression: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    /// Bit 0 = Sunday.
    days_of_week: u8,
    /// Day of month and day of week both restricted: a day matches on either.
    either_day: bool,
    /// The minute or hour field starts with `*` (the daylight-saving rules differ).
    wildcard_time: bool,
}

/// How far ahead (or back) a search looks before calling an expression never-firing:
/// beyond any leap-day pattern (`0 0 29 2 *` may wait eight years across 2100).
const SEARCH_DAYS: i64 = 366 * 9;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's rules: its name (for errors), its range and the names it accepts.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this value.
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_from: 1,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAY_NAMES,
        names_from: 0,
    },
];

impl CronExpr {
    /// Parses an expression; the error names the field and what is wrong with it.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let text = expression.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("{text:?} is not a known nickname (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"))
            }
            _ => text,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "expected five fields (minute hour day-of-month month day-of-week), got {}",
                parts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            sets[i] = parse_field(part, field)?;
        }
        // 7 is Sunday too.
        let days_of_week = (sets[4] | (sets[4] >> 7)) & 0x7f;
        let starred = |i: usize| parts[i].starts_with('*');
        Ok(Self {
            minutes: sets[0],
            hours: u32::try_from(sets[1]).unwrap_or(0),
            days_of_month: u32::try_from(sets[2]).unwrap_or(0),
            months: u16::try_from(sets[3]).unwrap_or(0),
            days_of_week: u8::try_from(days_of_week).unwrap_or(0),
            either_day: !starred(2) && !starred(4),
            wildcard_time: starred(0) || starred(1),
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The wall-clock times of a matching day from `from` on, in order.
    fn times_from(&self, from: NaiveTime) -> impl Iterator<Item = NaiveTime> + '_ {
        let (first_hour, first_minute) = (from.hour(), from.minute());
        (first_hour..24)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                let start = if h == first_hour { first_minute } else { 0 };
                (start..60)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .filter_map(move |m| NaiveTime::from_hms_opt(h, m, 0))
            })
    }

    /// The wall-clock times of a matching day up to `until`, latest first.
    fn times_until(&self, until: NaiveTime) -> impl Iterator<Item = NaiveTime> + '_ {
        let (last_hour, last_minute) = (until.hour(), until.minute());
        (0..=last_hour)
            .rev()
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                let end = if h == last_hour { last_minute } else { 59 };
                (0..=end)
                    .rev()
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .filter_map(move |m| NaiveTime::from_hms_opt(h, m, 0))
            })
    }

    /// The instants one wall-clock time of `zone` fires at, per the daylight-saving
    /// rules: none, one, or (a wildcard time repeated by a fall-back) two, in order.
    fn instants(&self, local: NaiveDateTime, zone: &Zone) -> [Option<i64>; 2] {
        match zone.instants(local) {
            LocalResult::Single(t) => [Some(t), None],
            LocalResult::Ambiguous(first, second) if self.wildcard_time => {
                [Some(first), Some(second)]
            }
            LocalResult::Ambiguous(first, _) => [Some(first), None],
            LocalResult::None if self.wildcard_time => [None, None],
            LocalResult::None => [gap_end(local, zone), None],
        }
    }

    /// The first instant strictly after `after_ms`. Walks wall-clock times in order
    /// from a little before `after_ms`: a time's first instant never precedes an earlier
    /// time's, so a day's walk ends at the first time past the best found, and one more
    /// day settles what a gap at midnight could reorder.
    pub fn next_after(&self, after_ms: i64, zone: &Zone) -> Option<i64> {
        let local_after = zone.local(after_ms)?;
        let earliest = local_after.checked_sub_signed(slack(after_ms, zone)?)?;
        let mut best: Option<i64> = None;
        let mut date = earliest.date();
        let mut from = earliest.time();
        for _ in 0..SEARCH_DAYS {
            // A later day can only matter when its first instant comes before the best
            // (a gap's end carried past midnight).
            if let Some(b) = best {
                if self.first_of(date, zone).is_none_or(|first| first >= b) {
                    return best;
                }
            }
            if self.day_matches(date) {
                for time in self.times_from(from) {
                    let [first, second] = self.instants(date.and_time(time), zone);
                    let Some(first) = first else { continue };
                    if best.is_some_and(|b| first >= b) {
                        break;
                    }
                    best = [Some(first), second]
                        .into_iter()
                        .flatten()
                        .filter(|ms| *ms > after_ms)
                        .chain(best)
                        .min();
                }
            }
            from = NaiveTime::MIN;
            date = date.succ_opt()?;
        }
        best
    }

    /// The first instant of a matching day (for the look one day further).
    fn first_of(&self, date: NaiveDate, zone: &Zone) -> Option<i64> {
        if !self.day_matches(date) {
            return None;
        }
        self.times_from(NaiveTime::MIN)
            .find_map(|time| self.instants(date.and_time(time), zone)[0])
    }

    /// The last instant of a matching day.
    fn last_of(&self, date: NaiveDate, zone: &Zone) -> Option<i64> {
        if !self.day_matches(date) {
            return None;
        }
        self.times_until(LAST_MINUTE).find_map(|time| {
            let [first, second] = self.instants(date.and_time(time), zone);
            second.or(first)
        })
    }

    /// The latest instant at or before `at_ms` (the walk of [`Self::next_after`], mirrored).
    pub fn latest_at_or_before(&self, at_ms: i64, zone: &Zone) -> Option<i64> {
        let local_at = zone.local(at_ms)?;
        let latest = local_at.checked_add_signed(slack(at_ms, zone)?)?;
        let mut best: Option<i64> = None;
        let mut date = latest.date();
        let mut until = latest.time();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                for time in self.times_until(until) {
                    let [first, second] = self.instants(date.and_time(time), zone);
                    let Some(last) = second.or(first) else {
                        continue;
                    };
                    if best.is_some_and(|b| last <= b) {
                        break;
                    }
                    best = [first, second]
                        .into_iter()
                        .flatten()
                        .filter(|ms| *ms <= at_ms)
                        .chain(best)
                        .max();
                }
            }
            until = LAST_MINUTE;
            date = date.pred_opt()?;
            if let Some(b) = best {
                if self.last_of(date, zone).is_none_or(|last| last <= b) {
                    return best;
                }
            }
        }
        best
    }
}

/// How far a wall clock can be from the instant's other readings around a change.
const DST_SLACK_HOURS: i64 = 4;

const LAST_MINUTE: NaiveTime = match NaiveTime::from_hms_opt(23, 59, 0) {
    Some(t) => t,
    None => NaiveTime::MIN,
};

/// How much earlier (or later) than an instant's own wall-clock reading the walk must
/// start: nothing away from an offset change, a few hours near one (a repeated hour's
/// second pass, a gap's end).
fn slack(ms: i64, zone: &Zone) -> Option<Duration> {
    let window = DST_SLACK_HOURS * 3_600_000;
    let offset = |at: i64| zone.offset_secs(at);
    let near_change = offset(ms.checked_sub(window)?)? != offset(ms.checked_add(window)?)?;
    Some(if near_change {
        Duration::hours(DST_SLACK_HOURS)
    } else {
        Duration::zero()
    })
}

/// The first instant after a gap that swallowed `local`: the first wall-clock minute
/// after it that exists (gaps are at most a few hours).
fn gap_end(local: NaiveDateTime, zone: &Zone) -> Option<i64> {
    (1..=24 * 60).find_map(|minutes| {
        let candidate = local.checked_add_signed(Duration::minutes(minutes))?;
        // Whole minutes from the top of the minute: a gap ends on one.
        match zone.instants(candidate) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
            LocalResult::None => None,
        }
    })
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let bad = |why: String| format!("{} field {text:?}: {why}", field.name);
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(bad("an empty list item".to_owned()));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("step {step:?} is not a positive number")))?;
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                value(a, field).map_err(&bad)?,
                value(b, field).map_err(&bad)?,
            );
            if a > b {
                return Err(bad(format!("range {range:?} runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range, field).map_err(&bad)?;
            // `a/step` runs from a to the end of the field.
            (a, if step.is_some() { field.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

/// One value: a number in the field's range, or one of the field's names.
fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        if (field.min..=field.max).contains(&n) {
            return Ok(n);
        }
        return Err(format!("{n} is outside {}-{}", field.min, field.max));
    }
    let upper = text.to_ascii_uppercase();
    match field.names.iter().position(|name| *name == upper) {
        Some(i) => Ok(field.names_from + u32::try_from(i).unwrap_or(0)),
        None if field.names.is_empty() => Err(format!("{text:?} is not a number")),
        None => Err(format!(
            "{text:?} is neither a number nor one of {}",
            field.names.join(" ")
        )),
    }
}

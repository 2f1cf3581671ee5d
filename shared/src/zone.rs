//! IANA time zones, for cron schedules and the instants shown in them. The rules come
//! from jiff's bundled database (the compiled zone files, 0.2 MB, read on first use)
//! rather than chrono-tz, whose tables of static structs cost every function that can
//! reach a schedule ~1.4 MB of relocated data; the questions a schedule asks are
//! answered in chrono's civil types, which the cron rules walk.

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, Timelike};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

/// A time zone a schedule's wall-clock times are read in.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone(TimeZone);

impl Zone {
    pub fn utc() -> Self {
        Self(TimeZone::UTC)
    }

    /// The zone of an IANA name (`Europe/Berlin`, `UTC`, links such as `US/Eastern`),
    /// spelled exactly as the database spells it: `europe/berlin` is not a zone.
    pub fn named(name: &str) -> Option<Self> {
        let zone = TimeZone::get(name).ok()?;
        (zone.iana_name() == Some(name)).then_some(Self(zone))
    }

    /// Its IANA name (`UTC` for [`Zone::utc`]).
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("UTC")
    }

    /// Seconds east of UTC at the instant `ms`; none outside the years -9999..=9999.
    pub fn offset_secs(&self, ms: i64) -> Option<i32> {
        let at = jiff::Timestamp::from_millisecond(ms).ok()?;
        Some(self.0.to_offset(at).seconds())
    }

    /// The wall-clock reading at the instant `ms`.
    pub fn local(&self, ms: i64) -> Option<NaiveDateTime> {
        let shifted = ms.checked_add(i64::from(self.offset_secs(ms)?) * 1000)?;
        DateTime::from_timestamp_millis(shifted).map(|t| t.naive_utc())
    }

    /// The instants (epoch ms) a wall-clock reading names: one; two, in order, in a
    /// repeated hour; none in a gap (or outside the years -9999..=9999).
    pub fn instants(&self, local: NaiveDateTime) -> LocalResult<i64> {
        let Some(civil) = civil(local) else {
            return LocalResult::None;
        };
        let naive_ms = local.and_utc().timestamp_millis();
        let at = |offset: Offset| naive_ms - i64::from(offset.seconds()) * 1000;
        match self.0.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => LocalResult::Single(at(offset)),
            // Before a fall-back the offset is the larger one: its instant comes first.
            AmbiguousOffset::Fold { before, after } => {
                LocalResult::Ambiguous(at(before), at(after))
            }
            AmbiguousOffset::Gap { .. } => LocalResult::None,
        }
    }
}

fn civil(local: NaiveDateTime) -> Option<jiff::civil::DateTime> {
    let small = |n: u32| i8::try_from(n).ok();
    jiff::civil::DateTime::new(
        i16::try_from(local.year()).ok()?,
        small(local.month())?,
        small(local.day())?,
        small(local.hour())?,
        small(local.minute())?,
        small(local.second())?,
        i32::try_from(local.nanosecond()).ok()?,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|date| date.and_hms_opt(h, min, 0))
            .unwrap()
    }

    #[test]
    fn names_are_the_database_spelling() {
        assert_eq!(
            Zone::named("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(Zone::named("US/Eastern").unwrap().name(), "US/Eastern");
        assert_eq!(Zone::named("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::utc().name(), "UTC");
        assert_eq!(Zone::named("europe/berlin"), None);
        assert_eq!(Zone::named("Mars/Olympus_Mons"), None);
        assert_eq!(Zone::named(""), None);
    }

    #[test]
    fn wall_clock_times_name_one_two_or_no_instants() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let ms = |t: NaiveDateTime| t.and_utc().timestamp_millis();
        // Winter: +01:00.
        assert_eq!(
            berlin.instants(at(2027, 1, 10, 12, 0)),
            LocalResult::Single(ms(at(2027, 1, 10, 11, 0)))
        );
        // 2027-03-28 02:30 is skipped (02:00 -> 03:00).
        assert_eq!(berlin.instants(at(2027, 3, 28, 2, 30)), LocalResult::None);
        // 2027-10-31 02:30 happens twice: at +02:00, then at +01:00.
        assert_eq!(
            berlin.instants(at(2027, 10, 31, 2, 30)),
            LocalResult::Ambiguous(ms(at(2027, 10, 31, 0, 30)), ms(at(2027, 10, 31, 1, 30)))
        );
        assert_eq!(berlin.instants(at(10_000, 1, 1, 0, 0)), LocalResult::None);
    }

    #[test]
    fn instants_read_back_as_the_wall_clock_and_its_offset() {
        let kolkata = Zone::named("Asia/Kolkata").unwrap();
        let noon_utc = at(2027, 6, 1, 12, 0).and_utc().timestamp_millis();
        assert_eq!(kolkata.offset_secs(noon_utc), Some(19_800));
        assert_eq!(kolkata.local(noon_utc), Some(at(2027, 6, 1, 17, 30)));
        assert_eq!(Zone::utc().local(noon_utc), Some(at(2027, 6, 1, 12, 0)));
        assert_eq!(kolkata.offset_secs(i64::MAX), None);
    }
}

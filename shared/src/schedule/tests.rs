//! Fire times with a time-travel clock (instants given explicitly): cron in zones, rates,
//! both daylight-saving changes of a year, catch-up policies, tick identity.

use super::*;
use crate::event::SourceType;
use crate::scheduled::tick;
use crate::subscription::Subscription;

fn at(text: &str) -> i64 {
    crate::instant::parse_ms(text).unwrap()
}

fn berlin() -> Zone {
    Zone::named("Europe/Berlin").unwrap()
}

fn cron(expression: &str, zone: Option<&str>) -> Schedule {
    Schedule::compile(&ScheduleSpec {
        cron: Some(expression.to_owned()),
        rate: None,
        timezone: zone.map(str::to_owned),
        catch_up: CatchUp::Latest,
    })
    .unwrap()
}

fn rate(text: &str) -> Result<Schedule, ScheduleError> {
    Schedule::compile(&ScheduleSpec {
        cron: None,
        rate: Some(text.to_owned()),
        timezone: None,
        catch_up: CatchUp::Latest,
    })
}

fn utc(instants: &[i64]) -> Vec<String> {
    instants
        .iter()
        .map(|ms| crate::instant::rfc3339(*ms))
        .collect()
}

#[test]
fn weekday_mornings_in_berlin_follow_the_zone_offset() {
    let schedule = cron("0 9 * * MON-FRI", Some("Europe/Berlin"));
    // Friday 2026-11-27 10:00 UTC is 11:00 in Berlin (CET, +1): next is Monday 08:00 UTC.
    let next = schedule.upcoming(at("2026-11-27T10:00:00Z"), 3);
    assert_eq!(
        utc(&next),
        [
            "2026-11-30T08:00:00.000Z",
            "2026-12-01T08:00:00.000Z",
            "2026-12-02T08:00:00.000Z"
        ]
    );
    // In summer (CEST, +2) the same wall clock time is 07:00 UTC.
    let summer = schedule.next_after(at("2026-07-01T12:00:00Z")).unwrap();
    assert_eq!(crate::instant::rfc3339(summer), "2026-07-02T07:00:00.000Z");
    assert_eq!(
        crate::instant::zoned(summer, &berlin()),
        "2026-07-02T09:00:00.000+02:00"
    );
}

#[test]
fn spring_forward_a_skipped_wall_clock_time_fires_right_after_the_gap() {
    // Berlin skips 02:00-03:00 local on 2026-03-29 (01:00 UTC).
    let daily = cron("30 2 * * *", Some("Europe/Berlin"));
    let next = daily.upcoming(at("2026-03-27T12:00:00Z"), 3);
    assert_eq!(
        utc(&next),
        [
            "2026-03-28T01:30:00.000Z", // 02:30 CET
            "2026-03-29T01:00:00.000Z", // 02:30 does not exist: 03:00 CEST, the gap's end
            "2026-03-30T00:30:00.000Z", // 02:30 CEST
        ]
    );
    // An interval job has nothing to fire inside the gap: hourly goes 01:00 -> 03:00.
    let hourly = cron("0 * * * *", Some("Europe/Berlin"));
    let next = hourly.upcoming(at("2026-03-28T23:30:00Z"), 3);
    assert_eq!(
        next.iter()
            .map(|ms| crate::instant::zoned(*ms, &berlin()))
            .collect::<Vec<_>>(),
        [
            "2026-03-29T01:00:00.000+01:00",
            "2026-03-29T03:00:00.000+02:00",
            "2026-03-29T04:00:00.000+02:00"
        ]
    );
}

#[test]
fn fall_back_a_repeated_wall_clock_time_fires_once_but_an_interval_runs_on_both() {
    // Berlin repeats 02:00-03:00 local on 2026-10-25 (CEST 00:00-01:00 UTC, CET 01:00-02:00 UTC).
    let daily = cron("30 2 * * *", Some("Europe/Berlin"));
    let next = daily.upcoming(at("2026-10-24T12:00:00Z"), 2);
    assert_eq!(
        utc(&next),
        ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"],
        "the earlier 02:30 only"
    );
    let hourly = cron("0 * * * *", Some("Europe/Berlin"));
    let next = hourly.upcoming(at("2026-10-24T23:30:00Z"), 4);
    assert_eq!(
        utc(&next),
        [
            "2026-10-25T00:00:00.000Z", // 02:00 CEST
            "2026-10-25T01:00:00.000Z", // 02:00 CET, the repeat
            "2026-10-25T02:00:00.000Z", // 03:00 CET
            "2026-10-25T03:00:00.000Z",
        ]
    );
}

#[test]
fn rates_fire_on_whole_multiples_of_their_period() {
    let every_five = rate("5 minutes").unwrap();
    let next = every_five.upcoming(at("2026-11-27T10:02:10Z"), 2);
    assert_eq!(
        utc(&next),
        ["2026-11-27T10:05:00.000Z", "2026-11-27T10:10:00.000Z"]
    );
    assert!(rate("1 minute").is_ok() && rate("2 hours").is_ok() && rate("1 day").is_ok());
    assert_eq!(
        rate("30 seconds").unwrap_err(),
        ScheduleError::Rate("30 seconds".into())
    );
    assert_eq!(
        rate("0 minutes").unwrap_err(),
        ScheduleError::RateRange("0 minutes".into())
    );
    assert!(matches!(
        rate("-5 minutes"),
        Err(ScheduleError::RateRange(_))
    ));
    assert!(matches!(rate("500 days"), Err(ScheduleError::RateRange(_))));
    assert!(matches!(
        rate("99999999999999999999 days"),
        Err(ScheduleError::Rate(_))
    ));
    assert!(matches!(rate("5minutes"), Err(ScheduleError::Rate(_))));
}

#[test]
fn bad_expressions_zones_and_shapes_are_refused_with_what_is_wrong() {
    let spec = |cron: Option<&str>, rate: Option<&str>, zone: Option<&str>| ScheduleSpec {
        cron: cron.map(str::to_owned),
        rate: rate.map(str::to_owned),
        timezone: zone.map(str::to_owned),
        catch_up: CatchUp::All,
    };
    let refused = |s: ScheduleSpec| Schedule::compile(&s).unwrap_err();
    assert!(matches!(
        refused(spec(Some("61 * * * *"), None, None)),
        ScheduleError::Cron { .. }
    ));
    assert!(matches!(
        refused(spec(Some("* * * *"), None, None)),
        ScheduleError::Cron { .. }
    ));
    assert!(
        matches!(
            refused(spec(Some("0 * * * * *"), None, None)),
            ScheduleError::Cron { .. }
        ),
        "no seconds field: the scheduler runs once a minute"
    );
    assert_eq!(
        refused(spec(Some("0 9 * * *"), None, Some("Mars/Olympus"))),
        ScheduleError::TimeZone("Mars/Olympus".into())
    );
    assert_eq!(refused(spec(None, None, None)), ScheduleError::CronOrRate);
    assert_eq!(
        refused(spec(Some("* * * * *"), Some("5 minutes"), None)),
        ScheduleError::CronOrRate
    );
    assert!(matches!(
        refused(spec(Some("0 0 31 2 *"), None, None)),
        ScheduleError::Never(_)
    ));
    assert!(Schedule::compile(&spec(Some("@daily"), None, Some("America/New_York"))).is_ok());
}

#[test]
fn catch_up_policies_decide_what_a_late_scheduler_fires() {
    let minutely = cron("* * * * *", None);
    let next_fire = at("2026-11-27T10:00:00Z");
    let now = at("2026-11-27T10:04:30Z");
    let all = minutely.due(next_fire, now, CatchUp::All);
    assert_eq!(
        utc(&all.fire),
        [
            "2026-11-27T10:00:00.000Z",
            "2026-11-27T10:01:00.000Z",
            "2026-11-27T10:02:00.000Z",
            "2026-11-27T10:03:00.000Z",
            "2026-11-27T10:04:00.000Z"
        ]
    );
    assert_eq!(
        crate::instant::rfc3339(all.next_fire_ms),
        "2026-11-27T10:05:00.000Z"
    );
    assert!(!all.truncated);
    let latest = minutely.due(next_fire, now, CatchUp::Latest);
    assert_eq!(utc(&latest.fire), ["2026-11-27T10:04:00.000Z"]);
    assert_eq!(latest.next_fire_ms, all.next_fire_ms);
    let on_time = minutely.due(next_fire, now, CatchUp::None);
    assert_eq!(
        utc(&on_time.fire),
        ["2026-11-27T10:04:00.000Z"],
        "30 s late is on time"
    );

    // Paused for a day: `none` fires nothing old, `all` the latest 60 and says so.
    let hourly = cron("0 * * * *", None);
    let day_later = at("2026-11-28T10:30:00Z");
    let none = hourly.due(next_fire, day_later, CatchUp::None);
    assert!(none.fire.is_empty(), "10:00 is 30 minutes late");
    let all = minutely.due(next_fire, day_later, CatchUp::All);
    assert_eq!(all.fire.len(), MAX_CATCH_UP_TICKS);
    assert!(all.truncated);
    assert_eq!(
        crate::instant::rfc3339(*all.fire.last().unwrap()),
        "2026-11-28T10:30:00.000Z"
    );

    // Not yet due: nothing fires and the stored instant stays.
    let early = minutely.due(now + 60_000, now, CatchUp::All);
    assert!(early.fire.is_empty());
    assert_eq!(early.next_fire_ms, now + 60_000);
}

#[test]
fn a_tick_is_identified_by_subscription_and_instant_only() {
    let subscription: Subscription = serde_json::from_value(json!({
        "workspaceId": "ws1", "subscriptionId": "s1", "sourceType": "scheduled",
        "workflowId": "wf", "state": "active",
        "schedule": {"cron": "* * * * *", "timezone": "Europe/Berlin"},
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    let instant = at("2026-11-27T10:00:00Z");
    let first = tick(&subscription, instant, instant + 1_000).unwrap();
    let retried = tick(&subscription, instant, instant + 61_000).unwrap();
    let next = tick(&subscription, instant + 60_000, instant + 61_000).unwrap();
    assert_eq!(first.event.event_id, retried.event.event_id);
    assert_ne!(first.event.event_id, next.event.event_id);
    assert_eq!(first.event.kind.as_str(), "cron.tick");
    assert_eq!(first.event.source.source_type, SourceType::Scheduled);
    assert_eq!(first.event.source.subscription_id.as_deref(), Some("s1"));
    assert_eq!(
        first.event.data["scheduledTime"],
        "2026-11-27T10:00:00.000Z"
    );
    assert_eq!(first.event.data["actualTime"], "2026-11-27T10:00:01.000Z");
    assert_eq!(first.event.data["timezone"], "Europe/Berlin");
    assert_eq!(first.event.data["subscriptionId"], "s1");
}

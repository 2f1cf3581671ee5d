//! The service's cron rules against an independent reference (`scripts/cron_reference.py`:
//! brute force over wall-clock minutes with Python's zoneinfo): 300 expressions — the
//! cases that once went wrong, then generated ones weighted towards the hours clocks
//! change — in seven zones, over every daylight-saving change of 2027 and an ordinary
//! window each. Fire instants must be identical, and so must which expressions are
//! refused. The preview and the scheduler both compute through `Schedule`.

use std::io::Write;
use std::process::{Command, Stdio};

use custos_trigger::instant::rfc3339 as utc_text;
use custos_trigger::schedule::{CatchUp, CronExpr, Schedule, ScheduleSpec};
use serde_json::{json, Value};

const ZONES: [&str; 7] = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Chatham",
];

/// Expressions that went wrong before, the usual shapes, and ones every reference refuses.
const CURATED: &[&str] = &[
    "0,30 2 14 3 *",
    "30 0,1,2 7 11 *",
    "*/15 1 7 11 *",
    "*/15 2 14 3 *",
    "0 0 * * JAN",
    "0 0 * MON *",
    "0 0 ,1 * *",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@reboot",
    "30 2 * * *",
    "0 * * * *",
    "0 9 * * MON-FRI",
    "45 2 * * *",
    "15,45 2 * * *",
    "0-59/20 1-3 * * *",
    "30 1-2 * * *",
    "0 2 * * SUN",
    "0 3 1 * 0",
    "0 0 1,15 * MON",
    "*/5 * * * *",
    "59 23 31 12 *",
    "0 0 29 2 *",
    "5/15 2 * * *",
    "0 2/1 * * *",
    "0 0 * JAN-MAR,OCT-DEC sat",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * * 13 *",
    "* * * * 8",
    "*/0 * * * *",
    "5-1 * * * *",
    "* * * *",
    "* * * * * *",
    "a * * * *",
    "1,,2 * * * *",
    "0 0 L * *",
    "0 0 ? * *",
];

/// A small deterministic generator (the run must be repeatable).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn field(&mut self, min: u64, max: u64, likely: &[u64]) -> String {
        let value = |g: &mut Lcg| {
            if !likely.is_empty() && g.below(3) > 0 {
                likely[usize::try_from(g.below(likely.len() as u64)).unwrap()]
            } else {
                min + g.below(max - min + 1)
            }
        };
        match self.below(8) {
            0 | 1 => "*".to_owned(),
            2 => format!("*/{}", 1 + self.below(max.min(20))),
            3 => {
                let (a, b) = (value(self), value(self));
                format!("{}-{}", a.min(b), a.max(b))
            }
            4 => {
                let (a, b) = (value(self), value(self));
                format!("{}-{}/{}", a.min(b), a.max(b), 1 + self.below(5))
            }
            5 => {
                let n = 2 + self.below(3);
                let items: Vec<String> = (0..n).map(|_| value(self).to_string()).collect();
                items.join(",")
            }
            _ => value(self).to_string(),
        }
    }
}

fn expressions() -> Vec<String> {
    let mut all: Vec<String> = CURATED.iter().map(|s| (*s).to_owned()).collect();
    let mut g = Lcg(2027);
    while all.len() < 300 {
        let minute = g.field(0, 59, &[0, 15, 30, 45, 59]);
        let hour = g.field(0, 23, &[0, 1, 2, 3]);
        // Mostly every day, so the windows have something to fire.
        let dom = if g.below(4) == 0 {
            g.field(1, 31, &[1, 7, 14, 15, 29, 30])
        } else {
            "*".to_owned()
        };
        let month = if g.below(4) == 0 {
            g.field(1, 12, &[3, 4, 9, 10, 11])
        } else {
            "*".to_owned()
        };
        let dow = if g.below(4) == 0 {
            g.field(0, 7, &[0, 6, 7])
        } else {
            "*".to_owned()
        };
        all.push(format!("{minute} {hour} {dom} {month} {dow}"));
    }
    all
}

fn reference(expressions: &[String]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cron_reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the reference");
    let request = json!({"expressions": expressions, "zones": ZONES, "year": 2027});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the reference failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn fires(schedule: &Schedule, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let mut all = Vec::new();
    let mut cursor = from_ms;
    while let Some(next) = schedule.next_after(cursor).filter(|n| *n <= to_ms) {
        all.push(next);
        cursor = next;
    }
    all
}

#[test]
fn fire_times_and_refusals_agree_with_the_reference_over_every_dst_change_of_2027() {
    let expressions = expressions();
    let expected = reference(&expressions);
    let refused: Vec<&str> = expected["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for expression in &expressions {
        assert_eq!(
            CronExpr::parse(expression).is_err(),
            refused.contains(&expression.as_str()),
            "{expression:?}: refused by one, accepted by the other"
        );
    }
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 3_000, "{} cases", cases.len());
    let mut mismatches = Vec::new();
    let mut instants = 0;
    for case in cases {
        let expression = case["expression"].as_str().unwrap();
        let zone = case["zone"].as_str().unwrap();
        let Ok(schedule) = Schedule::compile(&ScheduleSpec {
            cron: Some(expression.to_owned()),
            rate: None,
            timezone: Some(zone.to_owned()),
            catch_up: CatchUp::Latest,
        }) else {
            mismatches.push(format!("{expression:?} in {zone}: refused"));
            continue;
        };
        let (from, to) = (
            case["fromMs"].as_i64().unwrap(),
            case["toMs"].as_i64().unwrap(),
        );
        let want: Vec<i64> = case["fires"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        instants += want.len();
        let got = fires(&schedule, from, to);
        if got != want {
            let text = |v: &[i64]| v.iter().map(|ms| utc_text(*ms)).collect::<Vec<_>>();
            mismatches.push(format!(
                "{expression:?} in {zone} from {}: service {:?}, reference {:?}",
                utc_text(from),
                text(&got),
                text(&want)
            ));
        }
    }
    assert!(instants > 100_000, "{instants} instants compared");
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ, first ones:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches[..mismatches.len().min(15)].join("\n")
    );
}

#!/usr/bin/env python3
"""An independent reference for the service's cron rules (README "Schedules"), used by
tests/cron_reference.rs as a differential oracle. Written separately from the Rust code
and by brute force: every wall-clock minute of a window is tested against the fields,
then resolved with the standard library's zoneinfo; the end of a daylight-saving gap is
found by bisecting the UTC offset, not by stepping wall-clock minutes as the service does.

Input (stdin, JSON): {"expressions": [...], "zones": [...], "year": 2027}
Output (stdout, JSON): {"invalid": [expressions refused],
                        "cases": [{"expression", "zone", "fromMs", "toMs", "fires": [ms]}]}
Windows: every offset change of the year in each zone, from 30 hours before to 30 hours
after it, and one ordinary window (15-17 January) per zone.
"""

import json
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
NICKNAMES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (low, high, names, value of the first name)
RANGES = [(0, 59, [], 0), (0, 23, [], 0), (1, 31, [], 0), (1, 12, MONTHS, 1), (0, 7, DAYS, 0)]


class Invalid(Exception):
    pass


def number(text, low, high, names, first):
    if text.isdigit():
        value = int(text)
    elif text.upper() in names:
        value = first + names.index(text.upper())
    else:
        raise Invalid(text)
    if not low <= value <= high:
        raise Invalid(text)
    return value


def field(text, low, high, names, first):
    values = set()
    for item in text.split(","):
        if not item:
            raise Invalid("empty item")
        step = 1
        if "/" in item:
            item, step_text = item.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise Invalid(step_text)
            step = int(step_text)
            if item != "*" and "-" not in item:
                item = f"{item}-{high}"
        if item == "*":
            start, end = low, high
        elif "-" in item:
            a, b = item.split("-", 1)
            start, end = number(a, low, high, names, first), number(b, low, high, names, first)
            if start > end:
                raise Invalid(item)
        else:
            start = end = number(item, low, high, names, first)
        values.update(range(start, end + 1, step))
    return values


def parse(expression):
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise Invalid(text)
        text = NICKNAMES[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise Invalid("five fields")
    sets = [field(p, *r) for p, r in zip(parts, RANGES)]
    if 7 in sets[4]:
        sets[4] = (sets[4] - {7}) | {0}
    return {
        "sets": sets,
        "either_day": not parts[2].startswith("*") and not parts[4].startswith("*"),
        "wildcard": parts[0].startswith("*") or parts[1].startswith("*"),
    }


def day_matches(cron, day):
    minutes, hours, doms, months, dows = cron["sets"]
    if day.month not in months:
        return False
    dom = day.day in doms
    dow = (day.isoweekday() % 7) in dows
    return (dom or dow) if cron["either_day"] else (dom and dow)


def utc_ms(moment):
    return int(moment.timestamp() * 1000)


def gap_end(zone, local):
    """The instant the gap containing `local` ends: bisect between the two readings."""
    late = local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    early = local.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    low, high = min(early, late), max(early, late)
    after_offset = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    ms = utc_ms(high)  # within a second after the change, which is on a whole minute
    return ms - ms % 60_000


def resolve(cron, zone, local):
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    a, b = first.astimezone(timezone.utc), second.astimezone(timezone.utc)
    exists = a.astimezone(zone).replace(tzinfo=None) == local
    if a == b:
        return [utc_ms(a)]
    if exists:  # a repeated wall-clock time: fold=0 is its first pass
        return [utc_ms(a), utc_ms(b)] if cron["wildcard"] else [utc_ms(min(a, b))]
    return [] if cron["wildcard"] else [gap_end(zone, local)]


def minutes_of(zone, from_ms, to_ms):
    """Every wall-clock minute around a window, with the fields a cron tests."""
    start = datetime.fromtimestamp(from_ms / 1000, timezone.utc).astimezone(zone)
    # Wall clocks run at most a few hours off the window's ends.
    local = (start - timedelta(hours=4)).replace(tzinfo=None, second=0, microsecond=0)
    end = datetime.fromtimestamp(to_ms / 1000, timezone.utc).astimezone(zone).replace(tzinfo=None)
    end += timedelta(hours=4)
    found = []
    while local <= end:
        found.append((local.minute, local.hour, local))
        local += timedelta(minutes=1)
    return found


def fires(cron, zone, minutes_around, from_ms, to_ms):
    minutes, hours = cron["sets"][0], cron["sets"][1]
    found = set()
    for minute, hour, local in minutes_around:
        if minute in minutes and hour in hours and day_matches(cron, local):
            found.update(resolve(cron, zone, local))
    return sorted(ms for ms in found if from_ms < ms <= to_ms)


def transitions(zone, year):
    """Instants (ms) where the zone's UTC offset changes during `year`, to the hour."""
    moment = datetime(year, 1, 1, tzinfo=timezone.utc)
    end = datetime(year + 1, 1, 1, tzinfo=timezone.utc)
    found, offset = [], moment.astimezone(zone).utcoffset()
    while moment < end:
        moment += timedelta(minutes=30)
        current = moment.astimezone(zone).utcoffset()
        if current != offset:
            found.append(utc_ms(moment))
            offset = current
    return found


def main():
    request = json.load(sys.stdin)
    year = request["year"]
    invalid, parsed = [], {}
    for expression in request["expressions"]:
        try:
            parsed[expression] = parse(expression)
        except Invalid:
            invalid.append(expression)
    cases = []
    hours30 = 30 * 3_600_000
    for name in request["zones"]:
        zone = ZoneInfo(name)
        ordinary = utc_ms(datetime(year, 1, 15, tzinfo=timezone.utc))
        windows = [(ordinary, ordinary + 2 * 86_400_000)]
        windows += [(t - hours30, t + hours30) for t in transitions(zone, year)]
        for from_ms, to_ms in windows:
            around = minutes_of(zone, from_ms, to_ms)
            for expression, cron in parsed.items():
                cases.append({"expression": expression, "zone": name, "fromMs": from_ms,
                              "toMs": to_ms,
                              "fires": fires(cron, zone, around, from_ms, to_ms)})
    json.dump({"invalid": invalid, "cases": cases}, sys.stdout)


if __name__ == "__main__":
    main()

"""Cron maths: a table of hand-checked next-fire times, parse errors, and properties.

The expected times were worked out by hand from the calendar (2030-01-01 is a
Tuesday; 2028 is a leap year whose 29 February is a Tuesday; Europe/Berlin
springs forward on 2030-03-31 02:00 -> 03:00 and falls back on 2030-10-27
03:00 -> 02:00; America/New_York on 2030-03-10 and 2030-11-03; Lord Howe Island
moves by 30 minutes on 2030-10-06 02:00 -> 02:30), not computed by the code
under test.  The DST rule checked here: a wall time that occurs twice runs once
(its first occurrence); wall times that do not exist run once, at the first
minute after the gap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from script_monitor import cron
from script_monitor.config import cron_problem

# (expression, zone, start (naive = wall time in zone, first occurrence), next fire times)
TABLE = [
    # every minute, strictly after the start
    ("* * * * *", "UTC", "2030-01-01 00:00:00", ["00:01", "00:02"]),
    ("* * * * *", "UTC", "2030-01-01 00:00:30", ["00:01", "00:02"]),
    ("*/15 * * * *", "UTC", "2030-01-01 10:07", ["10:15", "10:30", "10:45", "11:00"]),
    ("5-59/20 * * * *", "UTC", "2030-01-01 10:00", ["10:05", "10:25", "10:45", "11:05"]),
    ("0 * * * *", "UTC", "2030-01-01 10:00", ["11:00", "12:00"]),
    ("23 0-20/2 * * *", "UTC", "2030-01-01 00:00", ["00:23", "02:23", "04:23"]),
    ("0 9-17/4 * * *", "UTC", "2030-01-01 10:00", ["13:00", "17:00", "2030-01-02 09:00"]),
    (
        "0,30 0-6/3 * * *",
        "UTC",
        "2030-01-01 01:00",
        ["03:00", "03:30", "06:00", "06:30", "2030-01-02 00:00"],
    ),
    # macros
    ("@hourly", "UTC", "2030-01-01 10:00", ["11:00", "12:00"]),
    ("@daily", "UTC", "2030-01-01 10:00", ["2030-01-02 00:00", "2030-01-03 00:00"]),
    ("@midnight", "UTC", "2030-01-01 10:00", ["2030-01-02 00:00", "2030-01-03 00:00"]),
    ("@weekly", "UTC", "2030-01-01 00:00", ["2030-01-06 00:00", "2030-01-13 00:00"]),
    ("@monthly", "UTC", "2030-01-15 00:00", ["2030-02-01 00:00", "2030-03-01 00:00"]),
    ("@yearly", "UTC", "2030-06-01 00:00", ["2031-01-01 00:00", "2032-01-01 00:00"]),
    ("@annually", "UTC", "2030-06-01 00:00", ["2031-01-01 00:00", "2032-01-01 00:00"]),
    ("@DAILY", "UTC", "2030-01-01 10:00", ["2030-01-02 00:00"]),
    # day of week: 0 and 7 are both Sunday; names; ranges through 7
    ("0 0 * * 0", "UTC", "2030-01-01 00:00", ["2030-01-06 00:00", "2030-01-13 00:00"]),
    ("0 0 * * 7", "UTC", "2030-01-01 00:00", ["2030-01-06 00:00", "2030-01-13 00:00"]),
    ("0 0 * * sun", "UTC", "2030-01-01 00:00", ["2030-01-06 00:00", "2030-01-13 00:00"]),
    ("5 4 * * sun", "UTC", "2030-01-01 00:00", ["2030-01-06 04:05"]),
    (
        "0 0 * * 5-7",
        "UTC",
        "2030-01-01 00:00",
        ["2030-01-04 00:00", "2030-01-05 00:00", "2030-01-06 00:00", "2030-01-11 00:00"],
    ),
    ("0 0 * * 6-7", "UTC", "2030-01-01 00:00", ["2030-01-05 00:00", "2030-01-06 00:00"]),
    ("0 0 * * mon-fri", "UTC", "2030-01-04 12:00", ["2030-01-07 00:00", "2030-01-08 00:00"]),
    ("0 0 * * MON-Fri", "UTC", "2030-01-04 12:00", ["2030-01-07 00:00"]),
    (
        "30 8 * * 1,3,5",
        "UTC",
        "2030-01-01 09:00",
        ["2030-01-02 08:30", "2030-01-04 08:30", "2030-01-07 08:30"],
    ),
    ("0 22 * * 1-5", "UTC", "2030-01-05 00:00", ["2030-01-07 22:00"]),
    (
        "0 9-17 * * 1-5",
        "UTC",
        "2030-01-04 16:30",
        ["2030-01-04 17:00", "2030-01-07 09:00", "2030-01-07 10:00"],
    ),
    # a step on '*' in day-of-week keeps it "unrestricted" for the either rule
    (
        "0 0 * * */2",
        "UTC",
        "2030-01-01 00:00",
        ["2030-01-03 00:00", "2030-01-05 00:00", "2030-01-06 00:00"],
    ),
    # month names and steps
    ("0 0 1 jan *", "UTC", "2030-01-01 00:00", ["2031-01-01 00:00"]),
    ("0 12 * jun-aug *", "UTC", "2030-01-01 00:00", ["2030-06-01 12:00", "2030-06-02 12:00"]),
    ("0 0 * JAN,Jul *", "UTC", "2030-01-31 00:00", ["2030-07-01 00:00", "2030-07-02 00:00"]),
    ("0 0 1 */3 *", "UTC", "2030-02-01 00:00", ["2030-04-01 00:00", "2030-07-01 00:00"]),
    ("15 14 1 * *", "UTC", "2030-01-01 14:15", ["2030-02-01 14:15"]),
    # both day fields restricted: either may match (crontab(5))
    (
        "0 0 1,15 * 5",
        "UTC",
        "2030-01-01 00:00",
        ["2030-01-04 00:00", "2030-01-11 00:00", "2030-01-15 00:00", "2030-01-18 00:00"],
    ),
    (
        "0 0 13 * fri",
        "UTC",
        "2030-01-01 00:00",
        ["2030-01-04 00:00", "2030-01-11 00:00", "2030-01-13 00:00", "2030-01-18 00:00"],
    ),
    (
        "0 0 1-7 * 1",
        "UTC",
        "2030-01-07 00:00",
        ["2030-01-14 00:00", "2030-01-21 00:00", "2030-01-28 00:00", "2030-02-01 00:00"],
    ),
    # ... but a field starting with '*' (even '*/2') makes both required
    (
        "0 0 */2 * 1",
        "UTC",
        "2030-01-01 00:00",
        ["2030-01-07 00:00", "2030-01-21 00:00", "2030-02-11 00:00"],
    ),
    ("0 0 10 * */3", "UTC", "2030-01-01 00:00", ["2030-02-10 00:00", "2030-03-10 00:00"]),
    ("0 0 1 * *", "UTC", "2030-01-15 00:00", ["2030-02-01 00:00", "2030-03-01 00:00"]),
    # month ends and leap days
    (
        "0 0 31 * *",
        "UTC",
        "2030-01-31 00:00",
        ["2030-03-31 00:00", "2030-05-31 00:00", "2030-07-31 00:00"],
    ),
    ("0 0 30 * *", "UTC", "2030-01-30 00:00", ["2030-03-30 00:00", "2030-04-30 00:00"]),
    ("0 0 29 2 *", "UTC", "2027-06-01 00:00", ["2028-02-29 00:00", "2032-02-29 00:00"]),
    ("0 0 29 2 *", "UTC", "2028-02-29 00:00", ["2032-02-29 00:00"]),
    (
        "0 0 28-31 2 *",
        "UTC",
        "2028-02-27 00:00",
        ["2028-02-28 00:00", "2028-02-29 00:00", "2029-02-28 00:00"],
    ),
    (
        "0 0 29 2 mon",
        "UTC",
        "2028-02-20 00:00",
        ["2028-02-21 00:00", "2028-02-28 00:00", "2028-02-29 00:00", "2029-02-05 00:00"],
    ),
    ("59 23 31 12 *", "UTC", "2030-06-01 00:00", ["2030-12-31 23:59", "2031-12-31 23:59"]),
    # a zone without DST
    ("0 0 * * *", "Asia/Kolkata", "2030-01-01 00:00", ["2030-01-02 00:00+05:30"]),
    # Europe/Berlin, spring forward (02:00-02:59 does not exist on 2030-03-31)
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2030-03-30 12:00",
        ["2030-03-31 03:00+02:00", "2030-04-01 02:30+02:00"],
    ),
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2030-03-30 12:00",
        ["2030-03-31 03:00+02:00", "2030-04-01 02:00+02:00"],
    ),
    (
        "0 3 * * *",
        "Europe/Berlin",
        "2030-03-30 12:00",
        ["2030-03-31 03:00+02:00", "2030-04-01 03:00+02:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Berlin",
        "2030-03-31 01:00",
        ["2030-03-31 01:30+01:00", "2030-03-31 03:00+02:00", "2030-03-31 03:30+02:00"],
    ),
    # Europe/Berlin, fall back (02:00-02:59 happens twice on 2030-10-27): first only
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2030-10-26 12:00",
        ["2030-10-27 02:30+02:00", "2030-10-28 02:30+01:00"],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2030-10-27 00:30",
        [
            "2030-10-27 01:00+02:00",
            "2030-10-27 02:00+02:00",
            "2030-10-27 03:00+01:00",
            "2030-10-27 04:00+01:00",
        ],
    ),
    (
        "*/20 * * * *",
        "Europe/Berlin",
        "2030-10-27 02:50",
        ["2030-10-27 03:00+01:00", "2030-10-27 03:20+01:00"],
    ),
    # starting inside the second pass of the repeated hour
    (
        "*/20 * * * *",
        "Europe/Berlin",
        "2030-10-27 02:10+01:00",
        ["2030-10-27 03:00+01:00"],
    ),
    # America/New_York: spring forward 2030-03-10, fall back 2030-11-03 (01:00-01:59 twice)
    (
        "30 2 * * *",
        "America/New_York",
        "2030-03-09 12:00",
        ["2030-03-10 03:00-04:00", "2030-03-11 02:30-04:00"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2030-11-02 12:00",
        ["2030-11-03 01:30-04:00", "2030-11-04 01:30-05:00"],
    ),
    # Lord Howe Island: a 30-minute gap, 02:00 -> 02:30 on 2030-10-06
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2030-10-05 12:00",
        ["2030-10-06 02:30+11:00", "2030-10-07 02:15+11:00"],
    ),
]


def _parse_time(text: str, zone: str, day: str) -> datetime:
    """'HH:MM' (on ``day``), 'YYYY-MM-DD HH:MM[:SS]', optionally with a +HH:MM offset."""
    if len(text) == 5:
        text = f"{day} {text}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=cron.resolve_timezone(zone))
    return parsed


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), TABLE)
def test_next_fire_times(expr, zone, start, expected):
    assert len(TABLE) >= 40
    begin = _parse_time(start, zone, "")
    day = start[:10]
    want = [_parse_time(t, zone, day) for t in expected]
    got = cron.next_fires(expr, cron.resolve_timezone(zone), begin, len(want))
    # compare instants and the wall time they show in the zone
    assert [g.isoformat() for g in got] == [
        w.astimezone(cron.resolve_timezone(zone)).isoformat() for w in want
    ]
    assert [g.timestamp() for g in got] == [w.timestamp() for w in want]


def test_dow_zero_and_seven_are_the_same_schedule():
    tz = cron.resolve_timezone("UTC")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert cron.next_fires("0 0 * * 0", tz, start, 10) == cron.next_fires(
        "0 0 * * 7", tz, start, 10
    )
    assert cron.parse("0 0 * * 0,7").weekdays == frozenset({0})


def test_macros_expand_to_their_five_fields():
    assert cron.expand("@yearly") == cron.expand("@annually") == "0 0 1 1 *"
    assert cron.expand("@daily") == cron.expand("@midnight") == "0 0 * * *"
    assert cron.expand("@weekly") == "0 0 * * 0"
    assert cron.expand("@monthly") == "0 0 1 * *"
    assert cron.expand("@hourly") == "0 * * * *"
    assert cron.expand("  0   5 *  * * ") == "0 5 * * *"


INVALID = [
    ("", "expected 5 fields"),
    ("* * * *", "got 4"),
    ("0 * * * * *", "got 6"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range 0-23"),
    ("* * 0 * *", "day-of-month: 0 is out of range 1-31"),
    ("* * 32 * *", "day-of-month: 32"),
    ("* * * 13 *", "month: 13"),
    ("* * * 0 *", "month: 0"),
    ("* * * * 8", "day-of-week: 8 is out of range 0-7"),
    ("5/15 * * * *", "a step needs a range or '*'"),
    ("*/0 * * * *", "step of 0"),
    ("10-5 * * * *", "goes backwards"),
    ("0 0 30 2 *", "day-of-month 30 never occurs in feb"),
    ("0 0 31 4,6 *", "never occurs"),
    ("@reboot", "unknown macro"),
    ("@every 5m", "unknown macro"),
    ("0 0 * * 5L", "day-of-week"),
    ("0 0 L * *", "day-of-month"),
    ("0 0 LW * *", "day-of-month"),
    ("0 0 * * 1#2", "day-of-week"),
    ("0 0 ? * *", "day-of-month"),
    ("0 0 * * monday", "day-of-week"),
    ("0 0 * foo *", "month"),
    ("0 0 * * jan", "day-of-week"),
    ("0 0 * mon *", "month"),
    ("1,,2 * * * *", "minute"),
    ("a * * * *", "minute: 'a' is not a number"),
]


@pytest.mark.parametrize(("expr", "fragment"), INVALID)
def test_invalid_expressions_say_why(expr, fragment):
    problem = cron.parse_problem(expr)
    assert problem is not None and fragment in problem
    assert cron_problem(expr) == problem  # the config's validation uses the same words


@pytest.mark.parametrize(
    "expr", ["0 0 30 2 mon", "* * * * MON-FRI", "0 0 31 */2 *", "0-59/59 23 * * 0-7", "@midnight"]
)
def test_valid_corner_expressions(expr):
    assert cron.parse_problem(expr) is None


def test_oncalendar_lines():
    assert cron.to_oncalendar("30 2 * * *", "Europe/Berlin") == ["*-*-* 02:30:00 Europe/Berlin"]
    assert cron.to_oncalendar("*/15 9-17 * * mon-fri", None) == [
        "Mon..Fri *-*-* 09..17:00,15,30,45:00"
    ]
    # either-matches needs two lines: systemd ANDs a weekday with a date
    assert cron.to_oncalendar("0 0 1,15 * 5", None) == [
        "*-*-01,15 00:00:00",
        "Fri *-*-* 00:00:00",
    ]
    assert cron.to_oncalendar("0 0 * * 0,6", None) == ["Sat,Sun *-*-* 00:00:00"]


def test_local_zone_follows_tz(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert str(cron.resolve_timezone("local")) == "America/New_York"
    assert cron.timezone_label("local") == "local (America/New_York)"
    assert cron.timezone_label("UTC") == "UTC"


def test_gap_fires_for_systemd():
    tz = cron.resolve_timezone("Europe/Berlin")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    gaps = cron.dst_gap_fires("30 2 * * *", tz, start, years=2)
    assert [g.isoformat() for g in gaps] == [
        "2030-03-31T03:00:00+02:00",
        "2031-03-30T03:00:00+02:00",
    ]
    assert cron.dst_gap_fires("*/5 * * * *", tz, start, years=2) == []  # 03:00 matches anyway
    assert cron.dst_gap_fires("30 2 * * *", cron.resolve_timezone("UTC"), start) == []


# ---------------------------------------------------------------- properties

_LIMITS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_NAMES = {3: cron.MONTH_NAMES, 4: cron.DAY_NAMES}


@st.composite
def _term(draw, index: int) -> str:
    low, high = _LIMITS[index]
    a, b = sorted(draw(st.integers(low, high)) for _ in range(2))
    step = draw(st.integers(1, high - low + 1))
    names = _NAMES.get(index)

    def show(v: int) -> str:
        if names and v < len(names) + (index == 3) and v >= (index == 3) and draw(st.booleans()):
            return names[v - (index == 3)]
        return str(v)

    return draw(
        st.sampled_from(
            ["*", f"*/{step}", show(a), f"{show(a)}-{show(b)}", f"{show(a)}-{show(b)}/{step}"]
        )
    )


@st.composite
def _expressions(draw) -> str:
    fields = []
    for index in range(5):
        terms = draw(st.lists(_term(index), min_size=1, max_size=3))
        fields.append(",".join(terms))
    text = " ".join(fields)
    return text if cron.parse_problem(text) is None else "0 0 * * *"


def _brute_force(expr: str, zone: str, start: datetime, count: int, years: int) -> list[datetime]:
    """The first fire instants after ``start``, by walking days and their matching minutes."""
    tz = cron.resolve_timezone(zone)
    f = cron.parse(expr)
    day = start.astimezone(tz).date() - timedelta(days=1)
    stop = start + timedelta(days=366 * years)
    out: list[datetime] = []
    while len(out) < count:
        first = datetime(day.year, day.month, day.day, min(f.hours), min(f.minutes))
        if first.replace(tzinfo=tz) > stop:
            break
        if cron.matches(f, first):  # the day matches
            for hour in sorted(f.hours):
                for minute in sorted(f.minutes):
                    instant = cron.to_instant(first.replace(hour=hour, minute=minute), tz)
                    if instant > start and (not out or instant > out[-1]):
                        out.append(instant)
        day += timedelta(days=1)
    return [t for t in out[:count] if t <= stop]


@settings(max_examples=200, deadline=None)
@given(
    expr=_expressions(),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    start=st.sampled_from(
        [
            datetime(2030, 3, 30, 20, 7, 30, tzinfo=UTC),  # before the Berlin spring gap
            datetime(2030, 10, 26, 21, 59, tzinfo=UTC),  # before the Berlin fall-back
            datetime(2030, 11, 2, 23, 0, tzinfo=UTC),  # before the New York fall-back
            datetime(2030, 10, 5, 14, 0, tzinfo=UTC),  # before the Lord Howe 30-minute gap
            datetime(2028, 2, 28, 12, 0, tzinfo=UTC),  # before a leap day
        ]
    ),
)
def test_cronsim_agrees_with_a_brute_force_walk(expr, zone, start):
    """cronsim's iteration and our own field matcher give the same next fire times."""
    years = 40
    want = _brute_force(expr, zone, start, 6, years)
    got = cron.next_fires(expr, cron.resolve_timezone(zone), start, 6)
    got = [g for g in got if g <= start + timedelta(days=366 * years)]
    assert [g.timestamp() for g in got] == [w.timestamp() for w in want]


def test_a_one_value_range_with_a_step_is_that_value():
    """cronsim alone reads '0-0/1' as '0/1' (every minute); crontab(5) means minute 0."""
    tz = cron.resolve_timezone("UTC")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert [t.strftime("%H:%M") for t in cron.next_fires("0-0/1 * * * *", tz, start, 2)] == [
        "01:00",
        "02:00",
    ]
    assert [t.strftime("%d") for t in cron.next_fires("0 0 5-5/3 * *", tz, start, 2)] == [
        "05",
        "05",
    ]

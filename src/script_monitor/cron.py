"""Cron maths with crontab(5) semantics, as pure functions of a given time.

Parsing is strict crontab(5) (Vixie cron / cronie / Debian cron): five fields,
numbers, three-letter names, ranges, steps after a range or ``*``, lists, the
``@`` macros.  The iteration over wall-clock times is done by the ``cronsim``
library on naive datetimes; this module maps those wall times to real instants
with one daylight-saving rule (see docs/SCHEDULING.md):

* a matching wall time that occurs twice (clocks go back) runs once, at its
  first occurrence;
* matching wall times that do not exist (clocks go forward) run once, at the
  first minute after the gap (e.g. 03:00 in Europe/Berlin).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ITEM = re.compile(r"^(?P<base>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")
MINUTE = timedelta(minutes=1)


class CronError(ValueError):
    """An expression that is not valid crontab(5)."""


def expand(expr: str) -> str:
    """Normalise an expression: macros become their five fields."""
    expr = " ".join(expr.split())
    return MACROS.get(expr.lower(), expr)


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Fields:
    """The value sets of a parsed expression; day-of-week 7 is folded into 0."""

    text: str
    engine_text: str  # the same schedule, in words cronsim reads correctly
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_star: bool  # the field starts with '*': see day_or
    dow_star: bool

    @property
    def day_or(self) -> bool:
        """crontab(5): when neither day field starts with '*', either may match."""
        return not (self.dom_star or self.dow_star)


def _number(token: str, index: int) -> int:
    names = MONTH_NAMES if index == 3 else DAY_NAMES if index == 4 else None
    if names is not None and token.lower() in names:
        return names.index(token.lower()) + (1 if index == 3 else 0)
    if not token.isdigit():
        what = {3: "a month number or name (jan-dec)", 4: "a weekday number or name (sun-sat)"}
        raise CronError(f"{FIELD_NAMES[index]}: {token!r} is not {what.get(index, 'a number')}")
    value = int(token)
    low, high = BOUNDS[index]
    if not low <= value <= high:
        raise CronError(f"{FIELD_NAMES[index]}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, index: int) -> set[int]:
    low, high = BOUNDS[index]
    values: set[int] = set()
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise CronError(f"{FIELD_NAMES[index]}: cannot read {item!r}")
        base, step = m.group("base"), m.group("step")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-")
            first, last = _number(a, index), _number(b, index)
            if first > last:
                raise CronError(f"{FIELD_NAMES[index]}: range {base!r} goes backwards")
        else:
            if step is not None:  # Vixie cron rejects "5/15"; say what works instead
                raise CronError(
                    f"{FIELD_NAMES[index]}: a step needs a range or '*' "
                    f"(write '{base}-{high}/{step}' or '*/{step}')"
                )
            first = last = _number(base, index)
        stride = int(step) if step is not None else 1
        if stride == 0:
            raise CronError(f"{FIELD_NAMES[index]}: a step of 0 is not allowed")
        values.update(range(first, last + 1, stride))
    return values


def _engine_field(text: str, index: int) -> str:
    """Work around cronsim reading a one-value range with a step ("0-0/1") as "0/1"."""
    terms = []
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and "-" in base:
            a, b = (_number(v, index) for v in base.split("-"))
            if a == b:
                item = str(a)
        terms.append(item)
    return ",".join(terms)


@lru_cache(maxsize=1024)
def parse(expr: str) -> Fields:
    """Parse a crontab(5) expression (or macro); raise CronError saying why not.  Kept
    per expression (``Fields`` is immutable): the scheduler and ``status`` ask for the
    same few expressions of hundreds of groups again and again."""
    text = expand(expr)
    if text.startswith("@"):
        raise CronError(f"unknown macro {text!r} (use one of {', '.join(MACROS)})")
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts) if text else 0}"
        )
    sets = [_field(p, i) for i, p in enumerate(parts)]
    fields = Fields(
        text,
        " ".join(_engine_field(p, i) for i, p in enumerate(parts)),
        frozenset(sets[0]),
        frozenset(sets[1]),
        frozenset(sets[2]),
        frozenset(sets[3]),
        frozenset(v % 7 for v in sets[4]),
        parts[2].startswith("*"),
        parts[4].startswith("*"),
    )
    if not fields.day_or and min(fields.days) > max(DAYS_IN_MONTH[m - 1] for m in fields.months):
        months = ",".join(MONTH_NAMES[m - 1] for m in sorted(fields.months))
        raise CronError(f"day-of-month {min(fields.days)} never occurs in {months}")
    return fields


def parse_problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid five-field crontab(5) expression, or None."""
    try:
        parse(expr)
    except CronError as e:
        return str(e)
    return None


def matches(fields: Fields, wall: datetime) -> bool:
    """Whether the naive wall time ``wall`` (to the minute) is one of the schedule's."""
    if wall.minute not in fields.minutes or wall.hour not in fields.hours:
        return False
    if wall.month not in fields.months:
        return False
    dom = wall.day in fields.days
    dow = (wall.isoweekday() % 7) in fields.weekdays
    return (dom or dow) if fields.day_or else (dom and dow)


# ---------------------------------------------------------------- time zones


def resolve_timezone(name: str) -> tzinfo:
    """A tzinfo for an IANA name, or for 'local' the system's zone (TZ, /etc/localtime)."""
    from zoneinfo import ZoneInfo

    if name != "local":
        return ZoneInfo(name)
    return _local_zone(os.environ.get("TZ", ""))


@lru_cache(maxsize=8)
def _local_zone(tz_env: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    key = tz_env.removeprefix(":")
    if key:
        try:
            if key.startswith("/"):
                with open(key, "rb") as f:
                    return ZoneInfo.from_file(f, key=key)
            return ZoneInfo(key)
        except (OSError, ValueError, LookupError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key=_local_key())
    except (OSError, ValueError):
        # No zone database: a fixed offset is the best that can be done.
        return datetime.now().astimezone().tzinfo or UTC


def _local_key() -> str:
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    try:
        return Path("/etc/timezone").read_text().strip() or "localtime"
    except OSError:
        return "localtime"


def timezone_label(name: str) -> str:
    """How a configured zone is shown: an IANA name, or 'local (Europe/Berlin)'."""
    if name != "local":
        return name
    return f"local ({resolve_timezone('local')})"


def _imaginary(wall: datetime, tz: tzinfo) -> bool:
    aware = wall.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall


def to_instant(wall: datetime, tz: tzinfo) -> datetime:
    """The real instant a matching naive wall time fires at, by the DST rule above."""
    if not _imaginary(wall, tz):
        return wall.replace(tzinfo=tz, fold=0)  # fold=0: the first of a repeated time
    moved = wall
    for _ in range(24 * 60):  # no zone has a gap longer than a day
        moved += MINUTE
        if not _imaginary(moved, tz):
            break
    return moved.replace(tzinfo=tz, fold=0)


# ---------------------------------------------------------------- next fire times


def fire_times(expr: str, tz: tzinfo, after: datetime) -> Iterator[datetime]:
    """Every instant the schedule fires strictly after the aware ``after``, in order."""
    from cronsim import CronSim

    text = parse(expr).engine_text
    start = after.astimezone(tz).replace(tzinfo=None, fold=0)
    last = after
    try:
        for wall in CronSim(text, start):
            instant = to_instant(wall, tz)
            if instant > last:
                last = instant
                yield instant.astimezone(tz)
    except StopIteration:  # cronsim gives up after 50 years without a match
        return


def next_fire(expr: str, tz: tzinfo, after: datetime) -> datetime | None:
    """The first instant strictly after ``after`` at which the schedule fires."""
    return next(fire_times(expr, tz, after), None)


def next_fires(expr: str, tz: tzinfo, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after``."""
    out = []
    for instant in fire_times(expr, tz, after):
        out.append(instant)
        if len(out) >= count:
            break
    return out


def fires_between(
    expr: str, tz: tzinfo, start: datetime, end: datetime, limit: int = 10_000
) -> tuple[list[datetime], bool]:
    """Fire instants in (start, end], at most ``limit``; and whether more were cut off."""
    out: list[datetime] = []
    for instant in fire_times(expr, tz, start):
        if instant > end:
            return out, False
        if len(out) >= limit:
            return out, True
        out.append(instant)
    return out, False


# ---------------------------------------------------------------- exports


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _calendar_list(values: frozenset[int], full: range, width: int = 2) -> str:
    if set(full) <= values:
        return "*"
    parts = []
    for a, b in _runs(sorted(values)):
        if b - a >= 2:
            parts.append(f"{a:0{width}d}..{b:0{width}d}")
        else:
            parts.extend(f"{v:0{width}d}" for v in range(a, b + 1))
    return ",".join(parts)


_SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _weekday_list(values: frozenset[int]) -> str:
    order = [1, 2, 3, 4, 5, 6, 0]  # systemd ranges run Mon..Sun
    present = [i for i, d in enumerate(order) if d in values]
    parts = []
    for a, b in _runs(present):
        if b - a >= 2:
            parts.append(f"{_SYSTEMD_DAYS[order[a]]}..{_SYSTEMD_DAYS[order[b]]}")
        else:
            parts.extend(_SYSTEMD_DAYS[order[i]] for i in range(a, b + 1))
    return ",".join(parts)


def to_oncalendar(expr: str, zone: str | None) -> list[str]:
    """systemd OnCalendar= values that fire exactly when ``expr`` does (outside DST gaps)."""
    f = parse(expr)
    time_part = f"{_calendar_list(f.hours, range(24))}:{_calendar_list(f.minutes, range(60))}:00"
    months = _calendar_list(f.months, range(1, 13))
    days = _calendar_list(f.days, range(1, 32))
    every_dow = set(range(7)) <= f.weekdays
    suffix = f" {zone}" if zone else ""
    if f.day_or:  # either may match: systemd ANDs weekday and date, so two lines
        return [
            f"*-{months}-{days} {time_part}{suffix}",
            f"{_weekday_list(f.weekdays)} *-{months}-* {time_part}{suffix}",
        ]
    # Otherwise both must match, as systemd does for a weekday plus a date.
    dow = "" if every_dow else _weekday_list(f.weekdays) + " "
    return [f"{dow}*-{months}-{days} {time_part}{suffix}"]


def dst_gap_fires(expr: str, tz: tzinfo, start: datetime, years: int = 10) -> list[datetime]:
    """Instants where our DST rule fires but the plain calendar lines would not.

    These are gap ends (e.g. 03:00) on days whose skipped wall times match while
    the gap end itself does not: systemd skips such non-existent times.
    """
    f = parse(expr)
    out = []
    for gap_start, gap_end in dst_gaps(tz, start, start + timedelta(days=366 * years)):
        wall = gap_start
        hit = False
        while wall < gap_end and not hit:
            hit = matches(f, wall)
            wall += MINUTE
        if hit and not matches(f, gap_end):
            out.append(gap_end.replace(tzinfo=tz))
    return out


def dst_gaps(tz: tzinfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Naive wall-time gaps [first missing minute, first minute after) between two instants."""
    gaps = []
    t = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    step = timedelta(hours=6)
    while t < end:
        a, b = t.astimezone(tz).utcoffset(), (t + step).astimezone(tz).utcoffset()
        if a is not None and b is not None and b > a:
            lo, hi = t, t + step  # bisect to the minute of the forward jump
            while hi - lo > MINUTE:
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid.astimezone(tz).utcoffset() == a:
                    lo = mid
                else:
                    hi = mid
            after = hi.astimezone(tz).replace(tzinfo=None)
            gaps.append((after - (b - a), after))
        t += step
    return gaps

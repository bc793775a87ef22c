"""``crontab.next_after`` against an independent, brute-force reference.

The reference knows nothing of ``flask_tasks.schedules`` beyond the documented rules:

* a wall-clock minute is due when its minute, hour, month, day of month and day of week are
  in the expression's sets; the day fields are ANDed (Celery: when both ``day_of_month`` and
  ``day_of_week`` are restricted, both must match; an unrestricted field matches any day);
  Sunday is 0 (and 7);
* wall times are evaluated in the time zone: a wall time that does not exist (spring
  forward) runs once, at the first instant after the gap; one that occurs twice (fall back)
  runs once, at its first occurrence.

The generator builds every field's text together with the set of values it means, so the
reference never parses cron text. Wall times are mapped to instants by scanning every UTC
minute of the year and noting which wall minute it shows (and which wall minutes it skips).
Generated expressions use a fixed seed; a failure prints the expression and the zone.
"""

from __future__ import annotations

import bisect
import functools
import random
from array import array
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple, Optional
from zoneinfo import ZoneInfo

import pytest

from flask_tasks.schedules import crontab

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ZONES = (UTC, BERLIN, NEW_YORK)
# Extra zones for a few cases: the shift at midnight (Santiago) and a 30-minute shift
# (Lord Howe Island).
SANTIAGO = ZoneInfo("America/Santiago")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
YEARS = (2024, 2025, 2026)
SEED = 20240331
GENERATED = 240
# Above this many due times in a year, an expression is compared over the days around the
# daylight-saving transitions only (a chained next_after costs some 30-50 µs).
FULL_YEAR_LIMIT = 2500
EPOCH = datetime(1970, 1, 1)
MINUTE = 60

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
LONG_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class Expr(NamedTuple):
    """A crontab's arguments and, independently, the sets they mean."""

    args: tuple[object, object, object, object, object]  # minute, hour, dow, dom, month
    minutes: frozenset[int]
    hours: frozenset[int]
    dows: frozenset[int]  # Sunday is 0
    doms: frozenset[int]
    months: frozenset[int]

    def __str__(self) -> str:
        names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        shown = [f"{n}={a!r}" for n, a in zip(names, self.args) if a != "*"]
        return f"crontab({', '.join(shown)})"

    def build(self) -> crontab:
        return crontab(*self.args)

    def day_matches(self, day: date) -> bool:
        return (
            day.month in self.months
            and day.day in self.doms
            and (day.isoweekday() % 7) in self.dows  # isoweekday: Monday 1 .. Sunday 7
        )


def expr(
    minute: object = "*",
    hour: object = "*",
    dow: object = "*",
    dom: object = "*",
    month: object = "*",
    *,
    minutes: Optional[set[int]] = None,
    hours: Optional[set[int]] = None,
    dows: Optional[set[int]] = None,
    doms: Optional[set[int]] = None,
    months: Optional[set[int]] = None,
) -> Expr:
    """An expression with its meaning given by hand; ``*`` fields default to everything."""
    return Expr(
        (minute, hour, dow, dom, month),
        frozenset(range(60) if minutes is None else minutes),
        frozenset(range(24) if hours is None else hours),
        frozenset(range(7) if dows is None else dows),
        frozenset(range(1, 32) if doms is None else doms),
        frozenset(range(1, 13) if months is None else months),
    )


# --- the reference ----------------------------------------------------------------------


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", str(zone))


@functools.cache
def wall_table(zone: tzinfo, year: int) -> tuple[int, array]:
    """Map each wall minute of ``year`` (and the next two days) in ``zone`` to when it is due.

    Returns ``(base, due)``: ``due[w]`` is the UTC instant, in minutes since the epoch, of
    wall minute ``w`` counted from ``year``-01-01 00:00 local (``base`` is that wall time in
    minutes since the naive epoch). Found by brute force: every UTC minute shows one wall
    minute; the first UTC minute to show it is its (first) occurrence, and wall minutes
    jumped over by a forward shift belong to the first UTC minute after the jump.
    """
    base = (datetime(year, 1, 1) - EPOCH) // timedelta(minutes=1)
    size = ((datetime(year + 1, 1, 3) - EPOCH) // timedelta(minutes=1)) - base
    due = array("q", [-1]) * size
    first_utc = base - 2 * 1440  # a wall time is within a day of its UTC time
    last_utc = base + size + 2 * 1440

    def offset_minutes(utc_minute: int) -> int:
        offset = datetime.fromtimestamp(utc_minute * MINUTE, zone).utcoffset()
        assert offset is not None and offset % timedelta(minutes=1) == timedelta(0)
        return offset // timedelta(minutes=1)

    previous: Optional[int] = None
    for hour_start in range(first_utc, last_utc, 60):
        # offsets per UTC minute; look at each minute only in an hour where it changes
        start_offset, end_offset = offset_minutes(hour_start), offset_minutes(hour_start + 59)
        for utc_minute in range(hour_start, hour_start + 60):
            if start_offset == end_offset:
                wall = utc_minute + start_offset - base
            else:
                wall = utc_minute + offset_minutes(utc_minute) - base
            if previous is not None and wall > previous + 1:
                for skipped in range(max(previous + 1, 0), min(wall, size)):
                    if due[skipped] == -1:
                        due[skipped] = utc_minute
            if 0 <= wall < size and due[wall] == -1:
                due[wall] = utc_minute
            previous = wall
    assert -1 not in due, (zone, year)
    return base, due


def reference(e: Expr, zone: tzinfo, year: int, first_day: int, end_day: int) -> list[int]:
    """The due instants (UTC minutes since the epoch, sorted) of the wall days
    ``first_day`` <= d < ``end_day`` of ``year`` (day 0 is January 1)."""
    _, due = wall_table(zone, year)
    instants: set[int] = set()
    walls = [h * 60 + m for h in sorted(e.hours) for m in sorted(e.minutes)]
    jan1 = date(year, 1, 1)
    for d in range(first_day, end_day):
        if e.day_matches(jan1 + timedelta(days=d)):
            instants.update(due[d * 1440 + w] for w in walls)
    return sorted(instants)


def window_bounds(zone: tzinfo, year: int, first_day: int, end_day: int) -> tuple[int, int]:
    """UTC minutes of the first instants of wall days ``first_day`` and ``end_day``."""
    _, due = wall_table(zone, year)
    return due[first_day * 1440], due[end_day * 1440]


def from_minutes(utc_minutes: int) -> datetime:
    return datetime.fromtimestamp(utc_minutes * MINUTE, timezone.utc)


def chain(c: crontab, zone: tzinfo, start: int, end: int) -> list[int]:
    """Chain ``next_after`` from just before ``start`` (UTC minutes) while before ``end``."""
    got: list[int] = []
    # subtract in UTC: arithmetic on an aware datetime in ``zone`` is wall-clock arithmetic
    dt = (from_minutes(start) - timedelta(microseconds=1)).astimezone(zone)
    end_ts = end * MINUTE
    while True:
        dt = c.next_after(dt, zone)
        ts = dt.timestamp()  # compare instants: aware datetimes in one zone compare walls
        if ts >= end_ts:
            return got
        assert ts % MINUTE == 0, f"{c!r}: {dt.isoformat()} is not on a minute"
        assert dt.tzinfo is zone, f"{c!r}: {dt!r} is not in {zone_name(zone)}"
        got.append(int(ts) // MINUTE)


def transition_days(zone: tzinfo, year: int) -> list[int]:
    """Day numbers in ``year`` whose UTC offset at the end differs from the start."""
    jan1 = date(year, 1, 1)
    days = []
    for d in range(days_in(year)):
        day = jan1 + timedelta(days=d)
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).astimezone(zone)
        if start.utcoffset() != (start + timedelta(days=1)).utcoffset():
            days.append(d)
    return days


def days_in(year: int) -> int:
    return (date(year + 1, 1, 1) - date(year, 1, 1)).days


def transition_weeks(zone: tzinfo, year: int, before: int = 3) -> list[tuple[int, int]]:
    """Windows of wall days around the daylight-saving transitions (UTC: Berlin's), from
    ``before`` days before to ``before`` days after (a week by default)."""
    days = transition_days(BERLIN if zone is UTC else zone, year)
    assert days, (zone, year)
    return [(max(d - before, 0), min(d + before + 1, days_in(year))) for d in days]


def mismatch(e: Expr, zone: tzinfo, want: list[int], got: list[int]) -> str:
    """A short description of where two due-time sequences part."""
    at = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))

    def show(seq: list[int]) -> str:
        part = seq[max(at - 2, 0) : at + 3]
        return ", ".join(from_minutes(m).astimezone(zone).isoformat() for m in part)

    return (
        f"{e} in {zone_name(zone)}: {len(want)} due times expected, {len(got)} got;"
        f" first difference at #{at}:\n  want {show(want)}\n  got  {show(got)}"
    )


def compare(
    e: Expr,
    zone: tzinfo,
    year: int,
    first_day: int,
    end_day: int,
    rng: Optional[random.Random] = None,
    probes: int = 0,
) -> list[int]:
    """Chained ``next_after`` over the wall days ``first_day`` <= d < ``end_day`` gives
    exactly the reference; then ``probes`` calls from random instants in the window."""
    want = reference(e, zone, year, first_day, end_day)
    start, end = window_bounds(zone, year, first_day, end_day)
    got = chain(e.build(), zone, start, end)
    assert got == want, mismatch(e, zone, want, got)
    if rng is not None:
        probe(e, zone, want, start, rng, probes)
    return want


def probe(
    e: Expr, zone: tzinfo, want: list[int], start: int, rng: random.Random, count: int
) -> None:
    """``next_after`` from arbitrary instants after ``start`` (seconds, microseconds, a
    repeated hour's second occurrence, a UTC datetime with ``tz``) is the first reference
    time strictly after."""
    if not want:
        return
    c = e.build()
    seconds = [m * MINUTE for m in want]
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:  # exactly at a due time, or a hair before it
            ts = float(rng.choice(seconds)) - rng.choice((0, 0, 1e-6, 1, 59))
        else:
            ts = rng.uniform(start * MINUTE, seconds[-1])
        dt = datetime.fromtimestamp(ts, timezone.utc)
        expected_index = bisect.bisect_right(seconds, dt.timestamp())
        if expected_index == len(seconds) or ts < start * MINUTE:
            continue
        expected = from_minutes(want[expected_index])
        given = dt if kind > 0.8 else dt.astimezone(zone)
        got = c.next_after(given, zone)
        # compare instants: == between zones is False for a time in a repeated hour (PEP 495)
        assert got.timestamp() == expected.timestamp(), (
            f"{e} in {zone_name(zone)}: next_after({given.isoformat()}) is"
            f" {got.isoformat()}, want {expected.astimezone(zone).isoformat()}"
        )
        assert got.tzinfo is zone, (e, got)


# --- the reference itself ---------------------------------------------------------------


def test_reference_tables_know_the_transitions() -> None:
    """The brute-force wall table agrees with what everybody knows about 2024."""

    def due(zone: tzinfo, month: int, day: int, hour: int, minute: int) -> datetime:
        base, table = wall_table(zone, 2024)
        wall = (datetime(2024, month, day, hour, minute) - EPOCH) // timedelta(minutes=1)
        return from_minutes(table[wall - base])

    assert transition_days(BERLIN, 2024) == [90, 300]  # March 31, October 27
    assert transition_days(NEW_YORK, 2024) == [69, 307]  # March 10, November 3
    assert transition_days(UTC, 2024) == []
    # spring forward: the whole gap runs at its end
    assert due(BERLIN, 3, 31, 2, 0) == due(BERLIN, 3, 31, 2, 59) == due(BERLIN, 3, 31, 3, 0)
    assert due(BERLIN, 3, 31, 3, 0) == datetime(2024, 3, 31, 1, tzinfo=timezone.utc)
    assert due(NEW_YORK, 3, 10, 2, 30) == datetime(2024, 3, 10, 7, tzinfo=timezone.utc)
    # fall back: the first occurrence
    assert due(BERLIN, 10, 27, 2, 30) == datetime(2024, 10, 27, 0, 30, tzinfo=timezone.utc)
    assert due(BERLIN, 10, 27, 3, 0) == datetime(2024, 10, 27, 2, tzinfo=timezone.utc)
    assert due(NEW_YORK, 11, 3, 1, 30) == datetime(2024, 11, 3, 5, 30, tzinfo=timezone.utc)
    assert due(NEW_YORK, 11, 3, 2, 0) == datetime(2024, 11, 3, 7, tzinfo=timezone.utc)
    # Lord Howe Island shifts by 30 minutes: 02:00 -> 02:30 (+10:30 -> +11) on 2024-10-06
    assert due(LORD_HOWE, 10, 6, 2, 15) == datetime(2024, 10, 5, 15, 30, tzinfo=timezone.utc)


# --- handwritten cases on the transition days -------------------------------------------


def utc(*args: int) -> int:
    return (datetime(*args) - EPOCH) // timedelta(minutes=1)  # type: ignore[arg-type]


HANDWRITTEN = [
    # zone, expression, wall day (y, m, d), the day's due instants in UTC (y, m, d, h, mi)
    (  # Berlin spring forward 02:00 CET -> 03:00 CEST: 02:30 runs at 03:00 CEST
        BERLIN,
        expr(30, 2, minutes={30}, hours={2}),
        (2024, 3, 31),
        [(2024, 3, 31, 1, 0)],
    ),
    (  # the gap's times and 03:00 itself run once, together
        BERLIN,
        expr("0,30", "1-3", minutes={0, 30}, hours={1, 2, 3}),
        (2024, 3, 31),
        [(2024, 3, 31, 0, 0), (2024, 3, 31, 0, 30), (2024, 3, 31, 1, 0), (2024, 3, 31, 1, 30)],
    ),
    (  # Berlin fall back 03:00 CEST -> 02:00 CET: the first 02:xx only
        BERLIN,
        expr("*/20", "2,3", "sun", minutes={0, 20, 40}, hours={2, 3}, dows={0}),
        (2024, 10, 27),
        [
            (2024, 10, 27, 0, 0),
            (2024, 10, 27, 0, 20),
            (2024, 10, 27, 0, 40),
            (2024, 10, 27, 2, 0),
            (2024, 10, 27, 2, 20),
            (2024, 10, 27, 2, 40),
        ],
    ),
    (  # New York spring forward 02:00 EST -> 03:00 EDT
        NEW_YORK,
        expr("15,45", "1-3", minutes={15, 45}, hours={1, 2, 3}),
        (2024, 3, 10),
        [
            (2024, 3, 10, 6, 15),
            (2024, 3, 10, 6, 45),
            (2024, 3, 10, 7, 0),
            (2024, 3, 10, 7, 15),
            (2024, 3, 10, 7, 45),
        ],
    ),
    (  # New York fall back 02:00 EDT -> 01:00 EST: 01:xx at its first occurrence
        NEW_YORK,
        expr(
            "0,59",
            "1,2",
            "7",
            "1-7",
            "nov",
            minutes={0, 59},
            hours={1, 2},
            dows={0},
            doms=set(range(1, 8)),
            months={11},
        ),
        (2024, 11, 3),
        [(2024, 11, 3, 5, 0), (2024, 11, 3, 5, 59), (2024, 11, 3, 7, 0), (2024, 11, 3, 7, 59)],
    ),
    (  # 2025 as well: Berlin March 30, New York November 2
        BERLIN,
        expr(
            0,
            "*/1",
            "sunday",
            "25-31",
            "mar",
            minutes={0},
            hours=set(range(24)),
            dows={0},
            doms=set(range(25, 32)),
            months={3},
        ),
        (2025, 3, 30),
        [(2025, 3, 29, 23, 0), (2025, 3, 30, 0, 0), *[(2025, 3, 30, h, 0) for h in range(1, 22)]],
    ),
    (
        NEW_YORK,
        expr("*/30", "0-3", minutes={0, 30}, hours={0, 1, 2, 3}),
        (2025, 11, 2),
        [
            (2025, 11, 2, 4, 0),
            (2025, 11, 2, 4, 30),
            (2025, 11, 2, 5, 0),
            (2025, 11, 2, 5, 30),
            (2025, 11, 2, 7, 0),
            (2025, 11, 2, 7, 30),
            (2025, 11, 2, 8, 0),
            (2025, 11, 2, 8, 30),
        ],
    ),
    (  # Santiago: midnight does not exist on 2024-09-08 (00:00 -04 -> 01:00 -03)
        SANTIAGO,
        expr("0,30", "0,1", minutes={0, 30}, hours={0, 1}),
        (2024, 9, 8),
        [(2024, 9, 8, 4, 0), (2024, 9, 8, 4, 30)],
    ),
    (  # Lord Howe: 02:00 -> 02:30 (+10:30 -> +11); 02:00-02:29 run at 02:30
        LORD_HOWE,
        expr("*/10", 2, minutes={0, 10, 20, 30, 40, 50}, hours={2}),
        (2024, 10, 6),
        [(2024, 10, 5, 15, 30), (2024, 10, 5, 15, 40), (2024, 10, 5, 15, 50)],
    ),
]


@pytest.mark.parametrize(
    ("zone", "e", "day", "expected"),
    HANDWRITTEN,
    ids=[f"{zone_name(z)}-{y}-{m:02}-{d:02}-{e}" for z, e, (y, m, d), _ in HANDWRITTEN],
)
def test_transition_days_by_hand(
    zone: tzinfo, e: Expr, day: tuple[int, int, int], expected: list[tuple[int, ...]]
) -> None:
    year = day[0]
    d = (date(*day) - date(year, 1, 1)).days
    want = [utc(*t) for t in expected]
    assert reference(e, zone, year, d, d + 1) == want, "the reference disagrees with the case"
    assert compare(e, zone, year, d, d + 1) == want
    # and over the surrounding week, with arbitrary starting points
    first, end = max(d - 3, 0), d + 4
    compare(e, zone, year, first, end, random.Random(d), 200)


@pytest.mark.slow
@pytest.mark.parametrize(
    "e",
    [
        expr("*/5", minutes=set(range(0, 60, 5))),
        expr(),
        expr("*", "1-3", hours={1, 2, 3}),
        expr("*/7", "*/2", minutes=set(range(0, 60, 7)), hours=set(range(0, 24, 2))),
        expr("0-59/13", "22-4", minutes={0, 13, 26, 39, 52}, hours={22, 23, 0, 1, 2, 3, 4}),
        expr("*/15", "*", "sat-mon", dows={6, 0, 1}, minutes={0, 15, 30, 45}),
    ],
    ids=str,
)
@pytest.mark.parametrize("zone", [*ZONES, SANTIAGO, LORD_HOWE], ids=zone_name)
def test_dense_expressions_over_the_transition_weeks(e: Expr, zone: tzinfo) -> None:
    every_minute = len(e.minutes) == 60 and len(e.hours) == 24
    for year in (2024,) if every_minute else (2024, 2025):
        for first, end in transition_weeks(zone, year, 1 if every_minute else 3):
            compare(e, zone, year, first, end, random.Random(first), 50)


# --- generated expressions --------------------------------------------------------------


def wrapped(low: int, top: int, start: int, end: int, step: int) -> list[int]:
    """``start``, ``start + 1``, ... ``end`` on a dial from ``low`` to ``top``, every
    ``step``-th one (ranges with ``start > end`` go round)."""
    size = top - low + 1
    length = (end - start) % size + 1
    return [low + (start - low + k) % size for k in range(0, length, step)]


class Generator:
    """Random crontab fields: (argument, meaning) pairs, biased to sparse expressions that
    hit the hours around the daylight-saving transitions."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, *choices):  # type: ignore[no-untyped-def]
        return self.rng.choice(choices)()

    def numbers(self, low: int, top: int, favourite: list[int], count: int) -> list[int]:
        pool = [*favourite, *favourite, *range(low, top + 1)]
        return sorted({self.rng.choice(pool) for _ in range(count)})

    def minute(self) -> tuple[object, set[int]]:
        r = self.rng
        fav = [0, 0, 15, 30, 30, 45, 59]

        def single():  # type: ignore[no-untyped-def]
            n = r.choice([*fav, *range(60)])
            return (n if r.random() < 0.3 else str(n)), {n}

        def listed():  # type: ignore[no-untyped-def]
            ns = self.numbers(0, 59, fav, r.randint(2, 3))
            if r.random() < 0.2:
                return tuple(ns), set(ns)
            return ",".join(map(str, ns)), set(ns)

        def stepped():  # type: ignore[no-untyped-def]
            n = r.choice([10, 15, 20, 25, 30, 40, 45])
            return f"*/{n}", set(range(0, 60, n))

        def range_step():  # type: ignore[no-untyped-def]
            a = r.randint(0, 50)
            b = r.randint(a, 59)
            n = r.randint(7, 30)
            return f"{a}-{b}/{n}", set(range(a, b + 1, n))

        def start_step():  # type: ignore[no-untyped-def]
            a, n = r.randint(0, 30), r.randint(15, 40)
            return f"{a}/{n}", set(range(a, 60, n))

        def short_range():  # type: ignore[no-untyped-def]
            a = r.randint(0, 57)
            b = a + r.randint(0, 2)
            return f"{a}-{b}", set(range(a, b + 1))

        return self.pick(single, single, listed, stepped, range_step, start_step, short_range)

    def hour(self) -> tuple[object, set[int]]:
        r = self.rng
        fav = [1, 2, 2, 2, 3, 3, 3, 0, 4]

        def single():  # type: ignore[no-untyped-def]
            n = r.choice([*fav, *fav, *range(24)])
            return (n if r.random() < 0.3 else str(n)), {n}

        def listed():  # type: ignore[no-untyped-def]
            ns = self.numbers(0, 23, fav, r.randint(2, 3))
            if r.random() < 0.2:
                return set(ns), set(ns)
            return ",".join(map(str, ns)), set(ns)

        def short_range():  # type: ignore[no-untyped-def]
            a = r.choice([0, 1, 1, 2, 2, 3, 12, 20])
            b = a + r.randint(0, 2)
            return f"{a}-{b}", set(range(a, b + 1))

        def wrapping():  # type: ignore[no-untyped-def]
            a, b = r.randint(21, 23), r.randint(0, 3)
            n = r.choice([1, 1, 2, 3])
            text = f"{a}-{b}" if n == 1 else f"{a}-{b}/{n}"
            return text, set(wrapped(0, 23, a, b, n))

        def stepped():  # type: ignore[no-untyped-def]
            n = r.choice([3, 4, 5, 6, 7, 8, 12])
            return f"*/{n}", set(range(0, 24, n))

        def start_step():  # type: ignore[no-untyped-def]
            a, n = r.randint(0, 5), r.choice([5, 6, 8, 10])
            return f"{a}/{n}", set(range(a, 24, n))

        def range_step():  # type: ignore[no-untyped-def]
            a = r.randint(0, 3)
            b, n = r.randint(a + 1, 23), r.randint(2, 9)
            return f"{a}-{b}/{n}", set(range(a, b + 1, n))

        return self.pick(
            single, single, listed, short_range, wrapping, stepped, start_step, range_step
        )

    def day_of_week(self) -> tuple[object, set[int]]:
        r = self.rng

        def star():  # type: ignore[no-untyped-def]
            return "*", set(range(7))

        def name():  # type: ignore[no-untyped-def]
            n = r.choice([0, 0, 0, 1, 2, 3, 4, 5, 6])
            text = r.choice([DAY_NAMES[n], LONG_DAY_NAMES[n], DAY_NAMES[n].upper(), str(n)])
            if n == 0 and r.random() < 0.4:
                text = r.choice(["7", 7, 0])
            return text, {n}

        def listed():  # type: ignore[no-untyped-def]
            ns = sorted({r.choice([0, 0, 6, 1, 2, 3, 4, 5]) for _ in range(r.randint(2, 3))})
            spelled = [
                r.choice([DAY_NAMES[n], str(n)]) if n else r.choice(["sun", "0", "7"]) for n in ns
            ]
            return ",".join(spelled), set(ns)

        def ranged():  # type: ignore[no-untyped-def]
            a, b = r.randint(0, 6), r.randint(0, 6)
            n = r.choice([1, 1, 1, 2, 3])
            spell = r.choice([str, lambda i: DAY_NAMES[i]])
            text = f"{spell(a)}-{spell(b)}" + (f"/{n}" if n > 1 else "")
            return text, set(wrapped(0, 6, a, b, n))

        def to_seven():  # type: ignore[no-untyped-def]
            a = r.randint(1, 6)
            return f"{a}-7", {*range(a, 7), 0}

        def stepped():  # type: ignore[no-untyped-def]
            n = r.choice([2, 3, 4])
            return f"*/{n}", set(range(0, 7, n))

        return self.pick(star, star, star, name, name, listed, ranged, to_seven, stepped)

    def day_of_month(self) -> tuple[object, set[int]]:
        r = self.rng

        def star():  # type: ignore[no-untyped-def]
            return "*", set(range(1, 32))

        def single():  # type: ignore[no-untyped-def]
            n = r.choice([1, 8, 10, 13, 15, 29, 30, 31, r.randint(1, 31)])
            return str(n), {n}

        def ranged():  # type: ignore[no-untyped-def]
            a = r.choice([1, 1, 8, 24, 25, 26, 27, 28])
            b = min(a + r.randint(3, 7), 31)
            return f"{a}-{b}", set(range(a, b + 1))

        def stepped():  # type: ignore[no-untyped-def]
            n = r.choice([2, 5, 7, 10])
            if r.random() < 0.5:
                return f"*/{n}", set(range(1, 32, n))
            a = r.randint(1, 20)
            return f"{a}-31/{n}", set(range(a, 32, n))

        def listed():  # type: ignore[no-untyped-def]
            ns = sorted({r.randint(1, 31) for _ in range(3)} | {r.choice([3, 10, 27, 31])})
            return ",".join(map(str, ns)), set(ns)

        return self.pick(star, star, star, single, ranged, stepped, listed)

    def month_of_year(self) -> tuple[object, set[int]]:
        r = self.rng

        def star():  # type: ignore[no-untyped-def]
            return "*", set(range(1, 13))

        def transitions():  # type: ignore[no-untyped-def]
            ns = sorted({r.choice([3, 10, 11]) for _ in range(2)} | {r.randint(1, 12)})
            spelled = [r.choice([MONTH_NAMES[n - 1], str(n)]) for n in ns]
            return ",".join(spelled), set(ns)

        def ranged():  # type: ignore[no-untyped-def]
            a, b = r.randint(1, 12), r.randint(1, 12)
            n = r.choice([1, 1, 2, 3])
            spell = r.choice(
                [str, lambda i: MONTH_NAMES[i - 1], lambda i: MONTH_NAMES[i - 1].upper()]
            )
            text = f"{spell(a)}-{spell(b)}" + (f"/{n}" if n > 1 else "")
            return text, set(wrapped(1, 12, a, b, n))

        def stepped():  # type: ignore[no-untyped-def]
            n = r.choice([2, 3, 4, 5])
            return f"*/{n}", set(range(1, 13, n))

        return self.pick(star, star, star, transitions, transitions, ranged, stepped)

    def expression(self) -> Expr:
        fields = [
            self.minute(),
            self.hour(),
            self.day_of_week(),
            self.day_of_month(),
            self.month_of_year(),
        ]
        if self.rng.random() < 0.08:  # a dense one, compared over the transition weeks
            fields[0] = self.rng.choice([("*", set(range(60))), ("*/2", set(range(0, 60, 2)))])
        (m, ms), (h, hs), (dw, dws), (dm, dms), (mo, mos) = fields
        return Expr((m, h, dw, dm, mo), *map(frozenset, (ms, hs, dws, dms, mos)))


def possible(e: Expr) -> bool:
    """Whether the day of month exists in some month of the expression (in a leap year)."""
    longest = {m: (date(2000 + m // 12, m % 12 + 1, 1) - date(2000, m, 1)).days for m in e.months}
    return any(d <= longest[m] for m in e.months for d in e.doms)


def generate() -> list[tuple[int, Expr]]:
    gen = Generator(random.Random(SEED))
    return [(YEARS[i % len(YEARS)], gen.expression()) for i in range(GENERATED)]


CASES = generate()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("year", "e"), CASES, ids=[f"{i}-{year}-{e}" for i, (year, e) in enumerate(CASES)]
)
def test_generated_expressions_over_a_year(year: int, e: Expr) -> None:
    if not possible(e):
        with pytest.raises(ValueError, match="never match"):
            e.build()
        return
    rng = random.Random(f"{year} {e}")
    for zone in ZONES:
        if len(reference(e, zone, year, 0, days_in(year))) <= FULL_YEAR_LIMIT:
            compare(e, zone, year, 0, days_in(year), rng, 40)
        else:
            for first, end in transition_weeks(zone, year, 1):
                compare(e, zone, year, first, end, rng, 20)


def test_generator_covers_the_forms_and_the_transitions() -> None:
    """The generated set is not degenerate: it holds every field form and many expressions
    due at 02:xx and 03:xx local on transition days."""
    texts = [" ".join(str(a) for a in e.args) for _, e in CASES]
    joined = " ".join(texts)
    for form in ("*/", "-", ",", "/", "sun", "7", "mar", "*"):
        assert form in joined, form
    assert any(isinstance(a, int) for _, e in CASES for a in e.args)
    assert any(not isinstance(a, (str, int)) for _, e in CASES for a in e.args)
    assert sum(not possible(e) for _, e in CASES) < len(CASES) // 10
    both_days = sum(
        e.dows != frozenset(range(7)) and e.doms != frozenset(range(1, 32)) for _, e in CASES
    )
    assert both_days >= 20
    on_transitions = {zone_name(z): 0 for z in ZONES[1:]}
    for year, e in CASES:
        if not e.hours & {1, 2, 3}:
            continue
        for zone in ZONES[1:]:
            jan1 = date(year, 1, 1)
            if any(e.day_matches(jan1 + timedelta(days=d)) for d in transition_days(zone, year)):
                on_transitions[zone_name(zone)] += 1
    assert min(on_transitions.values()) >= 30, on_transitions

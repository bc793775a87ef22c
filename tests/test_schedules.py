"""Tests for flask_tasks.schedules: crontab, every, schedule_from, timezone_named."""

from __future__ import annotations

import copy
import pickle
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from flask_tasks.schedules import crontab, every, schedule_from, timezone_named

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def runs(schedule: crontab | every, start: datetime, end: datetime) -> list[str]:
    """Iterate next_after from start up to and including end; ISO strings with offsets."""
    # compare in UTC: aware datetimes sharing a tzinfo compare by wall clock, ignoring fold
    out: list[datetime] = []
    due = schedule.next_after(start)
    while due.astimezone(UTC) <= end.astimezone(UTC):
        out.append(due)
        due = schedule.next_after(due)
    instants = [d.astimezone(UTC) for d in out]
    assert all(a < b for a, b in zip(instants, instants[1:])), "due times must increase"
    return [d.isoformat(timespec="minutes") for d in out]


def whole_day(schedule: crontab, tz: ZoneInfo, year: int, month: int, day: int) -> list[str]:
    """Due times from local midnight (excluded) to the next local midnight (included)."""
    start = datetime(year, month, day, tzinfo=tz)
    return runs(schedule, start, start + timedelta(days=1))


def brute_force_next(c: crontab, dt: datetime) -> datetime:
    """Reference: step minute by minute (UTC only, no DST)."""
    t = dt.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(60 * 24 * 400):
        if (
            t.minute in c.minute
            and t.hour in c.hour
            and (t.weekday() + 1) % 7 in c.day_of_week
            and t.day in c.day_of_month
            and t.month in c.month_of_year
        ):
            return t
        t += timedelta(minutes=1)
    raise AssertionError("no match in brute force window")


# --- crontab syntax ---------------------------------------------------------------------


def test_defaults_are_every_minute() -> None:
    c = crontab()
    assert c.minute == frozenset(range(60))
    assert c.hour == frozenset(range(24))
    assert c.day_of_week == frozenset(range(7))
    assert c.day_of_month == frozenset(range(1, 32))
    assert c.month_of_year == frozenset(range(1, 13))
    assert c.next_after(utc(2024, 5, 6, 7, 8, 9)) == utc(2024, 5, 6, 7, 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", set(range(60))),
        ("5", {5}),
        ("1,5", {1, 5}),
        ("1-5", {1, 2, 3, 4, 5}),
        ("*/15", {0, 15, 30, 45}),
        ("10-50/5", set(range(10, 51, 5))),
        ("10-50/15", {10, 25, 40}),
        ("5/20", {5, 25, 45}),
        ("0,10-12,*/30", {0, 10, 11, 12, 30}),
        (" 1 , 2 ", {1, 2}),
        ("58-2", {58, 59, 0, 1, 2}),
        ("*/90", {0}),
    ],
)
def test_minute_syntax(text: str, expected: set[int]) -> None:
    assert crontab(minute=text).minute == expected


def test_hour_wrapping_range_and_step() -> None:
    assert crontab(hour="22-2").hour == {22, 23, 0, 1, 2}
    assert crontab(hour="*/6").hour == {0, 6, 12, 18}
    assert crontab(hour="20-4/2").hour == {20, 22, 0, 2, 4}


def test_day_of_month_and_month_steps_start_at_one() -> None:
    assert crontab(day_of_month="*/10").day_of_month == {1, 11, 21, 31}
    assert crontab(month_of_year="*/3").month_of_year == {1, 4, 7, 10}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jan", {1}),
        ("DEC", {12}),
        ("Feb,Mar", {2, 3}),
        ("jan-mar", {1, 2, 3}),
        ("nov-feb", {11, 12, 1, 2}),
        ("january,september", {1, 9}),
        ("jan-dec/6", {1, 7}),
    ],
)
def test_month_names(text: str, expected: set[int]) -> None:
    assert crontab(month_of_year=text).month_of_year == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sun", {0}),
        ("0", {0}),
        ("7", {0}),
        ("SUNDAY", {0}),
        ("Monday", {1}),
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("mon-sun", set(range(7))),
        ("sat-sun", {6, 0}),
        ("fri-mon", {5, 6, 0, 1}),
        ("5-7", {5, 6, 0}),
        ("0-7", set(range(7))),
        ("7-7", {0}),
        ("*/2", {0, 2, 4, 6}),
        ("tue,thu", {2, 4}),
        ("wednesday-friday", {3, 4, 5}),
    ],
)
def test_day_of_week_names_and_sunday(text: str, expected: set[int]) -> None:
    assert crontab(day_of_week=text).day_of_week == expected


def test_sunday_as_0_and_7_schedule_the_same_day() -> None:
    start = utc(2024, 6, 3)  # a Monday
    expected = utc(2024, 6, 9)  # the next Sunday
    for spelling in ("0", "7", "sun", 0, 7, [7]):
        assert crontab(0, 0, day_of_week=spelling).next_after(start) == expected
    assert crontab(day_of_week=0) == crontab(day_of_week=7) == crontab(day_of_week="sunday")


def test_ints_and_iterables_of_ints() -> None:
    c = crontab(minute=[0, 30], hour=range(9, 18), day_of_week={1, 2}, day_of_month=15)
    assert c.minute == {0, 30}
    assert c.hour == set(range(9, 18))
    assert c.day_of_week == {1, 2}
    assert c.day_of_month == {15}
    assert c == crontab("0,30", "9-17", "mon,tue", "15")


# --- day_of_month AND day_of_week -------------------------------------------------------


def test_day_of_month_and_day_of_week_both_must_match_first_monday() -> None:
    c = crontab(minute=0, hour=9, day_of_week="mon", day_of_month="1-7")
    got = runs(c, utc(2024, 1, 1, 9), utc(2024, 12, 31))
    assert got == [
        "2024-02-05T09:00+00:00",
        "2024-03-04T09:00+00:00",
        "2024-04-01T09:00+00:00",
        "2024-05-06T09:00+00:00",
        "2024-06-03T09:00+00:00",
        "2024-07-01T09:00+00:00",
        "2024-08-05T09:00+00:00",
        "2024-09-02T09:00+00:00",
        "2024-10-07T09:00+00:00",
        "2024-11-04T09:00+00:00",
        "2024-12-02T09:00+00:00",
    ]
    # classic cron's OR would also run on, e.g., Tuesday 2 January and Monday 8 January
    assert c.next_after(utc(2023, 12, 31)) == utc(2024, 1, 1, 9)


def test_friday_the_13th() -> None:
    c = crontab(0, 0, day_of_week="fri", day_of_month=13)
    assert runs(c, utc(2024, 1, 1), utc(2025, 12, 31)) == [
        "2024-09-13T00:00+00:00",
        "2024-12-13T00:00+00:00",
        "2025-06-13T00:00+00:00",
    ]


def test_only_one_day_field_restricted() -> None:
    assert crontab(0, 0, day_of_month=15).next_after(utc(2024, 1, 16)) == utc(2024, 2, 15)
    assert crontab(0, 0, day_of_week="wed").next_after(utc(2024, 1, 1)) == utc(2024, 1, 3)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hour": 25}, "crontab hour '25' is out of range 0-23"),
        ({"hour": "25"}, "crontab hour '25' is out of range 0-23"),
        ({"minute": "60"}, "crontab minute '60' is out of range 0-59"),
        ({"minute": "1,60"}, "crontab minute '60' is out of range 0-59"),
        ({"minute": "50-61"}, "crontab minute '61' is out of range 0-59"),
        ({"minute": -1}, "crontab minute '-1' is not a number"),
        ({"day_of_week": 8}, "crontab day_of_week '8' is out of range 0-7"),
        ({"day_of_month": 0}, "crontab day_of_month '0' is out of range 1-31"),
        ({"day_of_month": "32"}, "crontab day_of_month '32' is out of range 1-31"),
        ({"month_of_year": 13}, "crontab month_of_year '13' is out of range 1-12"),
        ({"month_of_year": "0"}, "crontab month_of_year '0' is out of range 1-12"),
        ({"day_of_week": "mnday"}, "crontab day_of_week 'mnday' is not a number or a day name"),
        ({"day_of_week": "jan"}, "crontab day_of_week 'jan' is not a number or a day name"),
        ({"month_of_year": "sun"}, "crontab month_of_year 'sun' is not a number or a month"),
        ({"hour": "mon"}, "crontab hour 'mon' is not a number"),
        ({"minute": "*/0"}, "crontab minute '*/0' needs a step of at least 1"),
        ({"minute": "*/"}, "crontab minute '*/' needs a step"),
        ({"minute": "*/x"}, "crontab minute '*/x' needs a step"),
        ({"minute": "1-5/-1"}, "crontab minute '1-5/-1' needs a step"),
        ({"minute": "1-"}, "crontab minute '' is not a number"),
        ({"minute": "**"}, "crontab minute '**' is not a number"),
        ({"minute": ""}, "crontab minute '' has an empty item"),
        ({"minute": "1,,2"}, "crontab minute '1,,2' has an empty item"),
        ({"hour": "1 2"}, "crontab hour '1 2' is not a number"),
        ({"hour": "²"}, "crontab hour '²' is not a number"),
        ({"hour": []}, "crontab hour [] must be a non-empty collection of ints"),
        ({"hour": ["1"]}, "crontab hour ['1'] must be a non-empty collection of ints"),
        ({"hour": [1, 24]}, "crontab hour '24' is out of range 0-23"),
        ({"hour": True}, "crontab hour True must be cron text, an int or ints"),
        ({"hour": 3.5}, "crontab hour 3.5 must be cron text, an int or ints"),
        ({"hour": None}, "crontab hour None must be cron text, an int or ints"),
    ],
)
def test_bad_fields_name_the_field_and_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        crontab(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("day_of_month", "month_of_year", "message"),
    [
        (31, 2, "crontab day_of_month '31' and month_of_year '2' never match"),
        ("30", "feb", "crontab day_of_month '30' and month_of_year 'feb' never match"),
        ("31", "apr,jun,sep,nov", "day_of_month '31' and month_of_year 'apr,jun,sep,nov'"),
        ("30,31", [2], "crontab day_of_month '30,31' and month_of_year '2' never match"),
    ],
)
def test_dates_that_never_exist_are_rejected(
    day_of_month: object, month_of_year: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        crontab(day_of_month=day_of_month, month_of_year=month_of_year)  # type: ignore[arg-type]


def test_dates_that_exist_in_some_month_or_year_are_accepted() -> None:
    c = crontab(0, 0, day_of_month=31, month_of_year="feb,mar")
    assert c.next_after(utc(2024, 1, 1)) == utc(2024, 3, 31)
    leap = crontab(0, 0, day_of_month=29, month_of_year=2)
    assert leap.next_after(utc(2024, 1, 1)) == utc(2024, 2, 29)
    assert leap.next_after(utc(2024, 2, 29)) == utc(2028, 2, 29)


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        crontab().next_after(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        every(10).next_after(datetime(2024, 1, 1))


def test_search_is_bounded() -> None:
    with pytest.raises(ValueError, match="is not due within 100 years"):
        crontab(month_of_year=1).next_after(utc(9999, 2, 1))


# --- next_after -------------------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    c = crontab(minute=30, hour=3)
    assert c.next_after(utc(2024, 5, 1, 3, 29, 59, 999999)) == utc(2024, 5, 1, 3, 30)
    assert c.next_after(utc(2024, 5, 1, 3, 30)) == utc(2024, 5, 2, 3, 30)
    assert c.next_after(utc(2024, 5, 1, 3, 30, 0, 1)) == utc(2024, 5, 2, 3, 30)
    every_minute = crontab()
    assert every_minute.next_after(utc(2024, 5, 1, 3, 30)) == utc(2024, 5, 1, 3, 31)


def test_month_and_year_ends() -> None:
    assert crontab(0, 0).next_after(utc(2024, 12, 31, 23, 59)) == utc(2025, 1, 1)
    assert crontab(59, 23).next_after(utc(2024, 1, 31, 23, 59)) == utc(2024, 2, 1, 23, 59)
    assert crontab(0, 0, day_of_month=1).next_after(utc(2024, 1, 1)) == utc(2024, 2, 1)
    assert crontab(0, 0, day_of_month=31).next_after(utc(2024, 1, 31)) == utc(2024, 3, 31)
    new_year = crontab(0, 0, day_of_month=1, month_of_year=1)
    assert new_year.next_after(utc(2024, 1, 1)) == utc(2025, 1, 1)
    last_of_feb = crontab(0, 12, day_of_month="28,29", month_of_year="feb")
    assert runs(last_of_feb, utc(2023, 1, 1), utc(2025, 1, 1)) == [
        "2023-02-28T12:00+00:00",
        "2024-02-28T12:00+00:00",
        "2024-02-29T12:00+00:00",
    ]


def test_leap_day_on_a_weekday_far_ahead() -> None:
    # Monday 29 February: 2044 after 2016; found by jumping, not minute by minute
    c = crontab(0, 0, day_of_week="mon", day_of_month=29, month_of_year="feb")
    assert c.next_after(utc(2016, 3, 1)) == utc(2044, 2, 29)
    century = crontab(0, 0, day_of_month=29, month_of_year=2)
    assert century.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is no leap year


@pytest.mark.parametrize(
    "spec",
    [
        ("*/7", "*", "*", "*", "*"),
        ("0", "*/5", "*", "*", "*"),
        ("15,45", "9-17", "mon-fri", "*", "*"),
        ("0", "0", "sat,sun", "*", "*"),
        ("30", "22-2", "*", "*/2", "*"),
        ("0", "12", "fri", "13", "*"),
        ("5/20", "3", "*", "1-7", "mar-may"),
        ("0", "0", "7", "1-7", "*"),
    ],
)
def test_matches_brute_force_in_utc(spec: tuple[str, str, str, str, str]) -> None:
    c = crontab(*spec)
    for start in (
        utc(2023, 12, 31, 23, 58, 30),
        utc(2024, 2, 28, 21, 15),
        utc(2024, 6, 30, 23, 59, 59),
        utc(2025, 3, 10, 4, 5),
    ):
        assert c.next_after(start) == brute_force_next(c, start), start


def test_time_zone_argument_and_default() -> None:
    c = crontab(minute=30, hour=3)
    due = c.next_after(utc(2024, 7, 1), tz=BERLIN)
    assert due == datetime(2024, 7, 1, 3, 30, tzinfo=BERLIN)
    assert due.tzinfo is BERLIN
    assert due == utc(2024, 7, 1, 1, 30)
    # default: dt's own time zone
    local = c.next_after(datetime(2024, 7, 1, tzinfo=NEW_YORK))
    assert local.tzinfo is NEW_YORK
    assert local == utc(2024, 7, 1, 7, 30)
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert c.next_after(datetime(2024, 7, 1, tzinfo=fixed)) == datetime(
        2024, 7, 1, 3, 30, tzinfo=fixed
    )
    # the same instant given in another zone gives the same answer
    assert c.next_after(utc(2024, 7, 1), tz=BERLIN) == c.next_after(
        datetime(2024, 7, 1, 2, tzinfo=BERLIN)
    )


# --- daylight saving --------------------------------------------------------------------


def test_berlin_spring_forward_nonexistent_time_runs_once_at_the_shift() -> None:
    # 2024-03-31: 02:00 CET -> 03:00 CEST; 02:30 does not exist
    c = crontab(minute=30, hour=2)
    got = runs(c, datetime(2024, 3, 29, 12, tzinfo=BERLIN), datetime(2024, 4, 2, tzinfo=BERLIN))
    assert got == [
        "2024-03-30T02:30+01:00",
        "2024-03-31T03:00+02:00",
        "2024-04-01T02:30+02:00",
    ]
    assert c.next_after(datetime(2024, 3, 31, 1, 59, tzinfo=BERLIN)) == utc(2024, 3, 31, 1)


def test_berlin_fall_back_repeated_time_runs_once_first_occurrence() -> None:
    # 2024-10-27: 03:00 CEST -> 02:00 CET; 02:30 occurs twice
    c = crontab(minute=30, hour=2)
    got = runs(c, datetime(2024, 10, 26, 12, tzinfo=BERLIN), datetime(2024, 10, 29, tzinfo=BERLIN))
    assert got == [
        "2024-10-27T02:30+02:00",
        "2024-10-28T02:30+01:00",
    ]
    # from inside the second occurrence the first one is already past
    second = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
    assert second.utcoffset() == timedelta(hours=1)
    assert c.next_after(second) == datetime(2024, 10, 28, 2, 30, tzinfo=BERLIN)


def test_new_york_spring_forward_and_fall_back() -> None:
    # 2024-03-10: 02:00 EST -> 03:00 EDT; 2024-11-03: 02:00 EDT -> 01:00 EST
    spring = crontab(minute=30, hour=2)
    assert runs(
        spring, datetime(2024, 3, 9, 12, tzinfo=NEW_YORK), datetime(2024, 3, 12, tzinfo=NEW_YORK)
    ) == ["2024-03-10T03:00-04:00", "2024-03-11T02:30-04:00"]
    fall = crontab(minute=30, hour=1)
    assert runs(
        fall, datetime(2024, 11, 2, 12, tzinfo=NEW_YORK), datetime(2024, 11, 5, tzinfo=NEW_YORK)
    ) == ["2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"]


def test_all_wall_times_in_the_gap_collapse_into_one_run() -> None:
    c = crontab(minute="*/15", hour="1-3")
    got = runs(c, datetime(2024, 3, 31, tzinfo=BERLIN), datetime(2024, 3, 31, 5, tzinfo=BERLIN))
    assert got == [
        "2024-03-31T01:00+01:00",
        "2024-03-31T01:15+01:00",
        "2024-03-31T01:30+01:00",
        "2024-03-31T01:45+01:00",
        "2024-03-31T03:00+02:00",  # 02:00, 02:15, 02:30, 02:45 and 03:00 itself: once
        "2024-03-31T03:15+02:00",
        "2024-03-31T03:30+02:00",
        "2024-03-31T03:45+02:00",
    ]


def test_every_quarter_hour_skips_the_repeated_hour() -> None:
    # each wall time runs once, at its first occurrence: nothing in the second 02:xx hour
    c = crontab(minute="*/15")
    start = datetime(2024, 10, 27, 1, 50, tzinfo=BERLIN)
    got = runs(c, start, datetime(2024, 10, 27, 3, 15, tzinfo=BERLIN))
    assert got == [
        "2024-10-27T02:00+02:00",
        "2024-10-27T02:15+02:00",
        "2024-10-27T02:30+02:00",
        "2024-10-27T02:45+02:00",
        "2024-10-27T03:00+01:00",
        "2024-10-27T03:15+01:00",
    ]
    inside_second = datetime(2024, 10, 27, 2, 20, tzinfo=BERLIN, fold=1)
    assert c.next_after(inside_second) == datetime(2024, 10, 27, 3, tzinfo=BERLIN)


def half_hours(first_hour: int, offset: str, day: str) -> list[str]:
    return [f"{day}T{h:02}:{m:02}{offset}" for h in range(first_hour, 24) for m in (0, 30)]


def test_berlin_whole_day_spring_forward() -> None:
    got = whole_day(crontab(minute="0,30"), BERLIN, 2024, 3, 31)
    assert got == [
        "2024-03-31T00:30+01:00",
        "2024-03-31T01:00+01:00",
        "2024-03-31T01:30+01:00",
        "2024-03-31T03:00+02:00",
        *half_hours(3, "+02:00", "2024-03-31")[1:],
        "2024-04-01T00:00+02:00",
    ]
    assert len(got) == 46  # 48 wall times; 02:00, 02:30 and 03:00 run once together


def test_berlin_whole_day_fall_back() -> None:
    got = whole_day(crontab(minute="0,30"), BERLIN, 2024, 10, 27)
    assert got == [
        "2024-10-27T00:30+02:00",
        "2024-10-27T01:00+02:00",
        "2024-10-27T01:30+02:00",
        "2024-10-27T02:00+02:00",
        "2024-10-27T02:30+02:00",
        *half_hours(3, "+01:00", "2024-10-27"),
        "2024-10-28T00:00+01:00",
    ]
    assert len(got) == 48  # each wall time once, though the day has 25 hours


def test_new_york_whole_day_hourly_both_directions() -> None:
    spring = whole_day(crontab(minute=0), NEW_YORK, 2024, 3, 10)
    assert spring == [
        "2024-03-10T01:00-05:00",
        "2024-03-10T03:00-04:00",  # 02:00 does not exist: runs at the shift, once
        *[f"2024-03-10T{h:02}:00-04:00" for h in range(4, 24)],
        "2024-03-11T00:00-04:00",
    ]
    fall = whole_day(crontab(minute=0), NEW_YORK, 2024, 11, 3)
    assert fall == [
        "2024-11-03T01:00-04:00",  # 01:00 occurs twice: only the first
        *[f"2024-11-03T{h:02}:00-05:00" for h in range(2, 24)],
        "2024-11-04T00:00-05:00",
    ]


def test_new_york_whole_day_nonexistent_and_repeated_minutes() -> None:
    c = crontab(minute="15,45", hour="1-3")
    assert whole_day(c, NEW_YORK, 2024, 3, 10) == [
        "2024-03-10T01:15-05:00",
        "2024-03-10T01:45-05:00",
        "2024-03-10T03:00-04:00",
        "2024-03-10T03:15-04:00",
        "2024-03-10T03:45-04:00",
    ]
    assert whole_day(c, NEW_YORK, 2024, 11, 3) == [
        "2024-11-03T01:15-04:00",
        "2024-11-03T01:45-04:00",
        "2024-11-03T02:15-05:00",
        "2024-11-03T02:45-05:00",
        "2024-11-03T03:15-05:00",
        "2024-11-03T03:45-05:00",
    ]


# --- every ------------------------------------------------------------------------------


def test_every_is_anchored_to_the_unix_epoch() -> None:
    s = every(7)
    due = s.next_after(utc(2024, 1, 1, 12, 0, 0))
    assert due.timestamp() % 7 == 0
    assert utc(2024, 1, 1, 12) < due <= utc(2024, 1, 1, 12, 0, 7)
    # any process asking at any moment in the same interval gets the same due time
    assert s.next_after(due - timedelta(seconds=6.5)) == due
    assert s.next_after(due - timedelta(microseconds=1)) == due
    assert every(3600).next_after(datetime(2024, 7, 1, 10, 20, tzinfo=BERLIN)) == datetime(
        2024, 7, 1, 11, tzinfo=BERLIN
    )
    assert every(timedelta(days=1)).next_after(datetime(2024, 7, 1, 10, tzinfo=BERLIN)) == utc(
        2024, 7, 2
    )
    assert every(10).next_after(utc(1969, 12, 31, 23, 59, 55)) == utc(1970, 1, 1)


def test_every_is_strictly_after_and_keeps_the_zone() -> None:
    s = every(10.0)
    assert s.next_after(utc(2024, 1, 1, 0, 0, 10)) == utc(2024, 1, 1, 0, 0, 20)
    assert s.next_after(utc(2024, 1, 1, 0, 0, 9, 999999)) == utc(2024, 1, 1, 0, 0, 10)
    assert s.next_after(datetime(2024, 1, 1, tzinfo=BERLIN)).tzinfo is BERLIN
    assert s.next_after(utc(2024, 1, 1), tz=NEW_YORK).tzinfo is NEW_YORK
    half = every(0.5)
    assert half.next_after(utc(2024, 1, 1, 0, 0, 0, 200000)) == utc(2024, 1, 1, 0, 0, 0, 500000)


def test_every_ignores_daylight_saving() -> None:
    # fall back day has 25 hours: 50 runs of every 30 minutes, in real time
    got = runs(
        every(1800), datetime(2024, 10, 27, tzinfo=BERLIN), datetime(2024, 10, 28, tzinfo=BERLIN)
    )
    assert len(got) == 50
    assert got[4:7] == [
        "2024-10-27T02:30+02:00",
        "2024-10-27T02:00+01:00",
        "2024-10-27T02:30+01:00",
    ]


def test_every_accepts_seconds_and_timedelta() -> None:
    assert every(90) == every(90.0) == every(timedelta(minutes=1, seconds=30))
    assert every(90).seconds == 90.0
    assert every(90).run_every == timedelta(seconds=90)
    assert every(0.1).run_every == timedelta(microseconds=100000)


@pytest.mark.parametrize(
    "value",
    [0, -1, -0.5, 0.0, float("nan"), float("inf"), 1e-9, timedelta(0), timedelta(seconds=-1)],
)
def test_every_rejects_non_positive(value: object) -> None:
    with pytest.raises(ValueError, match="positive interval") as info:
        every(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["10", None, True, [10], b"1"])
def test_every_rejects_non_numeric(value: object) -> None:
    with pytest.raises(ValueError, match="number of seconds or a timedelta") as info:
        every(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


# --- schedule_from ----------------------------------------------------------------------


def test_schedule_from_config_values() -> None:
    assert schedule_from(10.0) == every(10)
    assert schedule_from(10) == every(10)
    assert schedule_from(timedelta(minutes=5)) == every(300)
    c = crontab(hour=3, minute=30)
    assert schedule_from(c) is c
    e = every(5)
    assert schedule_from(e) is e


def test_schedule_from_rejects_other_values() -> None:
    with pytest.raises(TypeError, match=r"got str '\*/5 \* \* \* \*'.*use crontab\("):
        schedule_from("*/5 * * * *")
    for value in (None, True, [10], {"seconds": 10}):
        with pytest.raises(TypeError, match="a schedule must be a number of seconds"):
            schedule_from(value)
    with pytest.raises(ValueError, match="positive interval"):
        schedule_from(0)


# --- repr, equality, listing, immutability ----------------------------------------------


def test_crontab_repr_describe_and_to_dict() -> None:
    c = crontab(minute=30, hour=3)
    assert repr(c) == "<crontab: 30 3 * * * (m/h/dow/dom/moy)>"
    assert c.describe() == "crontab(minute='30', hour='3')"
    assert c.to_dict() == {
        "type": "crontab",
        "minute": "30",
        "hour": "3",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
    }
    first_monday = crontab(0, 9, "Mon", "1-7", [3, 1])
    assert repr(first_monday) == "<crontab: 0 9 mon 1-7 1,3 (m/h/dow/dom/moy)>"
    assert first_monday.describe() == (
        "crontab(minute='0', hour='9', day_of_week='mon', day_of_month='1-7', month_of_year='1,3')"
    )
    assert crontab().describe() == "crontab()"


def test_every_repr_describe_and_to_dict() -> None:
    assert repr(every(10)) == "<every 10 seconds>"
    assert every(1).describe() == "every 1 second"
    assert every(90).describe() == "every 90 seconds"
    assert every(120).describe() == "every 2 minutes"
    assert every(5400).describe() == "every 90 minutes"
    assert every(timedelta(hours=1)).describe() == "every 1 hour"
    assert every(timedelta(days=2)).describe() == "every 2 days"
    assert every(1.5).describe() == "every 1.5 seconds"
    assert every(0.000001).describe() == "every 0.000001 seconds"
    assert every(10).to_dict() == {"type": "every", "seconds": 10.0}
    assert every(0.25).to_dict() == {"type": "every", "seconds": 0.25}


def test_equality_and_hashing() -> None:
    assert crontab("*/30") == crontab("0,30") == crontab([0, 30])
    assert crontab(day_of_week="mon-fri") == crontab(day_of_week="1-5")
    assert crontab(month_of_year="jan") == crontab(month_of_year=1)
    assert crontab(0) != crontab(1)
    assert crontab(0) != every(60)
    assert every(60) != crontab(0)
    assert crontab() != "* * * * *"
    assert len({crontab("*/30"), crontab("0,30"), every(60), every(timedelta(minutes=1))}) == 2
    assert hash(every(60)) == hash(every(60.0))


def test_immutable_and_picklable() -> None:
    c = crontab(minute="*/15", day_of_week="sun")
    with pytest.raises(AttributeError, match="immutable"):
        c.minute = frozenset({1})
    with pytest.raises(AttributeError, match="immutable"):
        del c.hour
    e = every(5)
    with pytest.raises(AttributeError, match="immutable"):
        e._micros = 1
    for s in (c, e):
        restored = pickle.loads(pickle.dumps(s))
        assert restored == s
        assert repr(restored) == repr(s)
        assert copy.deepcopy(s) == s


# --- timezone_named ---------------------------------------------------------------------


def test_timezone_named() -> None:
    assert timezone_named("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert timezone_named("UTC").utcoffset(datetime(2024, 1, 1)) == timedelta(0)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe", "", "../etc/passwd", "/etc/x"])
def test_timezone_named_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="TASKS_TIMEZONE") as info:
        timezone_named(name)
    assert repr(name) in str(info.value)
    assert "tzdata" in str(info.value)

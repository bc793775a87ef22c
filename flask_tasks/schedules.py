"""Schedules for periodic tasks: :class:`crontab` and :class:`every`.

Every schedule has ``next_after(dt, tz=None)``: the first due time strictly after the aware
datetime ``dt``. :func:`schedule_from` turns a config value into a schedule. This module uses
only the standard library.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import MAXYEAR, date, datetime, timedelta, timezone, tzinfo
from typing import Any, Optional, Protocol, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronField", "Schedule", "crontab", "every", "schedule_from", "timezone_named"]

CronField = Union[str, int, Iterable[int]]
"""A crontab field: cron text (``"*/15"``, ``"1-5"``, ``"mon,wed"``), an int or ints."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
_SEARCH_YEARS = 100
_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTH_NAMES = (
    *("january", "february", "march", "april", "may", "june", "july", "august"),
    *("september", "october", "november", "december"),
)
_NAMES: dict[str, dict[str, int]] = {
    "day_of_week": {
        **{n: i for i, n in enumerate(_DAY_NAMES)},
        **{n[:3]: i for i, n in enumerate(_DAY_NAMES)},
    },
    "month_of_year": {
        **{n: i for i, n in enumerate(_MONTH_NAMES, 1)},
        **{n[:3]: i for i, n in enumerate(_MONTH_NAMES, 1)},
    },
}
# Accepted bounds; day_of_week accepts 7 for Sunday but cycles (``*``, wrapping ranges) over 0-6.
_BOUNDS = {
    "minute": (0, 59, 59),
    "hour": (0, 23, 23),
    "day_of_week": (0, 7, 6),
    "day_of_month": (1, 31, 31),
    "month_of_year": (1, 12, 12),
}


class Schedule(Protocol):
    """What the beat scheduler needs from a schedule; :class:`crontab` and :class:`every`
    both are one."""

    def next_after(self, dt: datetime, tz: Optional[tzinfo] = None) -> datetime:
        """Return the first due time strictly after the aware datetime ``dt``."""
        ...

    def describe(self) -> str:
        """Return a short text for listings."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible description."""
        ...


def _zone_of(dt: datetime, tz: Optional[tzinfo]) -> tzinfo:
    own = dt.tzinfo
    if own is None or dt.utcoffset() is None:
        raise ValueError(f"next_after() needs an aware datetime, got naive {dt!r}")
    return own if tz is None else tz


def _number(field: str, token: str) -> int:
    low, high, _ = _BOUNDS[field]
    if token.isascii() and token.isdigit():
        value = int(token)
    elif token in _NAMES.get(field, {}):
        value = _NAMES[field][token]
    else:
        kind = {"day_of_week": " or a day name", "month_of_year": " or a month name"}
        raise ValueError(f"crontab {field} {token!r} is not a number{kind.get(field, '')}")
    if not low <= value <= high:
        raise ValueError(f"crontab {field} {token!r} is out of range {low}-{high}")
    return value


def _parse_part(field: str, part: str) -> list[int]:
    """Expand one comma-separated item: ``*``, ``n``, ``a-b`` (wraps if a > b), with ``/step``."""
    low, _, top = _BOUNDS[field]
    base, slash, step_text = part.partition("/")
    if slash and not (step_text.isascii() and step_text.isdigit() and int(step_text) > 0):
        raise ValueError(f"crontab {field} {part!r} needs a step of at least 1 after '/'")
    step = int(step_text) if slash else 1
    if base == "*":
        values = list(range(low, top + 1, step))
    else:
        first, dash, last = base.partition("-")
        start = _number(field, first)
        end = _number(field, last) if dash else (top if slash else start)
        if start <= end:
            values = list(range(start, end + 1))[::step]
        else:  # wraps around, like Celery: "22-2" is 22, 23, 0, 1, 2
            values = [*range(start, top + 1), *range(low, end + 1)][::step]
    if not values:
        raise ValueError(f"crontab {field} {part!r} matches nothing")
    return values


def _parse_field(field: str, value: object) -> tuple[str, frozenset[int]]:
    """Return the field's text (for repr) and its set of values."""
    if isinstance(value, str):
        text = value.strip().lower()
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise ValueError(f"crontab {field} {value!r} has an empty item")
        values = [v for part in parts for v in _parse_part(field, part)]
    elif isinstance(value, int) and not isinstance(value, bool):
        text, values = str(value), [_number(field, str(value))]
    elif isinstance(value, Iterable):
        items = list(value)
        if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise ValueError(f"crontab {field} {value!r} must be a non-empty collection of ints")
        text = ",".join(str(i) for i in sorted(set(items)))
        values = [_number(field, str(i)) for i in items]
    else:
        raise ValueError(f"crontab {field} {value!r} must be cron text, an int or ints")
    if field == "day_of_week":
        values = [v % 7 for v in values]
    return text, frozenset(values)


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """Return the first existing instant after the daylight-saving gap holding ``wall``."""
    # In a gap, fold=1 applies the offset from after the shift (an instant before it) and
    # fold=0 the one from before (an instant after it); bisect between them, per second.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    before = datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, timezone.utc)


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """Return when the naive wall time happens in ``zone``: its first occurrence if it occurs
    twice, the end of the gap if it does not exist."""
    due = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if due.astimezone(zone).replace(tzinfo=None) == wall:
        return due
    return _gap_end(wall, zone)


class crontab:
    """A cron-like schedule, evaluated in the time zone given to :meth:`next_after`.

    Fields take cron text: ``*``, lists ``1,5``, ranges ``1-5`` (``22-2`` wraps), steps
    ``*/15``, ``10-50/5`` and ``5/15`` (5 to the end by 15), month names ``jan``-``dec`` and
    day names ``sun``-``sat`` or ``monday`` (any case). Sunday is 0 or 7. A field can also be
    an int or a collection of ints. As in Celery, when both ``day_of_month`` and
    ``day_of_week`` are restricted, both must match: ``crontab(0, 9, "mon", "1-7")`` runs on
    the first Monday of each month. The fields are available as frozensets of ints
    (``minute``, ``hour``, ...; Sunday is 0).

    A bad field, or a day that never exists (``day_of_month=30, month_of_year="feb"``),
    raises :exc:`ValueError`. Instances are immutable and hashable; equal schedules compare
    equal whatever their spelling (``"*/30"`` equals ``"0,30"``).
    """

    __slots__ = ("_text", "day_of_month", "day_of_week", "hour", "minute", "month_of_year")
    minute: frozenset[int]
    hour: frozenset[int]
    day_of_week: frozenset[int]
    day_of_month: frozenset[int]
    month_of_year: frozenset[int]
    _text: tuple[str, ...]

    def __init__(
        self,
        minute: CronField = "*",
        hour: CronField = "*",
        day_of_week: CronField = "*",
        day_of_month: CronField = "*",
        month_of_year: CronField = "*",
    ) -> None:
        args = (minute, hour, day_of_week, day_of_month, month_of_year)
        parsed = [_parse_field(field, value) for field, value in zip(_FIELDS, args)]
        for field, (_, values) in zip(_FIELDS, parsed):
            object.__setattr__(self, field, values)
        object.__setattr__(self, "_text", tuple(text for text, _ in parsed))
        longest = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}
        if not any(longest[m] >= d for m in self.month_of_year for d in self.day_of_month):
            raise ValueError(
                f"crontab day_of_month {self._text[3]!r} and month_of_year"
                f" {self._text[4]!r} never match: no such date"
            )

    def next_after(self, dt: datetime, tz: Optional[tzinfo] = None) -> datetime:
        """Return the first due time strictly after the aware datetime ``dt``, in ``tz``.

        The fields are wall-clock times in ``tz`` (a :class:`zoneinfo.ZoneInfo`; default:
        ``dt``'s own zone). On daylight-saving days, a time that does not exist runs once at
        the shift (02:30 in a 02:00 to 03:00 gap runs at 03:00, together with 02:00 and
        03:00 if due), and a time that occurs twice runs once, at its first occurrence.
        Raises :exc:`ValueError` if ``dt`` is naive or nothing is due within 100 years.
        """
        zone = _zone_of(dt, tz)
        local = dt.astimezone(zone).replace(tzinfo=None, fold=0)
        start = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for wall in self._walls(start):
            due = _instant(wall, zone)
            if due > dt:
                return due.astimezone(zone)
        raise ValueError(f"{self!r} is not due within {_SEARCH_YEARS} years after {dt}")

    def _walls(self, start: datetime) -> Iterator[datetime]:
        """Yield the matching naive wall times from ``start`` on, in order, jumping by field."""
        months, doms = sorted(self.month_of_year), sorted(self.day_of_month)
        hours, minutes = sorted(self.hour), sorted(self.minute)
        for year in range(start.year, min(start.year + _SEARCH_YEARS, MAXYEAR + 1)):
            for month in months:
                if (year, month) < (start.year, start.month):
                    continue
                for day in self._days(year, month, doms):
                    if date(year, month, day) >= start.date():
                        yield from _times(datetime(year, month, day), hours, minutes, start)

    def _days(self, year: int, month: int, doms: Sequence[int]) -> Iterator[int]:
        last = calendar.monthrange(year, month)[1]
        for day in doms:
            if day > last:
                break
            if (date(year, month, day).weekday() + 1) % 7 in self.day_of_week:
                yield day

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as cron text, with ``"type": "crontab"``."""
        return {"type": "crontab", **dict(zip(_FIELDS, self._text))}

    def describe(self) -> str:
        """Return the call that builds this schedule, restricted fields only, e.g.
        ``crontab(minute='30', hour='3')``."""
        args = [f"{field}={text!r}" for field, text in zip(_FIELDS, self._text) if text != "*"]
        return f"crontab({', '.join(args)})"

    def _key(self) -> tuple[frozenset[int], ...]:
        return tuple(getattr(self, field) for field in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("crontab", *self._key()))

    def __repr__(self) -> str:
        return "<crontab: {} {} {} {} {} (m/h/dow/dom/moy)>".format(*self._text)

    def __reduce__(self) -> tuple[type[crontab], tuple[str, ...]]:
        return (crontab, self._text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"crontab is immutable, cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"crontab is immutable, cannot delete {name!r}")


def _times(
    day: datetime, hours: Sequence[int], minutes: Sequence[int], start: datetime
) -> Iterator[datetime]:
    for hour in hours:
        if day.replace(hour=hour, minute=59) < start:
            continue
        for minute in minutes:
            wall = day.replace(hour=hour, minute=minute)
            if wall >= start:
                yield wall


class every:
    """A fixed interval: a number of seconds (``10``, ``0.5``) or a :class:`~datetime.timedelta`.

    Due times are the multiples of the interval since the Unix epoch, 1970-01-01T00:00Z, not
    counted from when a scheduler started: any number of beat processes agree on them without
    coordination, and a restart does not shift them. So ``every(3600)`` is due on the hour and
    ``every(timedelta(days=1))`` at midnight UTC. Non-positive or non-numeric values raise
    :exc:`ValueError`. Instances are immutable and hashable; the precision is a microsecond.
    """

    __slots__ = ("_micros",)
    _micros: int

    def __init__(self, seconds: Union[float, timedelta]) -> None:
        if isinstance(seconds, timedelta):
            positive, micros = seconds > timedelta(0), seconds // _MICRO
        elif isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            positive = math.isfinite(seconds) and seconds > 0
            micros = round(seconds * 1_000_000) if positive else 0
        else:
            raise ValueError(f"every() needs a number of seconds or a timedelta, got {seconds!r}")
        if not positive or micros < 1:
            raise ValueError(f"every() needs a positive interval of 1µs or more, got {seconds!r}")
        object.__setattr__(self, "_micros", micros)

    @property
    def seconds(self) -> float:
        """The interval in seconds."""
        return self._micros / 1_000_000

    @property
    def run_every(self) -> timedelta:
        """The interval as a :class:`~datetime.timedelta` (Celery's name)."""
        return self._micros * _MICRO

    def next_after(self, dt: datetime, tz: Optional[tzinfo] = None) -> datetime:
        """Return the first multiple of the interval since the epoch strictly after the aware
        datetime ``dt``, in ``tz`` (default: ``dt``'s zone). Raises :exc:`ValueError` if
        ``dt`` is naive."""
        zone = _zone_of(dt, tz)
        elapsed = (dt - _EPOCH) // _MICRO
        return (_EPOCH + (elapsed // self._micros + 1) * self._micros * _MICRO).astimezone(zone)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"type": "every", "seconds": ...}``."""
        return {"type": "every", "seconds": self.seconds}

    def describe(self) -> str:
        """Return e.g. ``every 10 seconds`` or ``every 2 hours``."""
        for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
            count, rest = divmod(self._micros, size * 1_000_000)
            if not rest:
                return f"every {count} {unit}{'' if count == 1 else 's'}"
        return f"every {self.seconds:.6f}".rstrip("0") + " seconds"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, every):
            return NotImplemented
        return self._micros == other._micros

    def __hash__(self) -> int:
        return hash(("every", self._micros))

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def __reduce__(self) -> tuple[type[every], tuple[timedelta]]:
        return (every, (self.run_every,))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"every is immutable, cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"every is immutable, cannot delete {name!r}")


def schedule_from(value: object) -> Union[crontab, every]:
    """Turn a ``schedule`` config value into a schedule: a number of seconds or a
    :class:`~datetime.timedelta` becomes :class:`every`; :class:`crontab` and :class:`every`
    are returned as they are. Anything else raises :exc:`TypeError`, a bad interval
    :exc:`ValueError`.
    """
    if isinstance(value, (crontab, every)):
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return every(value)
    hint = " (for cron syntax, use crontab(minute=..., hour=...))" if isinstance(value, str) else ""
    raise TypeError(
        "a schedule must be a number of seconds, a timedelta, crontab(...) or every(...),"
        f" got {type(value).__name__} {value!r}{hint}"
    )


def timezone_named(name: str) -> tzinfo:
    """Return :class:`zoneinfo.ZoneInfo` for the IANA name (the ``TASKS_TIMEZONE`` setting).

    Raises :exc:`ValueError` naming the setting for an unknown name. ``"UTC"`` works even
    without a time zone database.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        if name == "UTC":
            return timezone.utc
        raise ValueError(
            f"TASKS_TIMEZONE {name!r} is not a known time zone; use an IANA name such as"
            " 'Europe/Berlin' (where the system has no time zone database, install the"
            " 'tzdata' package)"
        ) from exc

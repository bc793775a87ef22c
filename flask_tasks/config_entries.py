"""Checks for the values inside the mapping settings ``TASKS_ROUTES`` and
``TASKS_ANNOTATIONS``, and the rate syntax they share with ``@tasks.task(rate_limit=...)``.

``init_app`` calls them, so a wrong entry fails there, naming the key and the entry,
instead of later inside ``delay()`` or inside every worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

from .exceptions import ImproperlyConfigured

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: Union[str, int, float, None]) -> Optional[tuple[float, float]]:
    """``(limit, period_seconds)`` for ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number
    per second; None for no limit. Raises ValueError naming the bad rate."""
    if rate is None or rate == 0 or rate == "":
        return None
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        if rate > 0:
            return (float(rate), 1.0)
    elif isinstance(rate, str):
        amount, _, unit = rate.strip().partition("/")
        try:
            limit = float(amount)
        except ValueError:
            limit = -1.0
        period = _PERIODS.get(unit.strip()[:1] or "s")
        if limit >= 0 and period is not None:
            return (limit, period) if limit else None
    raise ValueError(f"rate_limit {rate!r} is not a rate like '10/s', '100/m' or '1000/h'")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_priority(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9


def _is_rate(value: Any) -> bool:
    try:
        parse_rate(value)
    except ValueError:
        return False
    return True


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _seconds(value: Any) -> bool:
    return _is_number(value) and value > 0


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _queue(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


#: What each task option accepts in ``TASKS_ANNOTATIONS`` (the options of
#: ``@tasks.task`` but ``name`` and ``bind``; ``tests/test_config.py`` checks they match).
ANNOTATION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "queue": (_queue, "a non-empty queue name"),
    "priority": (_optional(_is_priority), "an int from 0 to 9"),
    "max_retries": (
        _optional(lambda value: isinstance(value, int) and not isinstance(value, bool)),
        "an int or None",
    ),
    "default_retry_delay": (lambda value: _is_number(value) and value >= 0, "seconds"),
    "autoretry_for": (lambda value: isinstance(value, (tuple, list)), "a tuple of exceptions"),
    "retry_kwargs": (lambda value: isinstance(value, Mapping), "a dict"),
    "retry_backoff": (lambda value: _flag(value) or _seconds(value), "True, False or seconds"),
    "retry_backoff_max": (_seconds, "a positive number of seconds"),
    "retry_jitter": (_flag, "True or False"),
    "acks_late": (_optional(_flag), "True, False or None"),
    "rate_limit": (_is_rate, "a rate like '10/s', '100/m' or '1000/h'"),
    "time_limit": (_optional(_seconds), "a positive number of seconds or None"),
    "soft_time_limit": (_optional(_seconds), "a positive number of seconds or None"),
    "ignore_result": (_flag, "True or False"),
    "store_errors_even_if_ignored": (_flag, "True or False"),
    "track_started": (_flag, "True or False"),
    "expires": (lambda value: True, "seconds or a datetime"),
    "serializer": (_optional(_queue), "a serializer name"),
    "compression": (_optional(_queue), "a compression name"),
    "throws": (lambda value: isinstance(value, (tuple, list)), "a tuple of exceptions"),
}


def check_routes(routes: Mapping[Any, Any]) -> None:
    """Each entry of ``TASKS_ROUTES`` maps a task name (or glob) to a queue name or to
    ``{"queue": ..., "priority": ...}``."""
    for pattern, target in routes.items():
        where = f"TASKS_ROUTES[{pattern!r}]"
        if not isinstance(pattern, str) or not pattern:
            raise ImproperlyConfigured(f"TASKS_ROUTES keys must be task names, got {pattern!r}")
        if isinstance(target, str):
            if not target:
                raise ImproperlyConfigured(f"{where} is an empty queue name")
            continue
        if not isinstance(target, Mapping):
            raise ImproperlyConfigured(
                f"{where} must be a queue name or a dict with 'queue' and/or 'priority', "
                f"got {target!r}"
            )
        unknown = set(target) - {"queue", "priority"}
        if unknown:
            raise ImproperlyConfigured(
                f"{where} has unknown keys {sorted(map(str, unknown))}; a route sets "
                "'queue' and/or 'priority'"
            )
        if "queue" in target and not _queue(target["queue"]):
            raise ImproperlyConfigured(
                f"{where}['queue'] must be a non-empty queue name, got {target['queue']!r}"
            )
        if "priority" in target and not _optional(_is_priority)(target["priority"]):
            raise ImproperlyConfigured(
                f"{where}['priority'] must be an int from 0 to 9, got {target['priority']!r}"
            )


def check_annotations(annotations: Mapping[Any, Any]) -> None:
    """Each entry of ``TASKS_ANNOTATIONS`` maps a task name (or glob) to a dict of task
    options, each checked as ``@tasks.task`` would take it."""
    for pattern, options in annotations.items():
        where = f"TASKS_ANNOTATIONS[{pattern!r}]"
        if not isinstance(pattern, str) or not pattern:
            raise ImproperlyConfigured(
                f"TASKS_ANNOTATIONS keys must be task names, got {pattern!r}"
            )
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(
                f"{where} must be a dict of task options such as {{'rate_limit': '10/s'}}, "
                f"got {options!r}"
            )
        for option, value in options.items():
            check = ANNOTATION_CHECKS.get(option)
            if check is None:
                known = ", ".join(sorted(ANNOTATION_CHECKS))
                raise ImproperlyConfigured(
                    f"{where} sets unknown task option {option!r}; task options are: {known}"
                )
            accepts, expects = check
            if not accepts(value):
                raise ImproperlyConfigured(f"{where}[{option!r}] must be {expects}, got {value!r}")

"""``Entry``: one periodic task, from ``TASKS_BEAT_SCHEDULE`` or ``add_periodic_task``.

Read and checked in ``init_app``: a bad entry fails there, naming the entry and the field.
The loop that sends entries when they are due is :mod:`flask_tasks.beat`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from .schedules import crontab, every, schedule_from

#: The keys an entry of ``TASKS_BEAT_SCHEDULE`` may have.
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options"})
#: The ``apply_async`` options an entry may set.
ENTRY_OPTIONS = frozenset(
    {"queue", "priority", "expires", "headers", "serializer", "compression", "ignore_result"}
)

Schedule = Union[crontab, every]


@dataclass(frozen=True)
class Entry:
    """A task to send on a schedule: ``flask beat`` sends ``task(*args, **kwargs)`` with
    ``options`` at each due time of ``schedule``."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, value: Any) -> Entry:
        """The entry ``name`` of ``TASKS_BEAT_SCHEDULE``; ``ValueError`` naming the entry
        and what is wrong with it."""
        where = f"TASKS_BEAT_SCHEDULE[{name!r}]"
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a dict with 'task' and 'schedule', got {value!r}")
        unknown = set(value) - ENTRY_KEYS
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {sorted(unknown)}; use {sorted(ENTRY_KEYS)}"
            )
        if not isinstance(value.get("task"), str) or not value["task"]:
            raise ValueError(f"{where} needs 'task': the name of a task, got {value.get('task')!r}")
        if "schedule" not in value:
            raise ValueError(f"{where} needs 'schedule': seconds, a timedelta or a crontab")
        return cls.build(
            name,
            value["task"],
            value["schedule"],
            value.get("args", ()),
            value.get("kwargs", {}),
            value.get("options", {}),
            where,
        )

    @classmethod
    def build(
        cls,
        name: str,
        task: str,
        schedule: Any,
        args: Any = (),
        kwargs: Any = None,
        options: Any = None,
        where: str = "periodic task",
    ) -> Entry:
        """An entry from its parts, each checked; ``ValueError`` names ``where``."""
        try:
            parsed = schedule_from(schedule)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: 'schedule' {error}") from None
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"{where}: 'args' must be a list or tuple, got {args!r}")
        if not isinstance(kwargs or {}, Mapping):
            raise ValueError(f"{where}: 'kwargs' must be a dict, got {kwargs!r}")
        if not isinstance(options or {}, Mapping):
            raise ValueError(f"{where}: 'options' must be a dict, got {options!r}")
        unknown = set(options or {}) - ENTRY_OPTIONS
        if unknown:
            raise ValueError(
                f"{where}: 'options' {sorted(unknown)} are not available for periodic "
                f"tasks; use {sorted(ENTRY_OPTIONS)}"
            )
        return cls(name, task, parsed, tuple(args), dict(kwargs or {}), dict(options or {}))


def entries_from_config(schedule: Mapping[str, Any]) -> list[Entry]:
    """Every entry of ``TASKS_BEAT_SCHEDULE``, checked."""
    return [Entry.from_config(str(name), value) for name, value in schedule.items()]


def merged(config_entries: Sequence[Entry], declared: Sequence[Entry]) -> list[Entry]:
    """The app's entries: its config's, then those declared with ``add_periodic_task``;
    ``ValueError`` when two share a name."""
    seen: dict[str, Entry] = {}
    for entry in [*config_entries, *declared]:
        if entry.name in seen and seen[entry.name] != entry:
            raise ValueError(
                f"Two periodic tasks are named {entry.name!r}; give each a name of its own"
            )
        seen[entry.name] = entry
    return list(seen.values())

"""The ``TASKS_*`` configuration keys: defaults, expected types, validation.

Read once, in ``init_app``; a wrong type or an unknown ``TASKS_*`` key fails there with a
message naming the key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

from .config_entries import check_annotations, check_routes
from .exceptions import ImproperlyConfigured
from .periodic import entries_from_config
from .schedules import timezone_named

PREFIX = "TASKS_"
SERIALIZERS = ("json", "pickle", "msgpack")
COMPRESSIONS = ("zlib", "bz2")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nonnegative(value: Any) -> bool:
    return _number(value) and value >= 0


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _choice(*choices: Any) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _string_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(item, str) for item in value
    )


def _mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _setting(default: Any, check: Callable[[Any], bool], expects: str) -> Any:
    metadata = {"check": check, "expects": expects}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TasksConfig:
    """The validated ``TASKS_*`` settings of one app (attribute = key without prefix)."""

    broker_url: Optional[str] = _setting(None, _optional(_text), "a broker URL string")
    result_backend: Optional[str] = _setting(None, _optional(_text), "a URL string or None")
    broker_options: Mapping[str, Any] = _setting({}, _mapping, "a dict of broker options")
    default_queue: str = _setting("default", _text, "a non-empty queue name")
    routes: Mapping[str, Any] = _setting({}, _mapping, "a dict of task name -> queue or options")
    annotations: Mapping[str, Any] = _setting({}, _mapping, "a dict of task name -> options")
    always_eager: bool = _setting(False, _flag, "True or False")
    eager_propagates: bool = _setting(True, _flag, "True or False")
    serializer: str = _setting("json", _choice(*SERIALIZERS), f"one of {SERIALIZERS}")
    accept_content: tuple[str, ...] = _setting(
        ("json",), _string_list, "a list of serializer names"
    )
    compression: Optional[str] = _setting(
        None, _choice(None, *COMPRESSIONS), f"None or one of {COMPRESSIONS}"
    )
    sign_messages: Optional[bool] = _setting(
        None, _choice(None, True, False), "None, True or False"
    )
    message_max_bytes: int = _setting(1048576, _positive, "a positive number of bytes")
    acks_late: bool = _setting(True, _flag, "True or False")
    visibility_timeout: float = _setting(3600, _positive, "a positive number of seconds")
    max_deliveries: int = _setting(
        3,
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        "a whole number of deliveries, 1 or more",
    )
    publish_timeout: float = _setting(5.0, _positive, "a positive number of seconds")
    batch_per_request: bool = _setting(False, _flag, "True or False")
    result_expires: float = _setting(86400, _nonnegative, "a number of seconds (0 = never)")
    beat_schedule: Mapping[str, Any] = _setting({}, _mapping, "a dict of entry name -> entry")
    timezone: str = _setting("UTC", _text, "a time zone name such as 'UTC'")
    key_prefix: str = _setting("flask_tasks", _text, "a non-empty string")
    url_prefix: str = _setting(
        "/tasks", lambda value: _text(value) and value.startswith("/"), "a path starting with /"
    )
    token_max_age: float = _setting(86400, _positive, "a positive number of seconds")
    token_scope: Optional[Callable[[], Any]] = _setting(
        None, _optional(callable), "a callable returning the scope, or None"
    )
    expose_traceback: bool = _setting(False, _flag, "True or False")
    allow_revoke: bool = _setting(False, _flag, "True or False")
    allow_raw_ids: bool = _setting(False, _flag, "True or False")
    dashboard: bool = _setting(False, _flag, "True or False")
    dashboard_authorize: Optional[Callable[[], Any]] = _setting(
        None, _optional(callable), "a callable returning True for who may see it, or None"
    )
    dashboard_url_prefix: str = _setting(
        "/tasks/dashboard",
        lambda value: _text(value) and value.startswith("/"),
        "a path starting with /",
    )
    metrics: bool = _setting(False, _flag, "True or False")

    @classmethod
    def keys(cls) -> list[str]:
        """Every ``TASKS_*`` key this version understands."""
        return [PREFIX + item.name.upper() for item in fields(cls)]

    @classmethod
    def from_mapping(
        cls, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> TasksConfig:
        """Validate the ``TASKS_*`` keys of ``config`` (Flask's ``app.config``).

        ``defaults`` (keyword arguments given to ``Tasks(...)``, without prefix, any
        case) apply where ``config`` has no key.
        """
        known = {item.name: item for item in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in (defaults or {}).items():
            if name.lower() not in known:
                raise ImproperlyConfigured(
                    f"Tasks() got an unknown option {name!r}{_suggest(name.lower(), known)}"
                )
            values[name.lower()] = value
        for key, value in config.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in known:
                hint = _suggest(key, cls.keys())
                raise ImproperlyConfigured(f"Unknown configuration key {key}{hint}")
            values[name] = value
        for name, value in values.items():
            metadata = known[name].metadata
            if not metadata["check"](value):
                raise ImproperlyConfigured(
                    f"{PREFIX}{name.upper()} must be {metadata['expects']}, got {value!r}"
                )
        if "accept_content" in values:
            values["accept_content"] = tuple(values["accept_content"])
        config_object = cls(**values)
        config_object._check_consistency()
        return config_object

    def _check_consistency(self) -> None:
        check_routes(self.routes)
        check_annotations(self.annotations)
        unknown = set(self.accept_content) - set(SERIALIZERS)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS_ACCEPT_CONTENT names unknown serializers {sorted(unknown)}; "
                f"choose from {SERIALIZERS}"
            )
        try:
            timezone_named(self.timezone)
        except ValueError as error:
            raise ImproperlyConfigured(str(error)) from None
        try:
            entries_from_config(self.beat_schedule)
        except ValueError as error:
            raise ImproperlyConfigured(str(error)) from None
        if self.serializer not in self.accept_content:
            raise ImproperlyConfigured(
                f"TASKS_SERIALIZER is {self.serializer!r} but TASKS_ACCEPT_CONTENT "
                f"{list(self.accept_content)} does not list it; add it there to opt in"
            )

    def broker_url_for(self, instance_path: str) -> str:
        """The broker URL, defaulting to the embedded SQLite file in the instance folder."""
        if self.broker_url:
            return self.broker_url
        return "sqlite:///" + os.path.join(instance_path, "tasks.sqlite3")

    @property
    def uses_default_broker(self) -> bool:
        return not self.broker_url


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]}?" if close else ""

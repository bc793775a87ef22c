"""What travels, and what a running task sees of it.

:class:`Message` is one task invocation as it travels from the caller to a worker (encoded
by :mod:`.codec`). :class:`Request` is that message as the running task sees it
(``self.request``): the message's fields, plus where and how it runs. Both read the
invocation's fields from one definition, the message.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Union

from .exceptions import DecodeError

Seconds = Union[int, float]
When = Union[datetime, timedelta, int, float, None]


def new_id() -> str:
    """A random UUID (version 4) as a string, like ``str(uuid.uuid4())`` at a third of
    its cost: ids are made for every message, and a group makes thousands at once."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def to_timestamp(when: When, countdown: Optional[Seconds] = None) -> Optional[float]:
    """Unix time from an aware or naive-UTC datetime, a timedelta or seconds from now,
    or from ``countdown`` seconds from now."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    if when is None and countdown is None:  # the common case: no clock read
        return None
    now = datetime.now(timezone.utc).timestamp()
    if isinstance(when, timedelta):
        return now + when.total_seconds()
    if countdown is not None:
        return now + float(countdown)
    if when is not None:
        return now + float(when)
    return None


def _as_datetime(stamp: Optional[float]) -> Optional[datetime]:
    return datetime.fromtimestamp(stamp, timezone.utc) if stamp is not None else None


@dataclass
class Message:
    """One task invocation as it travels from the caller to a worker."""

    id: str
    task: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 5
    retries: int = 0
    #: Unix times, or None.
    eta: Optional[float] = None
    expires: Optional[float] = None
    headers: dict[str, Any] = field(default_factory=dict)
    parent_id: Optional[str] = None
    root_id: Optional[str] = None
    group_id: Optional[str] = None
    ignore_result: bool = False
    #: Signatures (as dicts) to call with the result, or with the failed task id.
    link: list[dict[str, Any]] = field(default_factory=list)
    link_error: list[dict[str, Any]] = field(default_factory=list)
    #: The rest of a chain, as signature dicts, run in order after this task.
    chain: list[dict[str, Any]] = field(default_factory=list)
    #: The chord this task belongs to: {"group_id", "size", "body", "results": [ids]}.
    chord: Optional[dict[str, Any]] = None
    serializer: Optional[str] = None
    compression: Optional[str] = None
    #: Not sent: True when the producer made ``id`` just now (see ``Envelope.fresh``).
    fresh_id: bool = field(default=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as sent: lean, without the fields that are empty (not a copy:
        encode it before changing the message)."""
        data = {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
        }
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value:
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        """The message in a decoded envelope; ``DecodeError`` naming the first field
        that is missing or of the wrong type."""
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            raise DecodeError("message body is not a task envelope (no task name)")
        unknown = set(data) - _FIELD_NAMES
        if unknown:
            raise DecodeError(f"message envelope has unexpected fields: {sorted(unknown)}")
        for name, value in data.items():
            expected = _FIELD_TYPES[name]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                if value is None and name in _OPTIONAL_FIELDS:
                    continue
                raise DecodeError(
                    f"message field {name!r} has the wrong type: {type(value).__name__}"
                )
        if "id" not in data:
            raise DecodeError("message field 'id' is missing")
        return cls(**data)


_FIELD_TYPES: dict[str, Any] = {
    "id": str,
    "task": str,
    "args": (list, tuple),
    "kwargs": dict,
    "queue": str,
    "priority": int,
    "retries": int,
    "eta": (int, float),
    "expires": (int, float),
    "headers": dict,
    "parent_id": str,
    "root_id": str,
    "group_id": str,
    "ignore_result": bool,
    "link": list,
    "link_error": list,
    "chain": list,
    "chord": dict,
    "serializer": str,
    "compression": str,
}
#: Fields that stay with the producer's copy of a message.
_LOCAL_FIELDS = frozenset({"fresh_id"})
_FIELD_NAMES = frozenset(item.name for item in fields(Message)) - _LOCAL_FIELDS
_OPTIONAL_FIELDS = tuple(
    item.name
    for item in fields(Message)
    if item.name not in {"id", "task", "args", "kwargs", "queue", "priority"} | _LOCAL_FIELDS
)


@dataclass(frozen=True)
class Request:
    """What a running task knows about its invocation: ``self.request`` in bound tasks.

    The invocation's fields (``id``, ``task``, ``args``, ``retries``...) are read from the
    message; the rest says where and how it runs.
    """

    message: Message
    hostname: Optional[str] = None
    is_eager: bool = False
    #: True when the task function is called like a plain function (no message sent).
    called_directly: bool = False

    @classmethod
    def blank(cls, task: str) -> Request:
        """The request of a task called directly (``add(2, 2)``): no id, no message."""
        return cls(Message(id="", task=task, queue=""), called_directly=True)

    @property
    def id(self) -> Optional[str]:
        return self.message.id or None

    @property
    def task(self) -> str:
        return self.message.task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.message.args)

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return self.message.kwargs

    @property
    def retries(self) -> int:
        return self.message.retries

    @property
    def eta(self) -> Optional[datetime]:
        return _as_datetime(self.message.eta)

    @property
    def expires(self) -> Optional[datetime]:
        return _as_datetime(self.message.expires)

    @property
    def queue(self) -> Optional[str]:
        return self.message.queue or None

    @property
    def priority(self) -> int:
        return self.message.priority

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.message.headers

    @property
    def parent_id(self) -> Optional[str]:
        return self.message.parent_id

    @property
    def root_id(self) -> Optional[str]:
        return self.message.root_id or self.id

    @property
    def group_id(self) -> Optional[str]:
        return self.message.group_id

    group = group_id

    @property
    def ignore_result(self) -> bool:
        return self.message.ignore_result

    @property
    def delivery_info(self) -> dict[str, Any]:
        return {"routing_key": self.message.queue, "priority": self.message.priority}


_current_request: contextvars.ContextVar[Optional[Request]] = contextvars.ContextVar(
    "flask_tasks_request", default=None
)


def current_request() -> Optional[Request]:
    """The request of the task running in this thread or context, if any."""
    return _current_request.get()


def push_request(request: Request) -> contextvars.Token[Optional[Request]]:
    return _current_request.set(request)


def pop_request(token: contextvars.Token[Optional[Request]]) -> None:
    _current_request.reset(token)

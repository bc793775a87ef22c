"""Flask-Tasks: background jobs for Flask, done the Flask way."""

from __future__ import annotations

from . import signals, states
from .canvas import Signature, chain
from .exceptions import (
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NotRegistered,
    OperationalError,
    Retry,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)
from .extension import Tasks
from .groups import chord, group, signature
from .message import Request
from .result import AsyncResult, EagerResult, GroupResult
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "DecodeError",
    "EagerResult",
    "EncodeError",
    "GroupResult",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "OperationalError",
    "Request",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskRevokedError",
    "Tasks",
    "TimeLimitExceeded",
    "TimeoutError",
    "chain",
    "chord",
    "group",
    "signals",
    "signature",
    "states",
]

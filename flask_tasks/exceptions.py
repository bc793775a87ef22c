"""Exceptions raised by Flask-Tasks (the names follow Celery's)."""

from __future__ import annotations

import builtins
from typing import Any


class TaskError(Exception):
    """Base class of every Flask-Tasks error."""


class ImproperlyConfigured(TaskError):
    """A ``TASKS_*`` setting or an ``init_app`` call is wrong."""


class NotRegistered(TaskError, KeyError):
    """A task name is not in the registry of the app."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EncodeError(TaskError, ValueError):
    """Arguments or a result could not be serialized; nothing was published."""


class DecodeError(TaskError, ValueError):
    """A message could not be decoded, or failed its signature check."""


class OperationalError(TaskError, ConnectionError):
    """The broker or result store could not be reached."""


class Retry(TaskError):
    """Raised by ``Task.retry()``: the task will run again with the same id."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
    ) -> None:
        self.exc = exc
        self.when = when
        #: When to run again, as a Unix time (set by ``Task.retry``).
        self.eta: float | None = None
        #: Positional arguments to run again with, or None for the same (set by ``Task.retry``).
        self.args_override: Any = None
        #: Keyword arguments to run again with, or None for the same (set by ``Task.retry``).
        self.kwargs_override: Any = None
        #: Options for the next run, such as ``queue`` or ``priority`` (set by ``Task.retry``).
        self.options: dict[str, Any] = {}
        super().__init__(message or self._describe(exc, when))

    @staticmethod
    def _describe(exc: BaseException | None, when: float | None) -> str:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "retry requested"
        return f"Retry in {when:.3g}s: {reason}" if when is not None else f"Retry: {reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.exc, self.when)


class ReadOnlyBroker(OperationalError):
    """The broker's storage cannot be written by this process (a read-only SQLite file,
    directory or mount): retrying cannot help, so a worker stops instead."""


class MaxRetriesExceededError(TaskError):
    """A task asked to retry more often than its ``max_retries`` allows."""


class TimeLimitExceeded(TaskError):
    """A task ran past its hard ``time_limit`` and was stopped."""


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task that ran past its ``soft_time_limit``; it may clean up."""


class TaskRevokedError(TaskError):
    """The task was revoked (or expired) before or while it ran."""


class WorkerLostError(TaskError):
    """The process running the task died before it finished (``os._exit``, a signal, a
    crash), as many times as ``TASKS_MAX_DELIVERIES`` allows."""


class TimeoutError(TaskError, builtins.TimeoutError):
    """``AsyncResult.get()`` gave up waiting."""


__all__ = [
    "DecodeError",
    "EncodeError",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "OperationalError",
    "ReadOnlyBroker",
    "Retry",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
]

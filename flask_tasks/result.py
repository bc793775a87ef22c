"""Handles on task outcomes: ``AsyncResult``, ``EagerResult``, ``GroupResult``.

A task's outcome is stored as a *result record*: a dict encoded with the app's codec::

    {"status": "SUCCESS", "result": 8, "traceback": None, "date_done": "2024-...",
     "task": "app.add", "parent_id": None, "children": [], "retries": 0}

For a failure, ``result`` holds ``{"exc_type", "exc_module", "exc_message"}``; for a
custom state set with ``update_state`` it holds the ``meta`` dict.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import TaskError, TaskRevokedError, TimeoutError

if TYPE_CHECKING:
    from .app_state import TasksState

# -- records ---------------------------------------------------------------------------


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """A JSON-safe description of ``exc`` that ``exception_from_dict`` can rebuild."""
    return {
        "exc_type": type(exc).__name__,
        "exc_module": type(exc).__module__,
        "exc_message": str(exc),
        "exc_args": [arg for arg in exc.args if isinstance(arg, (str, int, float, bool))]
        if all(isinstance(arg, (str, int, float, bool)) for arg in exc.args)
        else [str(exc)],
    }


_proxies: dict[tuple[str, str], type[TaskError]] = {}


def exception_from_dict(info: Any) -> BaseException:
    """Rebuild an exception stored by a worker.

    The real class is used when its module is already imported in this process (nothing
    is imported on behalf of stored data); otherwise a proxy subclass of ``TaskError``
    with the same name and module keeps the type name and message.
    """
    if not isinstance(info, dict):
        return TaskError(str(info))
    name = str(info.get("exc_type") or "Exception")
    module_name = str(info.get("exc_module") or "builtins")
    message = str(info.get("exc_message", ""))
    args = info.get("exc_args") or [message]
    module = sys.modules.get(module_name)
    cls = getattr(module, name, None) if module is not None else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(*args)
        except Exception:  # constructor with a different signature
            pass
    proxy = _proxies.get((module_name, name))
    if proxy is None:
        proxy = type(name, (TaskError,), {"__module__": module_name})
        _proxies[(module_name, name)] = proxy
    return proxy(message)


# -- results ---------------------------------------------------------------------------


class _ResultBase:
    id: str

    @property
    def state(self) -> str:
        raise NotImplementedError

    status = state

    def get(self, timeout: float | None = None, propagate: bool = True, **options: Any) -> Any:
        raise NotImplementedError

    def forget(self) -> None:
        raise NotImplementedError

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the task has finished (success, failure or revoked)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id} {self.state}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _ResultBase):
            return other.id == self.id
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)


class AsyncResult(_ResultBase):
    """The handle on a task sent to the workers, returned by ``delay``/``apply_async``."""

    def __init__(self, task_id: str, state: TasksState, task_name: str | None = None) -> None:
        self.id = task_id
        self.task_name = task_name
        self._state = state
        self._cache: dict[str, Any] | None = None

    # -- reading the record

    def _meta(self) -> dict[str, Any] | None:
        if self._cache is not None:
            return self._cache
        meta = self._state.decode_record(self._state.backend.get_result(self.id))
        if meta is not None and meta.get("status") in states.READY_STATES:
            self._cache = meta  # final: never changes again
        return meta

    def exists(self) -> bool:
        """True if the result store knows this id (queued, running or done, not expired)."""
        return self._meta() is not None

    @property
    def state(self) -> str:
        meta = self._meta()
        return str(meta["status"]) if meta else states.PENDING

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception of a failure, or the meta of a custom state."""
        meta = self._meta()
        if meta is None:
            return None
        if meta["status"] in states.PROPAGATE_STATES or meta["status"] == states.RETRY:
            return exception_from_dict(meta.get("result"))
        return meta.get("result")

    @property
    def info(self) -> Any:
        return self.result

    @property
    def traceback(self) -> str | None:
        meta = self._meta()
        return meta.get("traceback") if meta else None

    @property
    def date_done(self) -> datetime | None:
        meta = self._meta()
        done = meta.get("date_done") if meta else None
        return datetime.fromisoformat(done) if done else None

    @property
    def retries(self) -> int:
        meta = self._meta()
        return int(meta.get("retries") or 0) if meta else 0

    @property
    def parent(self) -> AsyncResult | None:
        meta = self._meta()
        parent_id = meta.get("parent_id") if meta else None
        return AsyncResult(parent_id, self._state) if parent_id else None

    @property
    def children(self) -> list[AsyncResult]:
        meta = self._meta()
        return [AsyncResult(child, self._state) for child in (meta or {}).get("children") or []]

    # -- waiting

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **_options: Any,
    ) -> Any:
        """Wait for the task to finish and return its value.

        Waits on the result store's change notifications: no busy polling, so
        ``interval`` (kept for Celery compatibility) is not needed. Raises ``TimeoutError`` after
        ``timeout`` seconds; re-raises the task's exception when ``propagate``.
        """
        del interval, disable_sync_subtasks  # accepted for Celery compatibility
        deadline = None if timeout is None else time.monotonic() + timeout
        backend = self._state.backend
        raw = backend.get_result(self.id)
        while True:
            meta = self._state.decode_record(raw)
            if meta is not None and meta.get("status") in states.READY_STATES:
                self._cache = meta
                break
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"Task {self.id} did not finish within {timeout} s (state {self.state})"
                )
            raw = backend.watch_result(self.id, raw, min(remaining, 5.0))
        return self._outcome(propagate)

    def _outcome(self, propagate: bool) -> Any:
        value = self.result
        if self.state in states.PROPAGATE_STATES and propagate:
            if self.state == states.REVOKED and not isinstance(value, BaseException):
                raise TaskRevokedError(f"Task {self.id} was revoked")
            raise value
        return value

    wait = get

    # -- acting on the task

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self._state.backend.forget_result(self.id)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Ask workers not to run this task (``terminate`` also stops it if running)."""
        del signal
        self._cache = None
        self._state.revoke([self.id], terminate=terminate)

    def as_tuple(self) -> tuple[str, None]:
        return (self.id, None)


class EagerResult(_ResultBase):
    """The outcome of a task run in this process (``apply`` or ``TASKS_ALWAYS_EAGER``)."""

    def __init__(
        self,
        task_id: str,
        value: Any,
        state: str,
        traceback: str | None = None,
        task_name: str | None = None,
    ) -> None:
        self.id = task_id
        self.task_name = task_name
        self._value = value
        self._status = state
        self.traceback = traceback
        self.date_done = datetime.now(timezone.utc)

    @property
    def state(self) -> str:
        return self._status

    status = state

    @property
    def result(self) -> Any:
        return self._value

    info = result

    def exists(self) -> bool:
        return True

    def get(self, timeout: float | None = None, propagate: bool = True, **_options: Any) -> Any:
        del timeout
        if propagate and self._status in states.PROPAGATE_STATES:
            if isinstance(self._value, BaseException):
                raise self._value
            raise TaskRevokedError(f"Task {self.id} was revoked")
        return self._value

    wait = get

    def forget(self) -> None:
        pass

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        pass


class GroupResult(_ResultBase):
    """The results of a group, in the order the group's tasks were given."""

    def __init__(self, group_id: str, results: Sequence[_ResultBase]) -> None:
        self.id = group_id
        self.results = list(results)

    def __iter__(self) -> Iterator[_ResultBase]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> _ResultBase:
        return self.results[index]

    @property
    def state(self) -> str:
        found = {result.state for result in self.results}
        if found <= {states.SUCCESS}:
            return states.SUCCESS
        for state in (states.FAILURE, states.REVOKED):
            if state in found and found <= states.READY_STATES:
                return state
        return states.PENDING

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def successful(self) -> bool:
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        return any(result.failed() for result in self.results)

    def completed_count(self) -> int:
        return sum(1 for result in self.results if result.successful())

    def get(
        self, timeout: float | None = None, propagate: bool = True, **options: Any
    ) -> list[Any]:
        """Wait for every task; values in order. ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            values.append(result.get(timeout=remaining, propagate=propagate, **options))
        return values

    join = get

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

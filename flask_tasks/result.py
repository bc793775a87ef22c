"""Handles on task outcomes: ``AsyncResult``, ``EagerResult``, ``GroupResult``.

An ``AsyncResult`` reads the task's :class:`~flask_tasks.records.Record` from the store
of the current app and waits on the store's change notifications.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import states
from .exceptions import OperationalError, TaskRevokedError, TimeoutError
from .message import current_request
from .records import Record

if TYPE_CHECKING:
    from .runtime import Runtime

#: How long ``get()`` without a timeout keeps reading a result store that cannot be
#: reached (a restart, a Sentinel failover) before it raises OperationalError.
STORE_OUTAGE_WAIT = 60.0


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

    def __init__(
        self,
        task_id: str,
        runtime: Runtime,
        task_name: str | None = None,
        *,
        pending: bytes | None = None,
        unsent: Callable[[], None] | None = None,
    ) -> None:
        self.id = task_id
        self.task_name = task_name
        self._runtime = runtime
        self._cache: Record | None = None
        #: The PENDING record the producer just wrote (the encoded bytes): the first
        #: get() waits for a change from it at once instead of reading it back first.
        self._pending = pending
        #: Publishes the batch still holding this task's message (``tasks.batch()``).
        self._unsent = unsent

    # -- reading the record

    def _send_held(self) -> None:
        """A message still held in a batch is published before its result is read."""
        if self._unsent is not None:
            send, self._unsent = self._unsent, None
            send()

    def _record(self) -> Record | None:
        if self._cache is not None:
            return self._cache
        self._send_held()
        record = self._runtime.read(self.id)
        if record is not None and record.ready:
            self._cache = record  # final: never changes again
        return record

    def exists(self) -> bool:
        """True if the result store knows this id (queued, running or done, not expired)."""
        return self._record() is not None

    @property
    def state(self) -> str:
        record = self._record()
        return record.state if record else states.PENDING

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception of a failure, or the meta of a custom state."""
        record = self._record()
        return record.value if record else None

    @property
    def info(self) -> Any:
        return self.result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return record.traceback if record else None

    @property
    def date_done(self) -> datetime | None:
        record = self._record()
        return datetime.fromisoformat(record.date_done) if record and record.date_done else None

    @property
    def retries(self) -> int:
        record = self._record()
        return record.retries if record else 0

    @property
    def parent(self) -> AsyncResult | None:
        record = self._record()
        parent_id = record.parent_id if record else None
        return AsyncResult(parent_id, self._runtime) if parent_id else None

    @property
    def children(self) -> list[AsyncResult]:
        record = self._record()
        return [AsyncResult(child, self._runtime) for child in (record.children if record else ())]

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
        ``interval`` (kept for Celery compatibility) is not needed. Raises ``TimeoutError``
        after ``timeout`` seconds; re-raises the task's exception when ``propagate``. A
        store that cannot be reached (a restart, a Sentinel failover) is read again every
        half second until the timeout (without one, for ``STORE_OUTAGE_WAIT`` seconds),
        then ``OperationalError`` is raised. Inside a running task it raises
        ``RuntimeError``, as Celery does, unless ``disable_sync_subtasks=False``: a task
        waiting on another can deadlock the pool.
        """
        del interval  # accepted for Celery compatibility: nothing polls
        if disable_sync_subtasks:
            _refuse_inside_task()
        self._send_held()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Assumed: the record written when the task was sent, not read from the store.
        raw, assumed = self._pending, self._pending is not None
        self._pending = None
        failing_since = None
        while True:
            try:
                self._wait_ready(raw, assumed, timeout, deadline)
                break
            except OperationalError:
                # The store restarts or fails over (Sentinel): read again shortly.
                now = time.monotonic()
                failing_since = failing_since or now
                limit = failing_since + STORE_OUTAGE_WAIT if deadline is None else deadline
                if now >= limit:
                    raise
                time.sleep(min(0.5, limit - now))
                raw, assumed = None, False
        return self._outcome(propagate)  # outside the try: a task may raise OperationalError

    def _wait_ready(
        self, raw: bytes | None, assumed: bool, timeout: float | None, deadline: float | None
    ) -> None:
        """Wait until the record is ready (then cached) or raise TimeoutError."""
        runtime = self._runtime
        store = runtime.store
        if not assumed:
            raw = store.get_result(self.id)
        while True:
            record = Record.decode(runtime.codec, raw)
            if record is not None and record.ready:
                self._cache = record
                return
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                if assumed:  # out of time before reading it once: read it now
                    raw, assumed = store.get_result(self.id), False
                    continue
                raise TimeoutError(
                    f"Task {self.id} did not finish within {timeout} s (state {self.state})"
                )
            raw, assumed = store.watch_result(self.id, raw, min(remaining, 5.0)), False

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
        self._send_held()
        self._cache = None
        self._runtime.store.forget_result(self.id)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Ask workers not to run this task (``terminate`` also stops it if running, by
        raising ``TaskRevokedError`` inside it: ``signal`` cannot be chosen)."""
        _check_signal(signal)
        self._cache = None
        self._runtime.revoke([self.id], terminate=terminate)

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

    def fill(self, other: EagerResult) -> None:
        """Take the outcome of ``other``: a run that waited for a session's commit."""
        self._value, self._status = other._value, other._status
        self.traceback, self.date_done = other.traceback, other.date_done

    def get(self, timeout: float | None = None, propagate: bool = True, **_options: Any) -> Any:
        del timeout
        if self._status == states.PENDING:
            raise TimeoutError(f"Task {self.id} has not run: it runs when the session commits")
        if propagate and self._status in states.PROPAGATE_STATES:
            if isinstance(self._value, BaseException):
                raise self._value
            raise TaskRevokedError(f"Task {self.id} was revoked")
        return self._value

    wait = get

    def forget(self) -> None:
        """Nothing to forget: an eager outcome is kept in this object only."""

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Nothing to revoke: the task has already run."""
        _check_signal(signal)


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


def _refuse_inside_task() -> None:
    request = current_request()
    if request is not None and not request.called_directly and not request.is_eager:
        raise RuntimeError(
            "Never call result.get() within a task: it can deadlock the worker pool. Chain "
            "the tasks instead (sig | sig), or pass disable_sync_subtasks=False if you must."
        )


def _check_signal(signal: Optional[str]) -> None:
    if signal not in (None, "SIGTERM", "TERM"):
        raise ValueError(
            f"revoke(signal={signal!r}): Flask-Tasks stops a running task by raising "
            "TaskRevokedError inside it; no other signal can be chosen"
        )

"""``Record``: a task's stored outcome, the one value every part reads and writes.

The worker builds records with the constructors here, the store keeps them as bytes
(:meth:`Record.encode`), and ``AsyncResult``, the status endpoints and ``flask tasks``
read them back (:meth:`Record.decode`). No record is built anywhere else.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

from . import states
from .codec import Codec
from .exceptions import TaskError


@dataclass(frozen=True)
class Error:
    """An exception as stored: enough to show it, and to rebuild it where its class is
    already imported."""

    type: str
    module: str = "builtins"
    message: str = ""
    args: tuple[Any, ...] = ()

    @classmethod
    def of(cls, exc: BaseException) -> Error:
        plain = all(isinstance(arg, (str, int, float, bool)) for arg in exc.args)
        return cls(
            type(exc).__name__,
            type(exc).__module__,
            _safe_str(exc),
            tuple(exc.args) if plain else (_safe_str(exc),),
        )

    def exception(self) -> BaseException:
        """The exception again: its own class when its module is already imported in
        this process (nothing is imported on behalf of stored data), otherwise a
        ``TaskError`` subclass with the same name and module."""
        module = sys.modules.get(self.module)
        cls = getattr(module, self.type, None) if module is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                return cls(*(self.args or (self.message,)))
            except Exception:  # a constructor with another signature: use the proxy
                pass
        proxy = _proxies.get((self.module, self.type))
        if proxy is None:
            proxy = type(self.type, (TaskError,), {"__module__": self.module})
            _proxies[(self.module, self.type)] = proxy
        return proxy(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "module": self.module,
            "message": self.message,
            "args": list(self.args),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Error:
        if not isinstance(data, dict):
            return cls("TaskError", "flask_tasks.exceptions", str(data))
        args = data.get("args", data.get("exc_args")) or ()
        return cls(
            str(data.get("type") or data.get("exc_type") or "Exception"),
            str(data.get("module") or data.get("exc_module") or "builtins"),
            str(data.get("message", data.get("exc_message", ""))),
            tuple(args) if isinstance(args, (list, tuple)) else (),
        )


_proxies: dict[tuple[str, str], type[TaskError]] = {}


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:  # an exception whose __str__ raises must still be stored
        return f"<{type(exc).__name__}: str() failed with {type(error).__name__}>"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class Record:
    """A task's stored outcome.

    ``result`` is the return value of a success, or the meta of a custom state (such as
    ``PROGRESS`` from ``update_state``); ``error`` describes the exception of a
    ``FAILURE``, ``RETRY`` or ``REVOKED``. ``version`` is set when a record is read: it
    changes whenever the stored bytes do.
    """

    state: str
    result: Any = None
    error: Optional[Error] = None
    traceback: Optional[str] = None
    task: Optional[str] = None
    date_done: Optional[str] = None
    parent_id: Optional[str] = None
    children: tuple[str, ...] = ()
    retries: int = 0
    worker: Optional[str] = None
    version: str = ""

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def pending(cls, task: Optional[str], parent_id: Optional[str] = None) -> Record:
        return cls(states.PENDING, task=task, parent_id=parent_id)

    @classmethod
    def received(cls, task: str, hostname: str) -> Record:
        """Taken from its queue by the worker ``hostname``, not started yet."""
        return cls(states.RECEIVED, {"hostname": hostname}, task=task, worker=hostname)

    @classmethod
    def started(cls, task: str, hostname: str, pid: int) -> Record:
        return cls(states.STARTED, {"pid": pid, "hostname": hostname}, task=task, worker=hostname)

    @classmethod
    def custom(cls, state: str, meta: Any, task: Optional[str]) -> Record:
        """A state set by the task itself (``update_state``)."""
        return cls(state, meta, task=task)

    @classmethod
    def success(
        cls,
        value: Any,
        task: str,
        *,
        parent_id: Optional[str] = None,
        children: Sequence[str] = (),
        retries: int = 0,
        worker: Optional[str] = None,
    ) -> Record:
        return cls(
            states.SUCCESS,
            value,
            task=task,
            date_done=_now_iso(),
            parent_id=parent_id,
            children=tuple(children),
            retries=retries,
            worker=worker,
        )

    @classmethod
    def failure(
        cls,
        exc: BaseException,
        task: Optional[str],
        *,
        traceback: Optional[str] = None,
        state: str = states.FAILURE,
        parent_id: Optional[str] = None,
        retries: int = 0,
        worker: Optional[str] = None,
    ) -> Record:
        """A ``FAILURE`` (or, with ``state``, a ``RETRY`` or ``REVOKED``) caused by ``exc``."""
        return cls(
            state,
            error=Error.of(exc),
            traceback=traceback,
            task=task,
            date_done=_now_iso() if state in states.READY_STATES else None,
            parent_id=parent_id,
            retries=retries,
            worker=worker,
        )

    @classmethod
    def revoked(cls, reason: str, task: Optional[str]) -> Record:
        error = Error("TaskRevokedError", "flask_tasks.exceptions", reason, (reason,))
        return cls(states.REVOKED, error=error, task=task, date_done=_now_iso())

    # -- reading --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the task has finished (success, failure or revoked)."""
        return self.state in states.READY_STATES

    @property
    def value(self) -> Any:
        """What ``AsyncResult.result`` gives: the exception of an error state, else
        ``result``."""
        if self.error is not None:
            return self.error.exception()
        return self.result

    # -- encoding -------------------------------------------------------------------------

    def encode(self, codec: Codec) -> bytes:
        """The record as stored (``EncodeError`` when the result cannot be encoded)."""
        data: dict[str, Any] = {"status": self.state, "result": self.result}
        if self.error is not None:
            data["error"] = self.error.to_dict()
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value:
                data[name] = list(value) if name == "children" else value
        return codec.encode(data)

    @classmethod
    def decode(cls, codec: Codec, raw: Optional[bytes]) -> Optional[Record]:
        """The record stored as ``raw`` (None for None). A record that cannot be read
        (another key, a broken value) reads as a ``FAILURE`` saying why."""
        if raw is None:
            return None
        version = hashlib.blake2b(raw, digest_size=8).hexdigest()
        try:
            data = codec.decode(raw)
        except Exception as error:
            reason = TaskError(f"stored result cannot be read: {_safe_str(error)}")
            return replace(cls.failure(reason, None), version=version)
        if not isinstance(data, dict):
            return None
        state = str(data.get("status") or states.PENDING)
        result = data.get("result")
        stored_error = data.get("error")
        if stored_error is None and state in _ERROR_STATES and isinstance(result, dict):
            stored_error, result = result, None  # written by Flask-Tasks 0.1
        children = data.get("children")
        return cls(
            state,
            result,
            Error.from_dict(stored_error) if stored_error is not None else None,
            _text(data.get("traceback")),
            _text(data.get("task")),
            _text(data.get("date_done")),
            _text(data.get("parent_id")),
            tuple(str(c) for c in children) if isinstance(children, list) else (),
            data["retries"] if isinstance(data.get("retries"), int) else 0,
            _text(data.get("worker")),
            version,
        )


_OPTIONAL = ("traceback", "task", "date_done", "parent_id", "children", "retries", "worker")
_ERROR_STATES = states.EXCEPTION_STATES


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None

"""Running one task invocation: app context, request, hooks, signals, retry decisions.

Shared by the worker and by eager runs (``apply`` and ``TASKS_ALWAYS_EAGER``), so both go
through the same machinery. Storing the outcome is the caller's business.
"""

from __future__ import annotations

import logging
import random
import traceback as traceback_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from . import signals, states
from .codec import Codec
from .exceptions import EncodeError, Retry, TaskRevokedError
from .message import Message, Request, pop_request, push_request
from .result import EagerResult

if TYPE_CHECKING:
    from .runtime import Runtime
    from .task import Task

logger = logging.getLogger("flask_tasks.worker")


class ExceptionInfo:
    """``einfo`` passed to hooks: the exception, its type and the formatted traceback."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = "".join(
            traceback_module.format_exception(type(exc), exc, exc.__traceback__)
        )

    def __str__(self) -> str:
        return self.traceback


@dataclass
class Outcome:
    """How one run ended."""

    state: str
    value: Any = None
    einfo: Optional[ExceptionInfo] = None
    #: Set when ``state`` is RETRY.
    retry: Optional[Retry] = None

    @property
    def traceback(self) -> str | None:
        return self.einfo.traceback if self.einfo else None


def exponential_backoff(factor: float, retries: int, maximum: float, full_jitter: bool) -> float:
    """Seconds to wait before retry number ``retries + 1``: factor·2^retries, capped,
    then (with jitter) a uniform pick below that, so retries of many tasks spread out."""
    countdown = min(maximum, factor * float(2**retries))
    if full_jitter:
        countdown = random.uniform(0, countdown)
    return max(0.0, countdown)


def execute(runtime: Runtime, task: Task[Any, Any], request: Request) -> Outcome:
    """Run ``task`` for ``request`` inside the app context, with hooks and signals."""
    token = push_request(request)
    try:
        with runtime.app.app_context():
            return _run(runtime, task, request)
    finally:
        pop_request(token)


def _run(runtime: Runtime, task: Task[Any, Any], request: Request) -> Outcome:
    args, kwargs = request.args, request.kwargs
    if signals.task_prerun.receivers:
        signals.task_prerun.send(task, task_id=request.id, task=task, args=args, kwargs=kwargs)
    try:
        task.before_start(request.id or "", args, kwargs)
        value = task.run(*args, **kwargs)
    except Retry as retry:
        outcome = _retried(task, request, retry)
    except TaskRevokedError as exc:  # revoked with terminate=True while running
        outcome = Outcome(states.REVOKED, exc, ExceptionInfo(exc))
    except Exception as exc:
        outcome = _failed_or_autoretried(runtime, task, request, exc)
    except SystemExit as exc:  # sys.exit() in a task ends the task, not the worker
        outcome = _failed(task, request, exc)
    else:
        outcome = _succeeded(task, request, value)
    task.after_return(outcome.state, outcome.value, request.id or "", args, kwargs, outcome.einfo)
    if signals.task_postrun.receivers:
        signals.task_postrun.send(
            task,
            task_id=request.id,
            task=task,
            args=args,
            kwargs=kwargs,
            retval=outcome.value,
            state=outcome.state,
        )
    return outcome


def _succeeded(task: Task[Any, Any], request: Request, value: Any) -> Outcome:
    try:
        task.on_success(value, request.id or "", request.args, request.kwargs)
    except Exception as exc:  # the body ran, but its hook failed: the task fails
        return _failed(task, request, exc)
    if signals.task_success.receivers:
        signals.task_success.send(task, result=value)
    return Outcome(states.SUCCESS, value)


def _retried(task: Task[Any, Any], request: Request, retry: Retry) -> Outcome:
    reason = retry.exc if retry.exc is not None else retry
    einfo = ExceptionInfo(reason)
    task.on_retry(reason, request.id or "", request.args, request.kwargs, einfo)
    if signals.task_retry.receivers:
        signals.task_retry.send(task, request=request, reason=reason, einfo=einfo)
    return Outcome(states.RETRY, reason, einfo, retry)


def _failed_or_autoretried(
    runtime: Runtime, task: Task[Any, Any], request: Request, exc: Exception
) -> Outcome:
    options = runtime.options_for(task.name)
    autoretry_for = options.get("autoretry_for") or ()
    if autoretry_for and isinstance(exc, tuple(autoretry_for)):
        retry_kwargs = dict(options.get("retry_kwargs") or {})
        backoff = options.get("retry_backoff")
        if backoff and "countdown" not in retry_kwargs:
            retry_kwargs["countdown"] = exponential_backoff(
                1.0 if backoff is True else float(backoff),
                request.retries,
                float(options.get("retry_backoff_max") or 600),
                bool(options.get("retry_jitter", True)),
            )
        try:
            task.retry(exc=exc, **retry_kwargs)
        except Retry as retry:
            return _retried(task, request, retry)
        except Exception as final:  # max_retries reached: the original error fails the task
            return _failed(task, request, final)
    return _failed(task, request, exc)


def _failed(task: Task[Any, Any], request: Request, exc: BaseException) -> Outcome:
    einfo = ExceptionInfo(exc)
    task.on_failure(exc, request.id or "", request.args, request.kwargs, einfo)
    if signals.task_failure.receivers:
        signals.task_failure.send(
            task,
            task_id=request.id,
            exception=exc,
            args=request.args,
            kwargs=request.kwargs,
            traceback=exc.__traceback__,
            einfo=einfo,
        )
    return Outcome(states.FAILURE, exc, einfo)


def is_expected(task: Task[Any, Any], exc: BaseException) -> bool:
    """True for exceptions listed in the task's ``throws`` (logged without traceback)."""
    return bool(task.throws) and isinstance(exc, tuple(task.throws))


def apply_eagerly(
    runtime: Runtime,
    task: Task[Any, Any],
    args: Optional[Sequence[Any]],
    kwargs: Optional[Mapping[str, Any]],
    *,
    task_id: str,
    throw: Optional[bool],
    options: Mapping[str, Any],
) -> EagerResult:
    """Run a task here as a worker would, arguments and result round-tripped through the
    serializer, retries run at once (countdowns are not waited for)."""
    codec = runtime.codec
    serializer = options.get("serializer") or task.serializer
    args, kwargs = _round_trip(codec, [list(args or ()), dict(kwargs or {})], serializer)
    message = Message(
        id=task_id,
        task=task.name,
        args=list(args),
        kwargs=dict(kwargs),
        queue=options.get("queue") or "",
        priority=options.get("priority") or 5,
        headers=dict(options.get("headers") or {}),
    )
    while True:
        outcome = execute(runtime, task, Request(message, is_eager=True))
        if outcome.state != states.RETRY:
            break
        retry = outcome.retry
        message.retries += 1
        if retry is not None and retry.args_override is not None:
            message.args = list(retry.args_override)
        if retry is not None and retry.kwargs_override is not None:
            message.kwargs = dict(retry.kwargs_override)
    value = outcome.value
    if outcome.state == states.SUCCESS:
        try:
            value = _round_trip(codec, value, serializer)
        except EncodeError as error:
            outcome = Outcome(states.FAILURE, error, ExceptionInfo(error))
            value = error
    if throw is None:
        throw = runtime.config.eager_propagates
    if throw and outcome.state == states.FAILURE:
        raise value
    return EagerResult(task_id, value, outcome.state, outcome.traceback, task.name)


def _round_trip(codec: Codec, value: Any, serializer: Optional[str]) -> Any:
    return codec.decode(codec.encode(value, serializer))

"""``Task``: a function declared with ``@tasks.task``, and how it is called.

The options and their meaning follow Celery. A task belongs to a ``Tasks`` extension, not
to an app: calling it looks up the current app's state (``current_app``), so one task
serves every app the extension was initialized on.
"""

from __future__ import annotations

import contextvars
import random
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Optional, TypeVar, Union

from .exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from .canvas import Signature
    from .extension import Tasks
    from .result import AsyncResult, EagerResult

if sys.version_info >= (3, 10):
    from typing import ParamSpec

    P = ParamSpec("P")
else:  # pragma: no cover - Python 3.9 has no ParamSpec; signatures are not checked there
    P = TypeVar("P")
R = TypeVar("R")

Seconds = Union[int, float]
When = Union[datetime, int, float, None]


@dataclass
class Request:
    """What a running task knows about its invocation: ``self.request`` in bound tasks."""

    id: Optional[str] = None
    task: Optional[str] = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: Optional[datetime] = None
    expires: Optional[datetime] = None
    queue: Optional[str] = None
    priority: Optional[int] = None
    headers: dict[str, Any] = field(default_factory=dict)
    parent_id: Optional[str] = None
    root_id: Optional[str] = None
    group_id: Optional[str] = None
    hostname: Optional[str] = None
    is_eager: bool = False
    called_directly: bool = True
    ignore_result: bool = False
    delivery_info: dict[str, Any] = field(default_factory=dict)
    #: The message being run (None when called directly).
    message: Any = None

    @property
    def group(self) -> Optional[str]:
        return self.group_id


_current_request: contextvars.ContextVar[Optional[Request]] = contextvars.ContextVar(
    "flask_tasks_request", default=None
)


def current_request() -> Optional[Request]:
    """The request of the task running in this thread/context, if any."""
    return _current_request.get()


def push_request(request: Request) -> contextvars.Token[Optional[Request]]:
    return _current_request.set(request)


def pop_request(token: contextvars.Token[Optional[Request]]) -> None:
    _current_request.reset(token)


def to_timestamp(when: When, countdown: Optional[Seconds] = None) -> Optional[float]:
    """Unix time from an aware or naive-UTC datetime, or from seconds from now."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    if isinstance(when, timedelta):
        return datetime.now(timezone.utc).timestamp() + when.total_seconds()
    if countdown is not None:
        return datetime.now(timezone.utc).timestamp() + float(countdown)
    if when is not None:
        return datetime.now(timezone.utc).timestamp() + float(when)
    return None


def exponential_backoff(factor: float, retries: int, maximum: float, full_jitter: bool) -> float:
    """Seconds to wait before retry number ``retries + 1``: factor·2^retries, capped,
    then (with jitter) a uniform pick below that, so retries of many tasks spread out."""
    countdown = min(maximum, factor * (2**retries))
    if full_jitter:
        countdown = random.uniform(0, countdown)
    return max(0.0, countdown)


class Task(Generic[P, R]):
    """A task: subclass it and pass ``base=`` to the decorator to add hooks or defaults."""

    name: str = ""
    bind: bool = False
    queue: Optional[str] = None
    priority: Optional[int] = None
    max_retries: Optional[int] = 3
    default_retry_delay: Seconds = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = {}
    retry_backoff: Union[bool, Seconds] = False
    retry_backoff_max: Seconds = 600
    retry_jitter: bool = True
    acks_late: Optional[bool] = None
    rate_limit: Optional[str] = None
    time_limit: Optional[Seconds] = None
    soft_time_limit: Optional[Seconds] = None
    ignore_result: bool = False
    store_errors_even_if_ignored: bool = False
    track_started: bool = False
    expires: Optional[Union[Seconds, datetime]] = None
    serializer: Optional[str] = None
    compression: Optional[str] = None
    throws: tuple[type[BaseException], ...] = ()

    #: Option names accepted by ``@tasks.task(...)``.
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        [
            "name",
            "bind",
            "queue",
            "priority",
            "max_retries",
            "default_retry_delay",
            "autoretry_for",
            "retry_kwargs",
            "retry_backoff",
            "retry_backoff_max",
            "retry_jitter",
            "acks_late",
            "rate_limit",
            "time_limit",
            "soft_time_limit",
            "ignore_result",
            "store_errors_even_if_ignored",
            "track_started",
            "expires",
            "serializer",
            "compression",
            "throws",
        ]
    )

    def __init__(self, extension: Tasks, function: Callable[..., R], **options: Any) -> None:
        self.extension = extension
        self.function = function
        for key, value in options.items():
            setattr(self, key, value)
        if not self.name:
            self.name = f"{function.__module__}.{function.__qualname__}"
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__module__ = function.__module__
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- running --------------------------------------------------------------------------

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task body; the decorated function, with the task first when ``bind``."""
        if self.bind:
            return self.function(self, *args, **kwargs)
        return self.function(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function here and now, like a plain function call."""
        return self.run(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The current invocation of this task (a blank one when called directly)."""
        request = _current_request.get()
        if request is not None and request.task == self.name:
            return request
        return Request(task=self.name)

    # -- calling --------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Send the task to the workers: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        countdown: Optional[Seconds] = None,
        eta: Optional[datetime] = None,
        expires: Optional[Union[Seconds, datetime]] = None,
        task_id: Optional[str] = None,
        queue: Optional[str] = None,
        priority: Optional[int] = None,
        link: Any = None,
        link_error: Any = None,
        headers: Optional[Mapping[str, Any]] = None,
        ignore_result: Optional[bool] = None,
        retry: bool = True,
        retry_policy: Optional[Mapping[str, Any]] = None,
        serializer: Optional[str] = None,
        compression: Optional[str] = None,
        **extra: Any,
    ) -> AsyncResult:
        """Send the task to the workers with options; returns its ``AsyncResult``.

        Raises ``EncodeError`` before anything is published when the arguments cannot be
        serialized or are too large, and ``OperationalError`` when the broker stays
        unreachable through ``retry_policy``.
        """
        options = {
            "countdown": countdown,
            "eta": eta,
            "expires": expires,
            "task_id": task_id,
            "queue": queue,
            "priority": priority,
            "link": link,
            "link_error": link_error,
            "headers": headers,
            "ignore_result": ignore_result,
            "retry": retry,
            "retry_policy": retry_policy,
            "serializer": serializer,
            "compression": compression,
            **extra,
        }
        return self.extension._state().send(self.name, args, kwargs, options, task=self)

    def apply(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        task_id: Optional[str] = None,
        throw: Optional[bool] = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here, through the full machinery (retries, hooks, signals)."""
        from .execution import apply_eagerly

        return apply_eagerly(
            self.extension._state(),
            self,
            tuple(args or ()),
            dict(kwargs or {}),
            task_id=task_id or str(uuid.uuid4()),
            throw=throw,
            options=options,
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with partial arguments (``add.s(2)`` then ``| add.s(3)``)."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, extension=self.extension)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: the parent's result is not prepended to its arguments."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, immutable=True, extension=self.extension)

    def signature(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Signature:
        from .canvas import Signature

        immutable = bool(options.pop("immutable", False))
        return Signature(
            self.name,
            tuple(args or ()),
            dict(kwargs or {}),
            options=options,
            immutable=immutable,
            extension=self.extension,
        )

    subtask = signature

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return self.extension.AsyncResult(task_id, task_name=self.name)

    # -- inside a running task ------------------------------------------------------------

    def retry(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        exc: Optional[BaseException] = None,
        throw: bool = True,
        eta: Optional[datetime] = None,
        countdown: Optional[Seconds] = None,
        max_retries: Optional[int] = None,
        **options: Any,
    ) -> Retry:
        """Run this task again later with the same id; raises ``Retry`` (unless not
        ``throw``). Past ``max_retries`` raises ``exc`` or ``MaxRetriesExceededError``."""
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise RuntimeError(f"{self.name}.retry() called outside a running task")
        limit = max_retries if max_retries is not None else self.max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{tuple(request.args)} "
                f"kwargs:{dict(request.kwargs)}: max_retries={limit} reached"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when = to_timestamp(eta, countdown)
        retry = Retry(exc=exc, when=None if when is None else max(0.0, when - _now()))
        retry.eta = when
        retry.args_override = args
        retry.kwargs_override = kwargs
        retry.options = options
        if throw:
            raise retry
        return retry

    def update_state(
        self,
        task_id: Optional[str] = None,
        state: Optional[str] = None,
        meta: Any = None,
        **_kwargs: Any,
    ) -> None:
        """Store a custom state (e.g. ``"PROGRESS"``) and its ``meta`` for this task."""
        task_id = task_id or self.request.id
        if not task_id:
            raise RuntimeError(f"{self.name}.update_state() needs a task_id outside a running task")
        self.extension._state().store_state(task_id, state or "PROGRESS", meta, task_name=self.name)

    def send_event(self, *_args: Any, **_kwargs: Any) -> None:
        """Accepted for Celery compatibility; Flask-Tasks has no event stream."""

    # -- hooks ----------------------------------------------------------------------------

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called in the worker just before the task body runs."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called in the worker after the task returned ``retval``."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called in the worker when the task failed for good."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called in the worker when the task is about to be retried."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called in the worker after the task ended, whatever the outcome."""


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


def task_options_for(task: Task[Any, Any], annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The task's options with ``TASKS_ANNOTATIONS`` overrides applied (glob names allowed)."""
    from fnmatch import fnmatchcase

    options = {name: getattr(task, name) for name in Task.OPTIONS}
    for pattern, overrides in annotations.items():
        if pattern == task.name or fnmatchcase(task.name, pattern):
            options.update(overrides)
    return options

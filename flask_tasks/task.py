"""``Task``: a function declared with ``@tasks.task``, and how it is called.

The options and their meaning follow Celery. A task belongs to a ``Tasks`` extension, not
to an app: calling it looks up the current app's runtime, so one task serves every app
the extension was initialized on. Whether a call runs eagerly is decided here, where the
call starts.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Generic,
    Optional,
    TypeVar,
    Union,
    cast,
)

from .batching import send_messages
from .canvas import Signature
from .exceptions import MaxRetriesExceededError, Retry
from .execution import apply_eagerly
from .message import Request, Seconds, current_request, to_timestamp
from .on_commit import check_options, eager_on_commit
from .records import Record
from .result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from .runtime import Owner

if sys.version_info >= (3, 10):
    from typing import ParamSpec

    P = ParamSpec("P")
else:  # pragma: no cover - Python 3.9 has no ParamSpec; signatures are not checked there
    P = TypeVar("P")
R = TypeVar("R")

#: Options ``Task.retry`` passes on to the next run.
RETRY_OPTIONS = frozenset({"queue", "priority", "headers", "expires"})


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

    def __init__(self, extension: Owner, function: Callable[..., R], **options: Any) -> None:
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
        return cast(R, self.run(*args, **kwargs))

    @property
    def request(self) -> Request:
        """The current invocation of this task (a blank one when called directly)."""
        request = current_request()
        if request is not None and request.task == self.name:
            return request
        return Request.blank(self.name)

    def options(self) -> dict[str, Any]:
        """This task's options (the names of ``OPTIONS``), before ``TASKS_ANNOTATIONS``."""
        return {name: getattr(self, name) for name in self.OPTIONS}

    # -- calling --------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Send the task to the workers: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """``apply_async(args, kwargs, on_commit=True)``: send when the session commits."""
        return self.apply_async(args, kwargs, on_commit=True)

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
        on_commit: bool = False,
        session: Any = None,
        connection: Any = None,
        **extra: Any,
    ) -> AsyncResult:
        """Send the task to the workers with options; returns its ``AsyncResult``.

        Raises ``EncodeError`` before anything is published when the arguments cannot be
        serialized or are too large, and ``OperationalError`` when the broker stays
        unreachable through ``retry_policy``. ``on_commit=True`` sends when ``session``
        (default: Flask-SQLAlchemy's ``db.session``) commits; ``connection=`` writes the
        message in that connection's transaction (PostgreSQL broker). See :mod:`.on_commit`.

        ``task_id`` names the message and its result. Sending an id that is still waiting
        replaces the waiting message; sending it while a worker runs it queues another
        message under that id, which runs as well: two runs, and the record shows one of
        their outcomes.
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
        runtime = self.extension.runtime()
        check_options(on_commit, session, connection)
        if runtime.config.always_eager:  # Celery returns an EagerResult too (same interface)
            task_id = task_id or str(uuid.uuid4())
            throw = runtime.config.eager_propagates
            run = partial(apply_eagerly, runtime, self, args, kwargs, options=options)
            run = partial(run, task_id=task_id, throw=throw)
            if on_commit:
                return eager_on_commit(runtime, run, task_id, session)  # type: ignore[return-value]
            return run()  # type: ignore[return-value]
        message = runtime.producer.message(
            self.name, args, kwargs, options, runtime.options_for(self.name)
        )
        unsent = send_messages(
            runtime,
            [message],
            retry=retry,
            retry_policy=retry_policy,
            on_commit=on_commit,
            session=session,
            connection=connection,
        )
        # The PENDING record just written: get() need not read it back before waiting.
        sent_now = not (on_commit or connection is not None or message.ignore_result)
        pending = runtime.producer.pending_record(message) if sent_now else None
        return AsyncResult(message.id, runtime, self.name, pending=pending, unsent=unsent)

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
        return apply_eagerly(
            self.extension.runtime(),
            self,
            args,
            kwargs,
            task_id=task_id or str(uuid.uuid4()),
            throw=throw,
            options=options,
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with partial arguments (``add.s(2)`` then ``| add.s(3)``)."""
        return Signature(self.name, args, kwargs, extension=self.extension)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: the parent's result is not prepended to its arguments."""
        return Signature(self.name, args, kwargs, immutable=True, extension=self.extension)

    def signature(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> Signature:
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
        return AsyncResult(task_id, self.extension.runtime(), self.name)

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
        unknown = set(options) - RETRY_OPTIONS
        if unknown:
            raise TypeError(
                f"{self.name}.retry() got unknown option(s) {sorted(unknown)}; "
                f"it passes on {sorted(RETRY_OPTIONS)}"
            )
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
        request = current_request()
        if request is not None and request.is_eager:
            return  # an eager run keeps its outcome in its EagerResult, not in the store
        record = Record.custom(state or "PROGRESS", meta, self.name)
        self.extension.runtime().write(task_id, record)

    def send_event(self, *_args: Any, **_kwargs: Any) -> None:
        """Not available: Flask-Tasks has no event stream (raises NotImplementedError)."""
        raise NotImplementedError(
            "Flask-Tasks has no event stream: report progress with self.update_state(), "
            "or connect to the blinker signals in flask_tasks.signals"
        )

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

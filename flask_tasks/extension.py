"""``Tasks``: the Flask extension. Task registry, ``init_app``, sending by name, results.

The extension object holds no app. Each ``init_app`` validates the ``TASKS_*`` keys once
and stores the app's :class:`~flask_tasks.runtime.Runtime` (config, codec, connections,
producer) in ``app.extensions["tasks"]``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import Any, Callable, Optional, TypeVar, Union, overload

from flask import Flask

from .batching import Batch, batching, register_request_batching
from .brokers import check_urls
from .canvas import Signature, Workflow, send
from .cli import register_commands
from .config import TasksConfig
from .config_entries import parse_rate
from .config_hints import misnamed_key_hints, unsigned_messages_hint
from .exceptions import ImproperlyConfigured
from .periodic import Entry
from .result import AsyncResult
from .runtime import EXTENSION_KEY, Runtime, current_runtime, runtime_of
from .task import Task
from .web import register_web, status_url

F = TypeVar("F", bound=Callable[..., Any])
#: The class, under a name the ``Tasks.AsyncResult`` method does not shadow.
_AsyncResult = AsyncResult
logger = logging.getLogger("flask_tasks")


class Tasks:
    """Background jobs for a Flask app: ``tasks = Tasks(app)`` or ``tasks.init_app(app)``.

    Keyword arguments are defaults for the ``TASKS_*`` settings, lower-case without the
    prefix (``Tasks(broker_url="memory://")``); ``app.config`` wins over them.
    """

    def __init__(self, app: Flask | None = None, **defaults: Any) -> None:
        self._defaults = defaults
        self._registry: dict[str, Task[Any, Any]] = {}
        #: Declared tasks by name: a read-only, live view.
        self.registry: Mapping[str, Task[Any, Any]] = MappingProxyType(self._registry)
        self._periodic: list[Entry] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate the app's ``TASKS_*`` config and attach Flask-Tasks to it: its
        runtime, the ``flask worker`` commands and the status blueprint.

        Warns (``UserWarning``) about ``CELERY_*`` and ``TASK_*`` keys it ignores, and
        logs a warning when messages go unsigned because the app has no ``SECRET_KEY``.
        Raises ``ImproperlyConfigured`` for a bad setting, a broker or backend URL of an
        unknown scheme, an ``amqp://`` broker without a result backend (RabbitMQ keeps no
        results), or a second ``init_app`` on the same app.
        """
        if EXTENSION_KEY in app.extensions:
            raise ImproperlyConfigured(
                f"Flask-Tasks is already initialized on app {app.name!r}: call init_app "
                "once per app"
            )
        config = TasksConfig.from_mapping(app.config, self._defaults)
        for hint in misnamed_key_hints(app.config):
            warnings.warn(hint, UserWarning, stacklevel=2)
        unsigned = unsigned_messages_hint(app.config, config)
        if unsigned:
            logger.warning("%s (app %r)", unsigned, app.name)
        check_urls(config.broker_url_for(app.instance_path), config.result_backend)
        runtime = Runtime(app, config, self.registry, owner=self, periodic=self._periodic)
        runtime.beat_entries()  # entry names must not clash
        if config.broker_options:
            # Opening checks the options (a misspelled key fails here, not at the first
            # delay()); Redis connects lazily, SQLite opens its file.
            runtime.connections.transport  # noqa: B018
        app.extensions[EXTENSION_KEY] = runtime
        if config.batch_per_request:
            register_request_batching(app, runtime)
        register_commands(app)
        register_web(app, self, config)

    # -- declaring ------------------------------------------------------------------------

    @overload
    def task(self, function: F) -> Task[Any, Any]: ...

    @overload
    def task(self, function: None = None, **options: Any) -> Callable[[F], Task[Any, Any]]: ...

    def task(self, function: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
        """Declare a task: ``@tasks.task`` or ``@tasks.task(bind=True, max_retries=5)``."""
        base = options.pop("base", Task)
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise ImproperlyConfigured(
                f"base= must be a subclass of flask_tasks.Task, got {base!r}"
            )
        unknown = set(options) - Task.OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown task option(s) {sorted(unknown)}; known: {sorted(Task.OPTIONS)}"
            )

        if options.get("rate_limit") is not None:
            try:
                parse_rate(options["rate_limit"])
            except ValueError as error:
                raise ImproperlyConfigured(str(error)) from None

        def declare(function: Callable[..., Any]) -> Task[Any, Any]:
            task = base(self, function, **options)
            self._registry[task.name] = task
            return task

        return declare(function) if function is not None else declare

    def get_task(self, name: str) -> Task[Any, Any]:
        """The task called ``name``; ``NotRegistered`` (naming the closest ones) if none."""
        task: Task[Any, Any] = self.runtime().get_task(name)
        return task

    # -- calling and results ----------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name, without importing it (options as ``apply_async``)."""
        return send(self.runtime(), name, args, kwargs, options)  # type: ignore[no-any-return]

    def batch(self) -> AbstractContextManager[Batch]:
        """``with tasks.batch():`` holds the tasks sent inside the block and publishes them
        together at its end: one round trip on Redis. A result read inside the block
        publishes the batch first. See :mod:`flask_tasks.batching`."""
        return batching(self.runtime())

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:
        """The handle on the task ``task_id`` (sent from anywhere)."""
        return AsyncResult(task_id, self.runtime(), task_name)

    def status_url(self, result: Union[_AsyncResult, str], _external: bool = False) -> str:
        """URL of the status endpoint for ``result``, carrying a signed token; for the
        browser (see ``flask-tasks.js``). Needs a request or app context with a server name."""
        task_id = result if isinstance(result, str) else result.id
        return status_url(self.runtime(), task_id, external=_external)

    def add_periodic_task(
        self, schedule: Any, signature: Signature, name: str | None = None, **options: Any
    ) -> Entry:
        """Send ``signature`` on ``schedule`` (seconds, a ``timedelta``, ``every(...)`` or a
        ``crontab``) under ``flask beat``, in every app of this extension; ``options``
        (queue, priority, expires...) are added to the signature's. The name defaults to
        the signature's text. Raises ``ValueError`` for a bad schedule or option."""
        if not isinstance(signature, Signature) or isinstance(signature, Workflow):
            raise TypeError(
                f"add_periodic_task() takes a task signature such as add.s(1, 2), got {signature!r}"
            )
        entry = Entry.build(
            name or repr(signature),
            signature.task,
            schedule,
            signature.args,
            signature.kwargs,
            {**signature.options, **options},
            where=f"add_periodic_task({name or repr(signature)!r})",
        )
        self._periodic.append(entry)
        return entry

    def runtime(self, app: Flask | None = None) -> Runtime:
        """The runtime of ``app`` (default: the current app), which this extension made;
        a clear error outside an app context or before ``init_app``."""
        runtime = runtime_of(app) if app is not None else current_runtime()
        if runtime.owner is not self:
            raise RuntimeError(
                f"Flask-Tasks is initialized on app {runtime.app.name!r} by another Tasks "
                "object: declare the tasks on the Tasks object passed to init_app"
            )
        return runtime


__all__ = ["Tasks"]

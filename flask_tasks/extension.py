"""``Tasks``: the Flask extension. Task registry, ``init_app``, sending, results.

The extension object holds no app. Each ``init_app`` validates the ``TASKS_*`` keys once
and stores the app's state (config, codec, broker; see ``app_state.py``) in
``app.extensions["tasks"]``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, TypeVar, Union, overload

from flask import Flask, current_app, has_app_context

from . import result as _result
from .app_state import TasksState
from .config import TasksConfig
from .exceptions import ImproperlyConfigured, NotRegistered
from .result import AsyncResult
from .task import Task

F = TypeVar("F", bound=Callable[..., Any])


class Tasks:
    """Background jobs for a Flask app: ``tasks = Tasks(app)`` or ``tasks.init_app(app)``.

    Keyword arguments are defaults for the ``TASKS_*`` settings, lower-case without the
    prefix (``Tasks(broker_url="memory://")``); ``app.config`` wins over them.
    """

    def __init__(self, app: Flask | None = None, **defaults: Any) -> None:
        self._defaults = defaults
        self._registry: dict[str, Task[Any, Any]] = {}
        self._periodic: list[dict[str, Any]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate the app's ``TASKS_*`` config and attach Flask-Tasks to it: its state,
        the ``flask worker`` commands and the status blueprint."""
        config = TasksConfig.from_mapping(app.config, self._defaults)
        app.extensions["tasks"] = TasksState(self, app, config)
        from .cli import register_commands

        register_commands(app)
        from .web import register_web

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
            from .worker.rate_limit import parse_rate

            try:
                parse_rate(options["rate_limit"])
            except ValueError as error:
                raise ImproperlyConfigured(str(error)) from None

        def declare(function: Callable[..., Any]) -> Task[Any, Any]:
            task = base(self, function, **options)
            self._registry[task.name] = task
            return task

        return declare(function) if function is not None else declare

    @property
    def registry(self) -> Mapping[str, Task[Any, Any]]:
        """Declared tasks by name (read-only view)."""
        return dict(self._registry)

    def get_task(self, name: str) -> Task[Any, Any]:
        """The task called ``name``; ``NotRegistered`` (naming the closest ones) if none."""
        try:
            return self._registry[name]
        except KeyError:
            raise NotRegistered(self._unknown_task_message(name)) from None

    def _unknown_task_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._registry), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self._registry)) or "none"
        return (
            f"Task {name!r} is not registered.{hint} Registered tasks: {known}. "
            "Declare it with @tasks.task in a module the app imports (so that the "
            "worker imports it too), or pass name= to match the sender."
        )

    # -- calling and results ----------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name, without importing it (options as ``apply_async``)."""
        return self._state().send(name, args, kwargs, options, task=self._registry.get(name))

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:
        """The handle on the task ``task_id`` (sent from anywhere)."""
        return AsyncResult(task_id, self._state(), task_name)

    def status_url(self, result: Union[_result.AsyncResult, str], _external: bool = False) -> str:
        """URL of the status endpoint for ``result``, carrying a signed token; for the
        browser (see ``flask-tasks.js``). Needs a request or app context with a server name."""
        from .web import status_url

        task_id = result if isinstance(result, str) else result.id
        return status_url(self._state(), task_id, external=_external)

    def add_periodic_task(
        self, schedule: Any, signature: Any, name: str | None = None, **options: Any
    ) -> None:
        """Run ``signature`` on ``schedule`` (seconds, timedelta or crontab) under beat."""
        self._periodic.append(
            {"name": name or repr(signature), "schedule": schedule, "sig": signature, **options}
        )

    # -- state lookup ---------------------------------------------------------------------

    def _state(self, app: Flask | None = None) -> TasksState:
        if app is None:
            if not has_app_context():
                raise RuntimeError(
                    "Working outside of application context: Flask-Tasks needs the app to "
                    "send tasks and read results. Call it from a view or a task, or inside "
                    "'with app.app_context():'."
                )
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get("tasks")
        if not isinstance(state, TasksState) or state.extension is not self:
            raise RuntimeError(
                f"Flask-Tasks is not initialized on app {app.name!r}: call tasks.init_app(app) "
                "in your app factory."
            )
        return state

    def state_for(self, app: Flask) -> TasksState:
        """The per-app state (used by the worker, the CLI and the web blueprint)."""
        return self._state(app)


__all__ = ["Tasks"]

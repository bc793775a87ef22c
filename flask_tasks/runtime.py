"""``Runtime``: what Flask-Tasks keeps per app, in ``app.extensions["tasks"]``.

Made by ``Tasks.init_app``: the validated settings, the codec, the connections (transport
and store) and the producer of one app, with the extension's task registry. Found one way:
:func:`runtime_of` for an app, :func:`current_runtime` for the current one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Optional, Protocol

from flask import Flask, current_app, has_app_context

from . import states
from .brokers import Connections, Store, Transport
from .codec import Codec
from .config import TasksConfig
from .exceptions import ImproperlyConfigured, NotRegistered
from .periodic import Entry, entries_from_config, merged
from .producer import Producer
from .records import Record

EXTENSION_KEY = "tasks"


class Owner(Protocol):
    """What a task or a signature needs of the ``Tasks`` object it belongs to."""

    def runtime(self, app: Optional[Flask] = None) -> Runtime:
        """The runtime of ``app`` (default: the current app)."""
        ...


class Runtime:
    """One app's settings, codec, connections and producer, and the task registry."""

    def __init__(
        self,
        app: Flask,
        config: TasksConfig,
        registry: Mapping[str, Any],
        owner: object,
        periodic: Sequence[Entry] = (),
    ) -> None:
        self.app = app
        self.config = config
        #: The extension's tasks (``flask_tasks.Task``) by name: a read-only, live view.
        #: Typed loosely so that this low module does not import the task layer.
        self.registry = registry
        #: The ``Tasks`` object that made this runtime.
        self.owner = owner
        #: Periodic tasks declared with ``add_periodic_task`` (a live view).
        self.periodic = periodic
        self.codec = make_codec(app, config)
        self.connections = Connections(
            config.broker_url_for(app.instance_path),
            config.result_backend,
            key_prefix=config.key_prefix,
            options=dict(config.broker_options),
            publish_timeout=config.publish_timeout,
        )
        self.producer = Producer(config, self.codec, self.connections)
        self._options: dict[str, Mapping[str, Any]] = {}

    @property
    def transport(self) -> Transport:
        return self.connections.transport

    @property
    def store(self) -> Store:
        return self.connections.store

    def close(self) -> None:
        """Close the connections (a forked child, or the end of a worker)."""
        self.connections.close()

    # -- tasks ----------------------------------------------------------------------------

    def get_task(self, name: str) -> Any:
        """The task called ``name``; ``NotRegistered`` naming the closest ones if none."""
        task = self.registry.get(name)
        if task is None:
            raise NotRegistered(unknown_task_message(name, self.registry))
        return task

    def options_for(self, name: str) -> Mapping[str, Any]:
        """The options of the task ``name`` with ``TASKS_ANNOTATIONS`` applied (glob
        names allowed); empty for a task this app does not know."""
        options = self._options.get(name)
        if options is None:
            task = self.registry.get(name)
            merged = dict(task.options()) if task is not None else {}
            for pattern, overrides in self.config.annotations.items():
                if pattern == name or fnmatchcase(name, pattern):
                    merged.update(overrides)
            options = self._options[name] = merged
        return options

    def beat_entries(self) -> list[Entry]:
        """The periodic tasks of this app: ``TASKS_BEAT_SCHEDULE``, then those declared
        with ``add_periodic_task``."""
        try:
            return merged(entries_from_config(self.config.beat_schedule), self.periodic)
        except ValueError as error:
            raise ImproperlyConfigured(str(error)) from None

    # -- records --------------------------------------------------------------------------

    def read(self, task_id: str) -> Record | None:
        """The stored record of ``task_id``, or None."""
        return Record.decode(self.codec, self.store.get_result(task_id))

    def write(self, task_id: str, record: Record) -> None:
        """Store ``record`` for ``task_id`` (``TASKS_RESULT_EXPIRES``)."""
        self.store.set_result(task_id, record.encode(self.codec), self.config.result_expires)

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> set[str]:
        """Mark tasks revoked: no worker starts them. Those not reserved by a worker are
        recorded as REVOKED at once; returns the ids that may be running (reserved by a
        worker), whose record is left to the worker: with ``terminate`` it stops them
        (REVOKED), without it they run to their end and keep their real outcome, so a
        REVOKED shown to anyone is never followed by SUCCESS."""
        ttl = max(self.config.result_expires, self.config.visibility_timeout)
        ids = list(task_ids)
        self.store.revoke(ids, ttl, terminate=terminate)
        # The marks go first: a worker reserving after them skips the task. Then which
        # are held, then their records (a task settled meanwhile reads as finished).
        held = self.transport.held(ids)
        running = set(ids) if held is None else held
        for task_id, raw in zip(ids, self.store.get_results(ids)):
            record = Record.decode(self.codec, raw)
            if task_id in running or record is None:
                continue
            if record.state in (states.PENDING, states.RECEIVED):
                self.write(task_id, Record.revoked("revoked before it started", record.task))
        return running


def runtime_of(app: Flask) -> Runtime:
    """The runtime of ``app``; a clear error when ``init_app`` was not called on it."""
    runtime = app.extensions.get(EXTENSION_KEY)
    if not isinstance(runtime, Runtime):
        raise RuntimeError(
            f"Flask-Tasks is not initialized on app {app.name!r}: call tasks.init_app(app) "
            "in your app factory."
        )
    return runtime


def current_runtime() -> Runtime:
    """The runtime of the current app; a clear error outside an app context."""
    if not has_app_context():
        raise RuntimeError(
            "Working outside of application context: Flask-Tasks needs the app to send "
            "tasks and read results. Call it from a view or a task, or inside "
            "'with app.app_context():'."
        )
    return runtime_of(current_app._get_current_object())  # type: ignore[attr-defined]


def make_codec(app: Flask, config: TasksConfig) -> Codec:
    """The codec of ``app``: signing with ``SECRET_KEY`` (and its fallbacks) when set."""
    secret = app.config.get("SECRET_KEY")
    sign = config.sign_messages if config.sign_messages is not None else bool(secret)
    if sign and not secret:
        raise ImproperlyConfigured("TASKS_SIGN_MESSAGES is True but the app has no SECRET_KEY")
    keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or []), secret] if sign else []
    return Codec(
        serializer=config.serializer,
        accept=config.accept_content,
        compression=config.compression,
        secret_keys=keys,
        max_bytes=config.message_max_bytes,
    )


def unknown_task_message(name: str, registry: Mapping[str, object]) -> str:
    """Why ``name`` cannot run: the closest registered names, and how to register it."""
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    known = ", ".join(sorted(registry)) or "none"
    return (
        f"Task {name!r} is not registered.{hint} Registered tasks: {known}. "
        "Declare it with @tasks.task in a module the app imports (so that the worker "
        "imports it too), or pass name= to match the sender."
    )

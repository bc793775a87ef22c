"""The prefork pool: N child processes, each running its own solo consumer.

Children reserve from the broker themselves (no task is piped through the parent), so a
child that dies loses nothing: its leases run out and its messages are delivered again.
The parent supervises: it restarts children that exit, and turns SIGTERM/SIGINT into
shutdown events the children watch (events, not signals, so Windows works the same).

POSIX forks the loaded app; Windows (or ``FLASK_TASKS_START_METHOD=spawn``) starts fresh
interpreters that load the app again from its import path, as ``flask`` found it.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from flask import Flask

from .consumer import Consumer, Shutdown

if TYPE_CHECKING:
    from . import Worker

logger = logging.getLogger("flask_tasks.worker")


class AppLoader:
    """Picklable recipe for the app in a spawned child: Flask's own discovery."""

    def __init__(self, import_path: Optional[str]) -> None:
        self.import_path = import_path

    def __call__(self) -> Flask:
        from flask.cli import ScriptInfo

        return ScriptInfo(app_import_path=self.import_path).load_app()


def start_method() -> str:
    default = "spawn" if sys.platform == "win32" else "fork"
    return os.environ.get("FLASK_TASKS_START_METHOD", default)


def _child_main(
    load_app: Callable[[], Flask],
    settings: dict[str, Any],
    warm: Any,
    cold: Any,
    loglevel: str,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches all
    shutdown = Shutdown(warm=_LocalOr(warm), cold=cold)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda *_: shutdown.warm.set())
    if not logging.getLogger().handlers:
        from . import configure_logging

        configure_logging(loglevel)
    app = load_app()
    state = app.extensions["tasks"]
    consumer = Consumer(
        state,
        settings["queues"],
        concurrency=1,
        threaded=False,
        prefetch=settings["prefetch"],
        hostname=settings["hostname"],
        shutdown=shutdown,
        max_tasks=settings["max_tasks_per_child"],
        exclusive_process=True,
        parent_pid=os.getppid(),
    )
    consumer.run()
    state.close()


class _LocalOr:
    """A warm-shutdown flag set by either the parent's event or a local signal."""

    def __init__(self, shared: Any) -> None:
        import threading

        self.shared = shared
        self.local = threading.Event()

    def is_set(self) -> bool:
        return bool(self.local.is_set() or self.shared.is_set())

    def set(self) -> None:
        self.local.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self.local.wait(timeout):
            return True
        return self.is_set()


def run_prefork(worker: Worker) -> int:
    """Start and supervise the children until shutdown; returns the exit code."""
    method = start_method()
    context: Any = multiprocessing.get_context(method)
    warm, cold = context.Event(), context.Event()
    load_app: Callable[[], Flask] = (
        AppLoader(worker.app_import_path) if method == "spawn" else _Inherited(worker.app)
    )
    settings = {
        "queues": worker.queues,
        "prefetch": worker.prefetch,
        "hostname": worker.hostname,
        "max_tasks_per_child": worker.max_tasks_per_child,
    }
    children: dict[Any, Any] = {}

    def start_child() -> None:
        process = context.Process(
            target=_child_main,
            args=(load_app, settings, warm, cold, worker.loglevel),
            name=f"ForkPoolWorker-{len(children) + 1}",
        )
        process.start()
        children[process.sentinel] = process

    def on_signal(signum: int, _frame: Any) -> None:
        if warm.is_set():
            logger.warning("Cold shutdown requested: stopping running tasks")
            cold.set()
        else:
            logger.warning("Warm shutdown requested: finishing running tasks (again: cold)")
            warm.set()

    worker.install_signal_handlers(on_signal)
    for _ in range(worker.concurrency):
        start_child()
    while children:
        for sentinel in multiprocessing.connection.wait(list(children), timeout=1.0):
            process = children.pop(sentinel)
            process.join()
            if warm.is_set():
                continue
            if process.exitcode:
                logger.error(
                    "Child %s exited with code %s; starting another", process.name, process.exitcode
                )
            start_child()
    return 0


class _Inherited:
    """The app itself, inherited by forked children (never pickled)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self) -> Flask:
        return self.app

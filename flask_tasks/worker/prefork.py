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

from ..exceptions import ImproperlyConfigured
from ..runtime import runtime_of
from .consumer import Consumer
from .control import Shutdown
from .logs import configure_logging

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
    """``fork`` on POSIX, ``spawn`` on Windows, or ``FLASK_TASKS_START_METHOD``."""
    default = "spawn" if sys.platform == "win32" else "fork"
    method = os.environ.get("FLASK_TASKS_START_METHOD") or default
    available = multiprocessing.get_all_start_methods()
    if method not in available:
        raise ImproperlyConfigured(
            f"FLASK_TASKS_START_METHOD is {method!r}; this system offers {', '.join(available)}"
        )
    return method


def _child_main(
    load_app: Callable[[], Flask],
    settings: dict[str, Any],
    warm: Any,
    cold: Any,
    loglevel: str,
    ready: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches all
    shutdown = Shutdown(warm=_LocalOr(warm), cold=cold)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda *_: shutdown.warm.set())
    if not logging.getLogger().handlers:
        configure_logging(loglevel)
    app = load_app()
    runtime = runtime_of(app)
    consumer = Consumer(
        runtime,
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
    ready.set()  # the app loaded: a later exit is not a failure to start
    consumer.run()
    runtime.close()


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


#: How many children in a row, beyond the pool size, may exit before they are ready (the
#: app failed to load, say) before the worker stops instead of restarting them forever.
_START_FAILURES_ALLOWED = 2


def run_prefork(worker: Worker) -> int:
    """Start and supervise the children until shutdown; returns the exit code."""
    method = start_method()
    # Only a forked child inherits the loaded app; spawn and forkserver load it again.
    load_app: Callable[[], Flask] = (
        _Inherited(worker.app) if method == "fork" else AppLoader(worker.app_import_path)
    )
    return _Supervisor(worker, multiprocessing.get_context(method), load_app).run()


class _Supervisor:
    """The parent process: keeps ``concurrency`` children running until shutdown."""

    def __init__(self, worker: Worker, context: Any, load_app: Callable[[], Flask]) -> None:
        self.worker = worker
        self.context = context
        self.load_app = load_app
        self.warm, self.cold = context.Event(), context.Event()
        self.settings = {
            "queues": worker.queues,
            "prefetch": worker.prefetch,
            "hostname": worker.hostname,
            "max_tasks_per_child": worker.max_tasks_per_child,
        }
        #: sentinel -> (process, its "ready" event)
        self.children: dict[Any, tuple[Any, Any]] = {}
        self.started = 0
        self.failed_starts = 0
        self.exit_code = 0

    def start_child(self) -> None:
        self.started += 1
        ready = self.context.Event()
        process = self.context.Process(
            target=_child_main,
            args=(self.load_app, self.settings, self.warm, self.cold, self.worker.loglevel, ready),
            name=f"PoolWorker-{self.started}",
        )
        process.start()
        self.children[process.sentinel] = (process, ready)

    def on_signal(self, signum: int, _frame: Any) -> None:
        if self.warm.is_set():
            logger.warning("Cold shutdown requested: stopping running tasks")
            self.cold.set()
        else:
            logger.warning("Warm shutdown requested: finishing running tasks (again: cold)")
            self.warm.set()

    def run(self) -> int:
        self.worker.install_signal_handlers(self.on_signal)
        for _ in range(self.worker.concurrency):
            self.start_child()
        while self.children:
            for sentinel in multiprocessing.connection.wait(list(self.children), timeout=1.0):
                process, ready = self.children.pop(sentinel)
                process.join()
                if not self.warm.is_set():
                    self.replace(process, ready.is_set())
        return 1 if self.cold.is_set() else self.exit_code  # cold: tasks were cut short

    def replace(self, process: Any, was_ready: bool) -> None:
        """Start another child for one that exited, unless children cannot start at all."""
        failed_start = bool(process.exitcode) and not was_ready
        self.failed_starts = self.failed_starts + 1 if failed_start else 0
        if self.failed_starts > self.worker.concurrency + _START_FAILURES_ALLOWED:
            logger.critical(
                "Child processes keep exiting before they are ready (last: %s, exit code %s; "
                "see the error above); stopping the worker",
                process.name,
                process.exitcode,
            )
            self.exit_code = 1
            self.warm.set()
            return
        if process.exitcode:
            logger.error(
                "Child %s exited with code %s; starting another", process.name, process.exitcode
            )
        self.start_child()


class _Inherited:
    """The app itself, inherited by forked children (never pickled)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self) -> Flask:
        return self.app

"""The prefork pool: N child processes, each running its own solo consumer.

Children reserve from the broker themselves (no task is piped through the parent), so a
child that dies loses nothing: its leases run out and its messages are delivered again.
The parent supervises: it restarts children that exit (after ``--max-tasks-per-child``
or ``--max-memory-per-child``, say), turns SIGTERM/SIGINT into shutdown events the
children watch (events, not signals, so Windows works the same), logs one "ready" line
for the worker, and with ``--autoscale`` starts and stops children by the load each one
reports in a shared :class:`~flask_tasks.worker.scaling.LoadBoard`.

POSIX forks the loaded app; Windows (or ``FLASK_TASKS_START_METHOD=spawn``) starts fresh
interpreters that load the app again from its import path, as ``flask`` found it.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from flask import Flask

from ..exceptions import ImproperlyConfigured
from ..runtime import runtime_of
from .consumer import Consumer
from .control import Shutdown
from .logs import configure_logging
from .scaling import AUTOSCALE_KEEPALIVE, BUSY, BUSY_WITH_BACKLOG, IDLE, LoadBoard

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
    stop: Any = None,
    slot: int = 0,
    board: Optional[LoadBoard] = None,
    read_only: Any = None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches all
    shutdown = Shutdown(warm=_LocalOr(warm, stop), cold=cold)
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
        pool="prefork",
        max_memory_kib=settings["max_memory_per_child"],
        announce_ready=False,  # the parent says it once for the worker
        on_load=_reporter(board, slot) if board is not None else None,
    )
    ready.set()  # the app loaded: a later exit is not a failure to start
    consumer.run()
    runtime.close()
    if consumer.fatal is not None:
        if read_only is not None:
            read_only.set()  # an event, not an exit code: a task's os._exit can use any code
        sys.exit(1)


def _reporter(board: LoadBoard, slot: int) -> Callable[[int, bool], None]:
    def report(running: int, waiting: bool) -> None:
        board.set(slot, (BUSY_WITH_BACKLOG if waiting else BUSY) if running else IDLE)

    return report


class _LocalOr:
    """A warm-shutdown flag set by the parent's event for all children, its event for
    this child (autoscaling down), or a local signal."""

    def __init__(self, shared: Any, own: Any = None) -> None:
        import threading

        self.shared = shared
        self.own = own
        self.local = threading.Event()

    def is_set(self) -> bool:
        own = self.own is not None and self.own.is_set()
        return bool(self.local.is_set() or own or self.shared.is_set())

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
        #: Set by a child that stopped because the broker is read-only: another child could
        #: not do better.
        self.read_only = context.Event()
        self.settings = {
            "queues": worker.queues,
            "prefetch": worker.prefetch,
            "hostname": worker.hostname,
            "max_tasks_per_child": worker.max_tasks_per_child,
            "max_memory_per_child": worker.max_memory_per_child,
        }
        self.autoscale = worker.autoscale
        size = worker.autoscale[0] if worker.autoscale else worker.concurrency
        self.board = LoadBoard(context, size)
        #: sentinel -> the child
        self.children: dict[Any, _Child] = {}
        self.started = 0
        self.failed_starts = 0
        self.exit_code = 0
        self.announced = False
        self.idle_since: Optional[float] = None
        self.next_scale = 0.0

    def start_child(self) -> None:
        self.started += 1
        used = {child.slot for child in self.children.values()}
        slot = min(set(range(len(self.board.slots))) - used)
        self.board.set(slot, IDLE)
        ready, stop = self.context.Event(), self.context.Event()
        process = self.context.Process(
            target=_child_main,
            args=(self.load_app, self.settings, self.warm, self.cold, self.worker.loglevel, ready),
            # Only autoscaling reads the load: without it, children report nothing.
            kwargs={
                "stop": stop,
                "slot": slot,
                "board": self.board if self.autoscale else None,
                "read_only": self.read_only,
            },
            name=f"PoolWorker-{self.started}",
        )
        if self.context.get_start_method() == "fork":
            # The app's objects go to the permanent generation, which the collector never
            # walks: a child's collections do not write to (and so copy) their pages.
            gc.collect()
            gc.freeze()
        process.start()
        self.children[process.sentinel] = _Child(process, ready, stop, slot)

    def on_signal(self, signum: int, _frame: Any) -> None:
        if self.warm.is_set():
            logger.warning("Cold shutdown requested: stopping running tasks")
            self.cold.set()
        else:
            logger.warning("Warm shutdown requested: finishing running tasks (again: cold)")
            self.warm.set()

    def run(self) -> int:
        self.worker.install_signal_handlers(self.on_signal)
        first = self.autoscale[1] if self.autoscale else self.worker.concurrency
        for _ in range(first):
            self.start_child()
        while self.children:
            for sentinel in multiprocessing.connection.wait(list(self.children), timeout=0.25):
                child = self.children.pop(sentinel)
                child.process.join()
                if not self.warm.is_set() and not child.stop.is_set():
                    self.replace(child.process, child.ready.is_set())
            self.announce_ready()
            if self.autoscale and not self.warm.is_set():
                self.scale(time.monotonic())
        return 1 if self.cold.is_set() else self.exit_code  # cold: tasks were cut short

    def announce_ready(self) -> None:
        """One "ready" line for the worker, once its first children loaded the app."""
        if self.announced or not self.children:
            return
        if all(child.ready.is_set() for child in self.children.values()):
            self.announced = True
            worker = self.worker
            logger.info(
                "%s ready: consuming %s (prefork, %d children)",
                worker.hostname,
                ", ".join(worker.queues),
                len(self.children),
            )

    def scale(self, now: float) -> None:
        """``--autoscale``: one more child (once a second) while every child is busy and
        messages wait; one fewer after ``AUTOSCALE_KEEPALIVE`` seconds with one idle."""
        assert self.autoscale is not None
        if now < self.next_scale:
            return
        self.next_scale = now + 1.0
        maximum, minimum = self.autoscale
        live = [child for child in self.children.values() if not child.stop.is_set()]
        loads = [self.board.get(child.slot) for child in live]
        if len(live) < maximum and loads and min(loads) >= BUSY and BUSY_WITH_BACKLOG in loads:
            self.idle_since = None
            logger.info("Autoscale: %d -> %d children", len(live), len(live) + 1)
            self.start_child()
            return
        idle = [child for child, load in zip(live, loads) if load == IDLE]
        if not idle or len(live) <= minimum:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= AUTOSCALE_KEEPALIVE:
            self.idle_since = now
            logger.info("Autoscale: %d -> %d children", len(live), len(live) - 1)
            idle[-1].stop.set()

    def replace(self, process: Any, was_ready: bool) -> None:
        """Start another child for one that exited, unless children cannot start at all."""
        if self.read_only.is_set():
            logger.critical("The broker is read-only (see the error above); stopping the worker")
            self.exit_code = 1
            self.warm.set()
            return
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


class _Child:
    """A child process, its "ready" and "stop" events, and its load slot."""

    def __init__(self, process: Any, ready: Any, stop: Any, slot: int) -> None:
        self.process = process
        self.ready = ready
        self.stop = stop
        self.slot = slot


class _Inherited:
    """The app itself, inherited by forked children (never pickled)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self) -> Flask:
        return self.app

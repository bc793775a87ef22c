"""The worker: runs tasks for one app with a pool of processes, threads or greenlets.

``Worker(app, ...).start()`` is what ``flask worker`` calls; tests and the pytest plugin
use it directly (a threaded or solo worker in a background thread, or ``burst=True`` to
drain the queues and return).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import signal
import socket
import sys
import threading
from typing import Any, Callable, Optional, Union

from flask import Flask

from ..beat import Beat
from ..brokers import Store, Transport, hide_password
from ..exceptions import ImproperlyConfigured, OperationalError
from ..runtime import runtime_of
from .consumer import Consumer
from .control import Shutdown
from .green import GREEN_POOLS, is_patched, require
from .logs import configure_logging
from .prefork import run_prefork

logger = logging.getLogger("flask_tasks.worker")

POOLS = ("prefork", "threads", "solo", "gevent", "eventlet")
#: Greenlets per gevent or eventlet worker unless ``-c`` says otherwise.
DEFAULT_GREENLETS = 100


def default_pool() -> str:
    """prefork on POSIX, threads on Windows (no fork there)."""
    return "threads" if sys.platform == "win32" else "prefork"


def expand_hostname(name: str) -> str:
    """Celery's ``-n`` placeholders: ``%h`` host name, ``%n`` its first label, ``%d``
    the domain, ``%%`` a percent sign (``worker1@%h`` -> ``worker1@web1.example.com``)."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    values = {"h": host, "n": short, "d": domain, "%": "%"}
    return re.sub(r"%([hnd%])", lambda match: values[match.group(1)], name)


class Worker:
    """Consumes the app's queues and runs its tasks."""

    def __init__(
        self,
        app: Flask,
        *,
        concurrency: Optional[int] = None,
        pool: Optional[str] = None,
        queues: Optional[list[str]] = None,
        prefetch: Optional[int] = None,
        hostname: Optional[str] = None,
        loglevel: str = "INFO",
        max_tasks_per_child: Optional[int] = None,
        burst: bool = False,
        app_import_path: Optional[str] = None,
        beat: bool = False,
        autoscale: Optional[tuple[int, int]] = None,
        max_memory_per_child: Optional[int] = None,
    ) -> None:
        try:
            runtime = runtime_of(app)
        except RuntimeError as error:
            raise ImproperlyConfigured(str(error)) from None
        self.app = app
        self.runtime = runtime
        self.pool = pool or default_pool()
        if self.pool not in POOLS:
            raise ImproperlyConfigured(f"Unknown pool {self.pool!r}; choose from {POOLS}")
        if self.pool in GREEN_POOLS:
            require(self.pool)
            if not is_patched(self.pool):
                raise ImproperlyConfigured(
                    f"The {self.pool} pool runs in a process patched before the app is "
                    f"imported: start it with 'flask worker -P {self.pool}'"
                )
        if autoscale is not None and self.pool not in ("prefork", "threads"):
            raise ImproperlyConfigured(
                f"--autoscale works with the prefork and threads pools, not {self.pool}"
            )
        self.autoscale = autoscale
        self.max_memory_per_child = max_memory_per_child
        if self.pool == "prefork" and runtime.connections.broker_url.startswith("memory://"):
            raise ImproperlyConfigured(
                "The memory:// broker lives in one process, so the prefork pool cannot use it; "
                "use -P threads or -P solo, or a sqlite:/// or redis:// broker"
            )
        default = DEFAULT_GREENLETS if self.pool in GREEN_POOLS else os.cpu_count() or 1
        self.concurrency = concurrency or default
        if self.pool == "solo":
            self.concurrency = 1
        if autoscale is not None:
            self.concurrency = autoscale[0]
        self.queues = queues or [runtime.config.default_queue]
        if prefetch is not None:
            self.prefetch = prefetch
        else:
            # Per child in prefork. Prefetched messages never wait long behind a slow
            # task: the consumer gives them back when its slots stay busy (see
            # ``consumer.STALL_RETURN``), so idle siblings take them.
            self.prefetch = 4 if self.pool in ("prefork", "solo") else 4 * self.concurrency
        self.hostname = expand_hostname(hostname or "worker@%h")
        self.loglevel = loglevel
        self.max_tasks_per_child = max_tasks_per_child
        self.burst = burst
        #: Run the periodic-task scheduler in this process too (``flask worker -B``).
        self.beat = beat
        self.app_import_path = app_import_path
        self.shutdown = Shutdown()

    # -- presentation ---------------------------------------------------------------------

    def banner(self) -> str:
        """What the worker prints on start: app, broker, queues, pool, tasks."""
        runtime = self.runtime
        tasks = sorted(runtime.registry)
        broker = hide_password(runtime.connections.broker_url)
        results = hide_password(runtime.config.result_backend or broker)
        size = f"autoscale {self.autoscale[0]},{self.autoscale[1]}" if self.autoscale else None
        lines = [
            f" -------------- {self.hostname} (Flask-Tasks, Python {platform.python_version()})",
            f"--- ***** ----- app:         {self.app.name}",
            f"-- ******* ---- broker:      {broker}",
            f"- *** --- * --- results:     {results}",
            f"- ** ---------- pool:        {self.pool} ({size or f'concurrency {self.concurrency}'}"
            f", prefetch {self.prefetch})",
            f"- ** ---------- queues:      {', '.join(self.queues)}",
        ]
        if runtime.config.uses_default_broker:
            lines.append(
                "  note: using the embedded SQLite broker (no server needed, one machine only). "
                "For production set TASKS_BROKER_URL = 'redis://localhost:6379/0'."
            )
        lines.append("[tasks]")
        lines += [f"  . {name}" for name in tasks] or ["  (none registered)"]
        return "\n".join(lines)

    # -- running --------------------------------------------------------------------------

    def install_signal_handlers(self, handler: Callable[[int, Any], None]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a worker in a test thread is stopped with stop()
        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), handler)

    def check_broker(self) -> None:
        """Fail fast, with the URL, when the broker or the result store cannot be reached
        at start."""
        connections = self.runtime.connections
        checks: list[tuple[str, Union[Transport, Store], str]] = [
            ("broker", connections.transport, connections.broker_url)
        ]
        if connections.backend_url is not None:
            checks.append(("result store", connections.store, connections.backend_url))
        for name, connection, url in checks:
            try:
                connection.ping()
            except OperationalError:
                raise
            except Exception as error:
                raise OperationalError(
                    f"Cannot reach the {name} at {hide_password(url)}: {error}"
                ) from error

    def start(self) -> int:
        """Run until shut down; returns the process exit code."""
        configure_logging(self.loglevel)
        self.check_broker()
        stop_beat = self._start_beat() if self.beat else None
        try:
            if self.pool == "prefork":
                # Children open connections of their own, with broker objects made here.
                self.runtime.connections.prepare_fork()
                return run_prefork(self)
            self.install_signal_handlers(self._on_signal)
            consumer = self.consumer()
            consumer.run()
        finally:
            if stop_beat is not None:
                stop_beat()
        if consumer.fatal is not None:
            raise consumer.fatal
        if consumer.memory_exceeded and not self.shutdown.cold.is_set():
            self.runtime.close()
            restart_process()  # --max-memory-per-child: threads and solo start afresh
        return 0

    def _start_beat(self) -> Callable[[], None]:
        """Run the scheduler in a thread of this process; returns what stops it."""
        scheduler = Beat(self.runtime)
        stop = threading.Event()
        thread = threading.Thread(target=scheduler.run, args=(stop,), name="flask-tasks-beat")
        thread.daemon = True
        thread.start()

        def stop_beat() -> None:
            stop.set()
            thread.join(10)

        return stop_beat

    def consumer(self) -> Consumer:
        """The in-process consumer for the threads and solo pools."""
        return Consumer(
            self.runtime,
            self.queues,
            concurrency=self.concurrency,
            threaded=self.pool not in ("solo", "prefork"),
            prefetch=self.prefetch,
            pool=self.pool,
            autoscale=self.autoscale,
            max_memory_kib=self.max_memory_per_child,
            hostname=self.hostname,
            shutdown=self.shutdown,
            burst=self.burst,
            exclusive_process=self.pool == "solo"
            and threading.current_thread() is threading.main_thread(),
        )

    def stop(self) -> None:
        """Ask for a warm shutdown (from another thread)."""
        self.shutdown.warm.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        kind = self.shutdown.request()
        if kind == "warm":
            logger.warning("Warm shutdown requested: finishing running tasks (again: cold)")
        else:
            logger.warning("Cold shutdown requested")


def restart_process() -> None:
    """Replace this process by a fresh run of the same command line (a worker over
    ``--max-memory-per-child``); returns only where that cannot be done (not the main
    thread: a worker in a test)."""
    if threading.current_thread() is not threading.main_thread():
        return
    logger.warning("Restarting the worker process (--max-memory-per-child)")
    argv = list(getattr(sys, "orig_argv", []))
    if not argv:  # Python 3.9
        argv = [sys.executable, "-m", "flask", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


__all__ = ["POOLS", "Worker", "configure_logging", "default_pool", "expand_hostname"]

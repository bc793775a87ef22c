"""A small app for tests that run real ``flask worker`` processes.

``flask --app proc_app worker`` calls ``create_app()`` with no arguments: the settings come
from environment variables the test sets (``PROC_BROKER_URL``, ``PROC_RESULT_BACKEND``,
``PROC_KEY_PREFIX``, ``PROC_VISIBILITY_TIMEOUT``, ``PROC_RECORD_DIR``, ``PROC_SECRET_KEY``,
``PROC_FAIL_IN_CHILD`` to make spawned children fail to load it, ``PROC_BROKER_OPTIONS``
(JSON) and ``PROC_MAX_DELIVERIES``, and ``PROC_BEAT_EVERY`` for a periodic task recording
into ``beat.jsonl``). The test process
builds the same app with ``create_app(overrides)`` to send tasks and read results.

Tasks record what happened as JSON lines appended to files in the record directory
(``O_APPEND`` writes of one short line are atomic, so several processes may share a file).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Optional

from flask import Flask, current_app

from flask_tasks import Tasks
from flask_tasks.exceptions import SoftTimeLimitExceeded

tasks = Tasks()

APP_NAME = "proc_app"
#: The process that imported this module: prefork children share their parent's.
IMPORTED_IN = os.getpid()


def create_app(overrides: Optional[dict[str, Any]] = None) -> Flask:
    """The app, configured from the environment (worker) or ``overrides`` (test)."""
    if os.environ.get("PROC_FAIL_IN_CHILD") and multiprocessing.parent_process() is not None:
        raise RuntimeError("this app cannot be loaded in a child process")
    app = Flask(APP_NAME)
    app.config["TASKS_BROKER_URL"] = os.environ.get("PROC_BROKER_URL")
    app.config["TASKS_RESULT_BACKEND"] = os.environ.get("PROC_RESULT_BACKEND")
    app.config["TASKS_KEY_PREFIX"] = os.environ.get("PROC_KEY_PREFIX", "flask_tasks")
    app.config["TASKS_VISIBILITY_TIMEOUT"] = float(os.environ.get("PROC_VISIBILITY_TIMEOUT", "30"))
    app.config["PROC_RECORD_DIR"] = os.environ.get("PROC_RECORD_DIR")
    if os.environ.get("PROC_BROKER_OPTIONS"):  # JSON, e.g. a short socket timeout
        app.config["TASKS_BROKER_OPTIONS"] = json.loads(os.environ["PROC_BROKER_OPTIONS"])
    if os.environ.get("PROC_MAX_DELIVERIES"):
        app.config["TASKS_MAX_DELIVERIES"] = int(os.environ["PROC_MAX_DELIVERIES"])
    app.config["PROC_GREETING"] = "hello from the app config"
    if os.environ.get("PROC_SECRET_KEY"):  # messages are signed when there is a key
        app.config["SECRET_KEY"] = os.environ["PROC_SECRET_KEY"]
    if os.environ.get("PROC_BEAT_EVERY"):  # one periodic task, every so many seconds
        app.config["TASKS_BEAT_SCHEDULE"] = {
            "beat-entry": {
                "task": "proc.record_run",
                "schedule": float(os.environ["PROC_BEAT_EVERY"]),
                "args": ["beat"],
                "kwargs": {"log": "beat"},
            }
        }
    if os.environ.get("PROC_TASKS_ROUTES"):  # a configuration error, for tests of it
        app.config["TASKS_ROUTES"] = json.loads(os.environ["PROC_TASKS_ROUTES"])
    app.config.update(overrides or {})
    tasks.init_app(app)
    return app


# -- recording ---------------------------------------------------------------------------


def record(name: str, **fields: Any) -> None:
    """Append one JSON line to ``<record dir>/<name>.jsonl`` (time and pid included)."""
    line = json.dumps({"time": time.time(), "pid": os.getpid(), **fields}) + "\n"
    path = Path(current_app.config["PROC_RECORD_DIR"]) / f"{name}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_records(record_dir: Path, name: str) -> list[dict[str, Any]]:
    """The lines ``record(name, ...)`` wrote so far (for the test process)."""
    path = Path(record_dir) / f"{name}.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    # A line still being written (read mid-write) has no newline yet: it is not counted.
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _pause(seconds: float) -> None:
    """Sleep in short steps, so an exception raised into this thread arrives promptly."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


# -- tasks -------------------------------------------------------------------------------


@tasks.task(name="proc.add")
def add(x: int, y: int) -> int:
    return x + y


@tasks.task(name="proc.total")
def total(numbers: list[int]) -> int:
    return sum(numbers)


@tasks.task(name="proc.record_run")
def record_run(label: str, log: str = "runs") -> str:
    """Record that it ran (with the time): for order, countdown and queue tests."""
    record(log, label=label)
    return label


@tasks.task(name="proc.sleep_then_return", bind=True)
def sleep_then_return(self: Any, seconds: float, value: Any, log: str = "sleepers") -> Any:
    """Record the start, sleep, record the end, return ``value``."""
    record(log, event="start", id=self.request.id, value=value)
    _pause(seconds)
    record(log, event="end", id=self.request.id, value=value)
    return value


@tasks.task(name="proc.block_in_c", bind=True)
def block_in_c(self: Any, seconds: float) -> str:
    """One long C-level sleep: nothing can interrupt it from another thread."""
    record("blockers", event="start", id=self.request.id)
    time.sleep(seconds)
    return "woke up"


@tasks.task(name="proc.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@tasks.task(name="proc.flaky", bind=True, max_retries=5)
def flaky(self: Any, failures: int) -> dict[str, Any]:
    """Fail (and retry) ``failures`` times, then return what the last run saw."""
    record("flaky", id=self.request.id, retries=self.request.retries)
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError("not yet"), countdown=0.1)
    return {"id": self.request.id, "retries": self.request.retries}


@tasks.task(name="proc.flaky_early_ack", bind=True, acks_late=False, max_retries=5)
def flaky_early_ack(self: Any, failures: int) -> int:
    """As ``flaky``, but acknowledged when it starts: a retry must publish it again."""
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError("not yet"), countdown=0.1)
    return int(self.request.retries)


@tasks.task(name="proc.app_context", bind=True)
def app_context(self: Any) -> dict[str, Any]:
    """What the task body sees of Flask: the app and its config."""
    return {
        "app": current_app.name,
        "greeting": current_app.config["PROC_GREETING"],
        "hostname": self.request.hostname,
        "pid": os.getpid(),
    }


@tasks.task(name="proc.pid")
def pid() -> int:
    return os.getpid()


@tasks.task(name="proc.process_info")
def process_info() -> dict[str, int]:
    """Where it runs, which process imported the app, and how many objects the garbage
    collector leaves alone (``gc.freeze``)."""
    import gc

    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "imported_in": IMPORTED_IN,
        "frozen": gc.get_freeze_count(),
    }


@tasks.task(name="proc.soft_limited", bind=True, soft_time_limit=0.3)
def soft_limited(self: Any) -> str:
    try:
        _pause(10)
    except SoftTimeLimitExceeded:
        record("soft", id=self.request.id)
        return "cleaned up"
    return "never interrupted"


@tasks.task(name="proc.hard_limited", bind=True, time_limit=0.3)
def hard_limited(self: Any) -> str:
    record("hard", event="start", id=self.request.id)
    _pause(10)
    record("hard", event="end", id=self.request.id)
    return "never stopped"


@tasks.task(name="proc.hard_limited_in_c", time_limit=0.3)
def hard_limited_in_c(seconds: float) -> str:
    time.sleep(seconds)
    return "never stopped"


@tasks.task(name="proc.rate_limited", rate_limit="5/s")
def rate_limited(index: int) -> int:
    record("rated", index=index)
    return index


def _runs_before(log: str, task_id: str) -> int:
    record_dir = Path(current_app.config["PROC_RECORD_DIR"])
    return sum(1 for line in read_records(record_dir, log) if line.get("id") == task_id)


@tasks.task(name="proc.early_ack", bind=True, acks_late=False)
def early_ack(self: Any, first_run_seconds: float) -> str:
    """At-most-once: acknowledged when it starts. Only the first run is slow."""
    first = _runs_before("early_ack", self.request.id) == 0
    record("early_ack", id=self.request.id)
    _pause(first_run_seconds if first else 0)
    return "done"


@tasks.task(name="proc.late_ack", bind=True, acks_late=True)
def late_ack(self: Any, first_run_seconds: float) -> str:
    """At-least-once: acknowledged when it ends, so a crash runs it again. Only the
    first run is slow."""
    first = _runs_before("late_ack", self.request.id) == 0
    record("late_ack", id=self.request.id, hostname=self.request.hostname)
    _pause(first_run_seconds if first else 0)
    return "done"


@tasks.task(name="proc.counted", bind=True)
def counted(self: Any, index: int) -> int:
    """Record every run with the worker that ran it (for exactly-once checks)."""
    record("counted", index=index, id=self.request.id, hostname=self.request.hostname)
    time.sleep(0.002)
    return index


# -- worker control (tests/test_worker_control.py) ---------------------------------------


@tasks.task(name="proc.soft_in_sleep", soft_time_limit=1)
def soft_in_sleep() -> float:
    """One C-level ``time.sleep(30)``: the soft limit must interrupt it."""
    started = time.monotonic()
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return time.monotonic() - started
    return -1.0


@tasks.task(name="proc.soft_in_socket_read", soft_time_limit=1)
def soft_in_socket_read() -> float:
    """A read on a socket nobody writes to: the soft limit must interrupt it."""
    import socket

    started = time.monotonic()
    left, right = socket.socketpair()
    try:
        left.recv(1)
    except SoftTimeLimitExceeded:
        return time.monotonic() - started
    finally:
        left.close()
        right.close()
    return -1.0


@tasks.task(name="proc.hard_in_sleep", time_limit=1)
def hard_in_sleep() -> str:
    time.sleep(30)
    return "never stopped"


@tasks.task(name="proc.stubborn", time_limit=0.3)
def stubborn(seconds: float) -> str:
    """Swallows its time limit and goes on: the worker must give up on it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.05)
    return "outlived its limit"


@tasks.task(name="proc.nap")
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


_HOARD: list[bytearray] = []


@tasks.task(name="proc.hoard")
def hoard(kib: int) -> int:
    """Keep ``kib`` KiB alive in this process (touched, so it is resident)."""
    block = bytearray(kib * 1024)
    for index in range(0, len(block), 4096):
        block[index] = 1
    _HOARD.append(block)
    return os.getpid()


@tasks.task(name="proc.tracked_nap", track_started=True)
def tracked_nap(seconds: float) -> int:
    """Records RECEIVED and STARTED (``track_started``)."""
    time.sleep(seconds)
    return os.getpid()


@tasks.task(name="proc.die", bind=True)
def die(self: Any, how: str) -> str:
    """End the process running it: ``exit`` (sys.exit), ``os_exit`` or ``segfault``."""
    record("dying", id=self.request.id, how=how)
    if how == "exit":
        raise SystemExit(3)
    if how == "os_exit":
        os._exit(3)
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV
    return "survived"


@tasks.task(name="proc.slow_first_pid", bind=True)
def slow_first_pid(self: Any, first_run_seconds: float) -> int:
    """Return the pid of the process that ran it; only the first run is slow."""
    first = _runs_before("slow_first", self.request.id) == 0
    record("slow_first", id=self.request.id, event="start")
    _pause(first_run_seconds if first else 0)
    record("slow_first", id=self.request.id, event="end", first=first)
    return os.getpid()

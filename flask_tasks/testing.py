"""pytest support: fixtures that run a real worker for the test's app.

Installed as a ``pytest11`` plugin, so with Flask-Tasks installed these fixtures exist in
every test session. They use pytest-flask's ``app`` fixture (or any fixture named ``app``
returning your Flask app)::

    def test_report(app, tasks_worker):
        result = build_report.delay(7)
        assert result.get(timeout=10) == "ok"

    def test_queued_then_drained(app):
        send_welcome.delay("ada@example.com")
        drain(app)                      # runs what is queued, here, then returns
        assert outbox == ["ada@example.com"]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import pytest
from flask import Flask

from .exceptions import TimeoutError
from .runtime import runtime_of
from .worker import Worker

__all__ = ["drain", "start_worker", "tasks_worker", "wait_for_queues"]


def start_worker(app: Flask, **options: Any) -> tuple[Worker, threading.Thread]:
    """Start a worker for ``app`` in a daemon thread (threads pool, 2 threads, quiet)."""
    options.setdefault("pool", "threads")
    options.setdefault("concurrency", 2)
    options.setdefault("loglevel", "WARNING")
    worker = Worker(app, **options)
    thread = threading.Thread(target=worker.start, name="flask-tasks-test-worker", daemon=True)
    thread.start()
    return worker, thread


def drain(app: Flask, queues: Optional[Sequence[str]] = None, timeout: float = 30.0) -> None:
    """Run every ready message of ``queues`` in this thread, then return.

    Deterministic: no background thread, no sleeping. Delayed messages that are not due
    yet stay queued. Raises ``TimeoutError`` if the queues do not empty within ``timeout``
    (for example, a task that keeps retrying at once).
    """
    worker = Worker(
        app, pool="solo", queues=list(queues) if queues else None, burst=True, loglevel="WARNING"
    )
    consumer = worker.consumer()
    consumer.exclusive_process = False
    timer = threading.Timer(timeout, worker.stop)
    timer.start()
    try:
        consumer.run()
    finally:
        timer.cancel()
    if worker.shutdown.warm.is_set():
        raise TimeoutError(f"queues {worker.queues} did not drain within {timeout} s")


def wait_for_queues(
    app: Flask, queues: Optional[Sequence[str]] = None, timeout: float = 30.0
) -> None:
    """Wait until a running worker has taken every ready message from ``queues``."""
    runtime = runtime_of(app)
    names = list(queues or [runtime.config.default_queue])
    deadline = time.monotonic() + timeout
    while any(runtime.transport.queue_length(name) for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"queues {names} still hold messages after {timeout} s")
        time.sleep(0.02)  # a bounded check of queue depth; tests only


@pytest.fixture
def tasks_worker(app: Flask) -> Iterator[Worker]:
    """A real worker (threads pool) consuming the test app's queues while the test runs."""
    worker, thread = start_worker(app)
    yield worker
    worker.stop()
    thread.join(30)
    if thread.is_alive():
        raise RuntimeError("the Flask-Tasks test worker did not stop within 30 s")

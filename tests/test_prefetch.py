"""Prefetched messages never wait long behind a slow task: they go back to the queue."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask

from flask_tasks import Tasks
from flask_tasks.testing import start_worker

tasks = Tasks()
events: list[tuple[str, str, float]] = []
slow_started = threading.Event()


@tasks.task(bind=True)
def work(self, label, seconds):
    events.append((label, self.request.hostname, time.monotonic()))
    if label == "slow":
        slow_started.set()
    time.sleep(seconds)
    events.append((label + "-done", self.request.hostname, time.monotonic()))
    return label


@pytest.fixture
def app():
    app = Flask("prefetch_app")
    app.config["TASKS_BROKER_URL"] = "memory://"
    tasks.init_app(app)
    events.clear()
    slow_started.clear()
    return app


def test_prefetched_work_goes_to_an_idle_worker(app):
    with app.app_context():
        slow = work.delay("slow", 1.5)
        quick = [work.delay(f"quick-{index}", 0.01) for index in range(3)]
    first, first_thread = start_worker(app, pool="solo", prefetch=4, hostname="first")
    try:
        assert slow_started.wait(5)
        time.sleep(0.05)  # "first" now holds the three quick ones, prefetched
        second, second_thread = start_worker(app, pool="solo", prefetch=4, hostname="second")
        try:
            with app.app_context():
                assert [result.get(timeout=5) for result in quick] == [
                    "quick-0",
                    "quick-1",
                    "quick-2",
                ]
                quick_done = time.monotonic()
                assert not slow.ready(), "the quick tasks waited for the slow one"
                assert slow.get(timeout=5) == "slow"
        finally:
            second.stop()
            second_thread.join(5)
    finally:
        first.stop()
        first_thread.join(5)
    slow_start = next(at for label, _, at in events if label == "slow")
    assert quick_done - slow_start < 1.0
    assert {host for label, host, _ in events if label.startswith("quick")} == {"second"}


def test_short_tasks_are_prefetched_in_batches(app):
    broker = app.extensions["tasks"].transport
    counts = []
    original = broker.reserve
    broker.reserve = lambda queues, count, lease: (
        counts.append(count),
        original(queues, count, lease),
    )[1]
    with app.app_context():
        results = [work.delay(f"t{index}", 0) for index in range(40)]
    from flask_tasks.testing import drain

    drain(app)
    assert all(result.successful() for result in results)
    assert max(counts) == 5  # one running + four prefetched per round trip

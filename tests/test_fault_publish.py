"""Publishing against a server that does not answer fails within TASKS_PUBLISH_TIMEOUT,
saying how long it tried: a frozen Redis (SIGSTOP) and a SQLite file another process has
locked. Each test has its own throwaway server or file."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from redis_server import RestartableRedis

from flask_tasks import OperationalError, Tasks

pytestmark = pytest.mark.fault

tasks = Tasks()

#: The publish budget these tests configure, and the bound they allow for it.
BUDGET = 1.0
BOUND = 8.0


@tasks.task(name="fault.add")
def add(x: int, y: int) -> int:
    return x + y


def _app(url: str) -> Flask:
    app = Flask("fault_publish")
    app.config.update(TASKS_BROKER_URL=url, TASKS_PUBLISH_TIMEOUT=BUDGET)
    tasks.init_app(app)
    return app


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


def _time_failing_publish(app: Flask, **options: object) -> tuple[float, str]:
    started = time.monotonic()
    with app.app_context(), pytest.raises(OperationalError) as info:
        add.apply_async((1, 2), **options)
    return time.monotonic() - started, str(info.value)


def test_a_frozen_redis_fails_the_publisher_within_its_bound(
    private_redis: RestartableRedis,
) -> None:
    app = _app(private_redis.url)
    try:
        with app.app_context():
            assert add.delay(1, 2).id  # connected and working
        assert private_redis.process is not None
        private_redis.process.send_signal(signal.SIGSTOP)
        elapsed, message = _time_failing_publish(app)
        assert elapsed < BOUND, message
        assert "TASKS_PUBLISH_TIMEOUT" in message and "attempt(s) in" in message
        elapsed, message = _time_failing_publish(app, retry=False)
        assert elapsed < BOUND, message
        private_redis.process.send_signal(signal.SIGCONT)
        with app.app_context():  # and publishing works again once it thaws
            assert add.delay(1, 2).id
    finally:
        app.extensions["tasks"].close()


def test_a_locked_sqlite_file_fails_the_publisher_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    app = _app(f"sqlite:///{path}")
    try:
        with app.app_context():
            assert add.delay(1, 2).id  # creates the file
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            elapsed, message = _time_failing_publish(app)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert elapsed < BOUND, message
        assert "locked" in message and "TASKS_PUBLISH_TIMEOUT" in message
        with app.app_context():
            assert add.delay(1, 2).id
    finally:
        app.extensions["tasks"].close()

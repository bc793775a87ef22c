"""``AsyncResult.get()`` while the result store is unreachable: it keeps reading until its
timeout (a restart or a Sentinel failover is waited out), then raises OperationalError.
Each test has its own throwaway redis-server, stopped and started again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from redis_server import RestartableRedis

from flask_tasks import OperationalError, Tasks

pytestmark = pytest.mark.fault

tasks = Tasks()


@tasks.task(name="fault_results.add")
def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app(private_redis: RestartableRedis) -> Iterator[Flask]:
    app = Flask("fault_results")
    app.config.update(TASKS_BROKER_URL=private_redis.url, TASKS_PUBLISH_TIMEOUT=1.0)
    tasks.init_app(app)
    yield app
    app.extensions["tasks"].close()


def test_get_waits_out_a_store_restart(
    app: Flask, private_redis: RestartableRedis, threaded_worker: Callable[..., Any]
) -> None:
    with app.app_context():
        result = add.delay(2, 3)
    private_redis.stop()
    outcome: list[Any] = []

    def wait() -> None:
        with app.app_context():
            try:
                outcome.append(result.get(timeout=20))
            except Exception as error:
                outcome.append(error)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(1.5)  # the waiter meets the stopped server meanwhile
    assert not outcome
    private_redis.start()  # empty (no persistence): send the same task again and run it
    with app.app_context():
        add.apply_async((2, 3), task_id=result.id)
    threaded_worker(app)
    waiter.join(20)
    assert outcome == [5]


def test_get_raises_operational_error_when_the_store_stays_away(
    app: Flask, private_redis: RestartableRedis
) -> None:
    with app.app_context():
        result = add.delay(2, 3)
        private_redis.stop()
        started = time.monotonic()
        with pytest.raises(OperationalError, match="Cannot reach Redis"):
            result.get(timeout=1.0)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 5.0, elapsed

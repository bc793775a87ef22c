"""Outcomes of finished tasks in a solo consumer: batched, then settled with the next reserve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tasks import OperationalError, Tasks
from flask_tasks.brokers import Delivery, Settlement
from flask_tasks.runtime import Runtime
from flask_tasks.worker.consumer import Consumer
from flask_tasks.worker.outcomes import Outcomes


class FailingRunner:
    """Stands in for a TaskRunner whose broker is unreachable."""

    def settle(self, settlements: list[Settlement]) -> None:
        raise OperationalError("broker down")

    def settle_and_reserve(
        self, settlements: list[Settlement], queues: list[str], count: int, lease: float
    ) -> list[Delivery]:
        raise OperationalError("broker down")


def test_outcomes_lost_with_a_failed_reserve_are_logged_and_the_error_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = Outcomes(FailingRunner())  # type: ignore[arg-type]
    outcomes.buffer.extend([("a", b"record"), ("b", None)])
    with caplog.at_level(logging.ERROR, "flask_tasks.worker"), pytest.raises(OperationalError):
        outcomes.settle_and_reserve(["default"], 5, 30)
    assert "Could not acknowledge 2 finished task(s): broker down" in caplog.text
    assert outcomes.buffer == []
    caplog.clear()
    with pytest.raises(OperationalError):  # nothing lost: nothing logged
        outcomes.settle_and_reserve(["default"], 5, 30)
    assert "Could not acknowledge" not in caplog.text


def test_a_failed_flush_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes(FailingRunner())  # type: ignore[arg-type]
    outcomes.buffer.append(("a", b"record"))
    with caplog.at_level(logging.ERROR, "flask_tasks.worker"):
        outcomes.flush(force=True)
    assert "Could not acknowledge 1 finished task(s)" in caplog.text
    assert outcomes.buffer == []


def test_a_solo_consumer_settles_each_batch_with_the_next_reserve(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL=f"sqlite:///{tmp_path / 'tasks.sqlite3'}")
    tasks = Tasks(app)

    @tasks.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    runtime: Runtime = app.extensions["tasks"]
    broker: Any = runtime.transport
    calls: list[tuple[str, int]] = []
    ack, ack_and_reserve = broker.ack_with_records, broker.ack_and_reserve

    def spy_ack(settled: list[Settlement], ttl: float) -> Any:
        calls.append(("ack", len(settled)))
        return ack(settled, ttl)

    def spy(settled: list[Settlement], ttl: float, *reserve: Any) -> Any:
        calls.append(("ack_and_reserve", len(settled)))
        return ack_and_reserve(settled, ttl, *reserve)

    broker.ack_with_records = spy_ack
    broker.ack_and_reserve = spy
    try:
        with app.app_context():
            results = [double.delay(x) for x in range(10)]
        Consumer(runtime, ["default"], prefetch=4, burst=True, announce_ready=False).run()
        # 5 held at a time; each reserve settles the 5 before it, the last finds none.
        assert calls == [("ack_and_reserve", 0), ("ack_and_reserve", 5), ("ack_and_reserve", 5)]
        with app.app_context():
            assert [result.get(timeout=5) for result in results] == [2 * x for x in range(10)]
    finally:
        runtime.close()

"""The status endpoints on ``redis+cluster://``: long polling and the event stream wake on
a record written on another master's slot (result channels reach any node)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_tasks import Tasks, states
from flask_tasks.records import Record

tasks = Tasks()


@tasks.task
def job() -> None:
    """Only sent: the tests write its records themselves."""


@pytest.fixture
def app(redis_cluster_url: str) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        TASKS_BROKER_URL=redis_cluster_url,
        TASKS_KEY_PREFIX=f"web-{uuid.uuid4().hex[:8]}",
    )
    tasks.init_app(app)
    yield app
    app.extensions["tasks"].close()


def _write_later(app: Flask, task_id: str, *records: Record) -> threading.Thread:
    def run() -> None:
        for record in records:
            time.sleep(0.2)
            app.extensions["tasks"].write(task_id, record)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _sent(app: Flask) -> tuple[str, str]:
    with app.test_request_context():
        result = job.delay()
        return result.id, tasks.status_url(result)


def test_long_polling_wakes_on_a_write(app: Flask) -> None:
    task_id, url = _sent(app)
    assert app.test_client().get(url).json["state"] == states.PENDING
    writer = _write_later(app, task_id, Record.custom("PROGRESS", {"current": 1, "total": 4}, "t"))
    started = time.monotonic()
    body = app.test_client().get(f"{url}?wait=10").json
    writer.join(5)
    assert body["state"] == "PROGRESS" and body["progress"]["percent"] == 25.0
    assert time.monotonic() - started < 5


def test_the_event_stream_follows_the_task_until_ready(app: Flask) -> None:
    task_id, url = _sent(app)
    writer = _write_later(
        app,
        task_id,
        Record.custom("PROGRESS", {"current": 1, "total": 2}, "t"),
        Record.success({"answer": 42}, "t"),
    )
    started = time.monotonic()
    response: Any = app.test_client().get(url + "/events")
    text = b"".join(response.response).decode()
    response.close()
    writer.join(5)
    assert time.monotonic() - started < 5
    states_seen = [line for line in text.split("\n") if line.startswith("data: ")]
    assert '"state":"PENDING"' in states_seen[0] and '"state":"SUCCESS"' in states_seen[-1]
    assert any('"state":"PROGRESS"' in line for line in states_seen)

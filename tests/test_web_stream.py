"""Waiting endpoints: ``?wait=`` long polling and the ``/events`` Server-Sent Events stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_tasks import Tasks, states
from flask_tasks.exceptions import OperationalError
from flask_tasks.records import Record
from flask_tasks.web import views

tasks = Tasks()


@tasks.task
def job() -> None:
    """Only sent: the tests write its records themselves."""


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    yield app
    app.extensions["tasks"].close()


@pytest.fixture
def sent(app: Flask) -> tuple[str, str]:
    """(task id, status URL) of a task that is PENDING."""
    with app.test_request_context():
        result = job.delay()
        return result.id, tasks.status_url(result)


def write(app: Flask, task_id: str, status: str, result: Any = None) -> None:
    runtime = app.extensions["tasks"]
    if status == states.SUCCESS:
        runtime.write(task_id, Record.success(result, "t"))
    else:
        runtime.write(task_id, Record.custom(status, result, "t"))


def current_state(app: Flask, task_id: str) -> str:
    record = app.extensions["tasks"].read(task_id)
    assert record is not None
    return record.state


def write_later(app: Flask, task_id: str, *steps: tuple[float, str, Any]) -> threading.Thread:
    """Write records from another thread, each after its delay (seconds)."""

    def run() -> None:
        for delay, status, result in steps:
            time.sleep(delay)
            write(app, task_id, status, result)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_events(response: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse an event stream into (events, raw lines)."""
    text = b"".join(response.response).decode()
    response.close()
    events, lines = [], text.split("\n")
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            events.append({"id": fields["id"], "data": json.loads(fields["data"])})
    return events, lines


# -- long polling ------------------------------------------------------------------------


def test_wait_returns_as_soon_as_the_state_changes(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    writer = write_later(app, task_id, (0.2, "PROGRESS", {"current": 1, "total": 2}))
    started = time.monotonic()
    body = app.test_client().get(f"{url}?wait=10").json
    elapsed = time.monotonic() - started
    writer.join(5)
    assert body["state"] == "PROGRESS"
    assert body["progress"]["percent"] == 50.0
    assert 0.15 < elapsed < 5


def test_wait_times_out_with_the_unchanged_status(app: Flask, sent: tuple[str, str]) -> None:
    _task_id, url = sent
    started = time.monotonic()
    response = app.test_client().get(f"{url}?wait=0.3")
    assert response.json["state"] == "PENDING"
    assert 0.25 < time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_wait_is_capped(app: Flask, sent: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "MAX_WAIT", 0.2)
    started = time.monotonic()
    assert app.test_client().get(f"{sent[1]}?wait=100000").json["state"] == "PENDING"
    assert time.monotonic() - started < 5


def test_wait_on_a_ready_task_answers_at_once(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    write(app, task_id, states.SUCCESS, 7)
    started = time.monotonic()
    assert app.test_client().get(f"{url}?wait=30").json["result"] == 7
    assert time.monotonic() - started < 1


def test_since_an_old_version_answers_at_once(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    client = app.test_client()
    seen = client.get(url).json["version"]
    write(app, task_id, "PROGRESS", {"current": 1, "total": 3})  # changed between polls
    started = time.monotonic()
    body = client.get(f"{url}?wait=30&since={seen}").json
    assert body["state"] == "PROGRESS" and body["version"] != seen
    assert time.monotonic() - started < 1
    # With the current version the server waits for the next change.
    writer = write_later(app, task_id, (0.2, states.SUCCESS, 1))
    assert client.get(f"{url}?wait=10&since={body['version']}").json["state"] == "SUCCESS"
    writer.join(5)


def test_wait_releases_the_request_before_waiting(app: Flask, sent: tuple[str, str]) -> None:
    """The wait runs after teardown: an open long poll holds no context or DB session."""
    task_id, url = sent
    writer = write_later(app, task_id, (0.3, states.SUCCESS, 1))
    seen_at_teardown: list[str] = []
    app.teardown_request(lambda _error: seen_at_teardown.append(current_state(app, task_id)))
    assert app.test_client().get(f"{url}?wait=10").json["state"] == "SUCCESS"
    writer.join(5)
    assert seen_at_teardown == ["PENDING"]


def test_record_vanishing_during_the_wait(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    state = app.extensions["tasks"]
    timer = threading.Timer(0.1, state.store.forget_result, args=(task_id,))
    timer.start()
    client = app.test_client()
    assert client.get(f"{url}?wait=10").json["state"] == "PENDING"  # last seen
    timer.join(5)
    assert client.get(url).status_code == 404


# -- Server-Sent Events ------------------------------------------------------------------


def test_events_of_a_finished_task(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    write(app, task_id, states.SUCCESS, {"answer": 42})
    response = app.test_client().get(url + "/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    events, lines = read_events(response)
    assert lines[0] == f"retry: {views.RETRY_MS}"
    assert [event["data"]["state"] for event in events] == ["SUCCESS"]
    assert events[0]["data"]["result"] == {"answer": 42}
    assert events[0]["id"] == events[0]["data"]["version"]


def test_events_follow_the_task_until_ready(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    writer = write_later(
        app,
        task_id,
        (0.1, "PROGRESS", {"current": 1, "total": 2}),
        (0.1, "PROGRESS", {"current": 2, "total": 2}),
        (0.1, states.FAILURE, {"exc_type": "ValueError", "exc_message": "bad input"}),
    )
    started = time.monotonic()
    events, _lines = read_events(app.test_client().get(url + "/events"))
    writer.join(5)
    assert time.monotonic() - started < 5
    seen = [event["data"]["state"] for event in events]
    assert seen[0] == "PENDING" and seen[-1] == "FAILURE"
    assert "PROGRESS" in seen
    assert events[-1]["data"]["error"] == {"type": "ValueError", "message": "bad input"}
    assert len({event["id"] for event in events}) == len(events)  # one event per change


def test_last_event_id_resumes_without_repeats(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    write(app, task_id, states.SUCCESS, 1)
    client = app.test_client()
    first, _ = read_events(client.get(url + "/events"))
    again, lines = read_events(
        client.get(url + "/events", headers={"Last-Event-ID": first[0]["id"]})
    )
    assert again == []  # already seen, and ready: the stream just ends
    assert lines[0].startswith("retry:")


def test_quiet_stream_sends_keep_alives_and_ends_after_max_duration(
    app: Flask, sent: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "HEARTBEAT", 0.05)
    monkeypatch.setattr(views, "MAX_STREAM", 0.3)
    started = time.monotonic()
    events, lines = read_events(app.test_client().get(sent[1] + "/events"))
    assert 0.25 < time.monotonic() - started < 5
    assert [event["data"]["state"] for event in events] == ["PENDING"]
    assert lines.count(": keep-alive") >= 3


def test_stream_ends_when_the_record_vanishes(
    app: Flask, sent: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, url = sent
    state = app.extensions["tasks"]
    timer = threading.Timer(0.1, state.store.forget_result, args=(task_id,))
    timer.start()
    started = time.monotonic()
    events, _ = read_events(app.test_client().get(url + "/events"))
    timer.join(5)
    assert [event["data"]["state"] for event in events] == ["PENDING"]
    assert time.monotonic() - started < 5


def test_events_refusals_are_json(app: Flask) -> None:
    client = app.test_client()
    bad = client.get("/tasks/nonsense/events")
    assert (bad.status_code, bad.json["error"]) == (400, "bad_token")
    with app.test_request_context():
        url = tasks.status_url("never-sent")
    missing = client.get(url + "/events")
    assert (missing.status_code, missing.mimetype) == (404, "application/json")
    assert missing.headers["Cache-Control"] == "no-store"


def test_stream_releases_the_request_before_waiting(app: Flask, sent: tuple[str, str]) -> None:
    task_id, url = sent
    writer = write_later(app, task_id, (0.3, states.SUCCESS, 1))
    seen_at_teardown: list[str] = []
    app.teardown_request(lambda _error: seen_at_teardown.append(current_state(app, task_id)))
    events, _ = read_events(app.test_client().get(url + "/events"))
    writer.join(5)
    assert seen_at_teardown == ["PENDING"]
    assert events[-1]["data"]["state"] == "SUCCESS"


def test_store_failing_during_a_wait(
    app: Flask, sent: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status line is sent already: a long poll answers the last state, a stream ends."""
    _task_id, url = sent
    backend = app.extensions["tasks"].store

    def unreachable(*_args: Any) -> None:
        raise OperationalError("connection lost")

    monkeypatch.setattr(backend, "watch_result", unreachable)
    client = app.test_client()
    assert client.get(f"{url}?wait=5").json["state"] == "PENDING"
    events, _ = read_events(client.get(url + "/events"))
    assert [event["data"]["state"] for event in events] == ["PENDING"]

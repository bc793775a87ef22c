"""``POST <prefix>/<token>/revoke``: off by default, CSRF-guarded, JSON answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_tasks import Tasks, states
from flask_tasks.records import Record
from flask_tasks.worker import Worker

tasks = Tasks()
XHR = {"X-Requested-With": "XMLHttpRequest"}


@tasks.task
def later() -> str:
    return "ran"


@tasks.task(bind=True)
def long_running(self: Any) -> None:
    for step in range(200):
        self.update_state(state="PROGRESS", meta={"current": step, "total": 200})
        time.sleep(0.05)


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        {"SECRET_KEY": "test", "TASKS_BROKER_URL": "memory://", "TASKS_ALLOW_REVOKE": True}
    )
    app.config.update(config)
    tasks.init_app(app)
    return app


@pytest.fixture
def app() -> Iterator[Flask]:
    app = make_app()
    yield app
    app.extensions["tasks"].close()


def status_url(app: Flask, countdown: float = 60) -> str:
    with app.test_request_context():
        return tasks.status_url(later.apply_async(countdown=countdown))


def test_revoke_is_off_by_default() -> None:
    app = make_app(TASKS_ALLOW_REVOKE=False)
    url = status_url(app)
    response = app.test_client().post(url + "/revoke", json={}, headers=XHR)
    assert response.status_code == 403
    assert response.json["error"] == "revoke_disabled"
    assert response.headers["Cache-Control"] == "no-store"
    assert app.test_client().get(url).json["state"] == "PENDING"


@pytest.mark.parametrize(
    "request_options",
    [
        {},  # a bare POST, as an <img> or a cross-site <form> could send
        {"data": {"terminate": "1"}},  # form-encoded body
        {"data": "{}", "content_type": "text/plain"},  # JSON text without the type
        {"data": "not json", "content_type": "application/json"},
        {"json": {}, "headers": {"Sec-Fetch-Site": "cross-site", **XHR}},
    ],
    ids=["bare", "form", "text-plain", "invalid-json", "cross-site"],
)
def test_revoke_refuses_what_a_cross_site_page_can_send(
    app: Flask, request_options: dict[str, Any]
) -> None:
    url = status_url(app)
    response = app.test_client().post(url + "/revoke", **request_options)
    assert response.status_code == 403
    assert response.json["error"] == "csrf"
    assert app.test_client().get(url).json["state"] == "PENDING"


@pytest.mark.parametrize(
    "request_options",
    [{"json": {}}, {"headers": XHR}, {"json": {"terminate": False}, "headers": XHR}],
    ids=["json-body", "x-requested-with", "both"],
)
def test_revoke_a_waiting_task(app: Flask, request_options: dict[str, Any]) -> None:
    url = status_url(app)
    response = app.test_client().post(url + "/revoke", **request_options)
    assert response.status_code == 202
    body = response.json
    assert body["state"] == "REVOKED"
    assert (body["ready"], body["successful"]) == (True, False)
    assert body["error"]["type"] == "TaskRevokedError"
    assert app.test_client().get(url).json["state"] == "REVOKED"


def test_revoke_of_a_finished_task_changes_nothing(app: Flask) -> None:
    url = status_url(app)
    state = app.extensions["tasks"]
    task_id = app.test_client().get(url).json["id"]
    state.write(task_id, Record.success("ran", "t"))
    response = app.test_client().post(url + "/revoke", json={})
    assert response.status_code == 200
    assert response.json["state"] == "SUCCESS"


def test_revoke_refusals_for_tokens_and_unknown_tasks(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/tasks/forged/revoke", json={}).json["error"] == "bad_token"
    with app.test_request_context():
        missing = tasks.status_url("never-sent")
    response = client.post(missing + "/revoke", json={})
    assert (response.status_code, response.json["error"]) == (404, "not_found")


def test_revoke_respects_scope() -> None:
    owner = {"value": "alice"}
    app = make_app(TASKS_TOKEN_SCOPE=lambda: owner["value"])
    url = status_url(app)
    owner["value"] = "mallory"
    response = app.test_client().post(url + "/revoke", json={})
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"


def test_terminate_stops_a_running_task(app: Flask) -> None:
    worker = Worker(app, pool="threads", concurrency=1, loglevel="CRITICAL")
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        with app.test_request_context():
            result = long_running.delay()
            url = tasks.status_url(result)
        client = app.test_client()
        deadline = time.monotonic() + 10
        while client.get(f"{url}?wait=1").json["state"] != "PROGRESS":
            assert time.monotonic() < deadline
        response = client.post(url + "/revoke", json={"terminate": True})
        assert response.status_code == 202
        with app.app_context():
            assert result.get(timeout=10, propagate=False) is not None
            assert result.state == states.REVOKED
    finally:
        worker.stop()
        thread.join(10)

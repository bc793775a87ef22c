"""``GET <prefix>/<token>``: every field, state and status code of the status endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_tasks import Tasks, states
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError, TaskRevokedError
from flask_tasks.records import Record
from flask_tasks.worker import Worker

tasks = Tasks()
FIELDS = {"id", "state", "ready", "successful", "progress", "result", "error", "date_done"}


@tasks.task
def add(x: int, y: int) -> int:
    return x + y


@tasks.task(bind=True)
def halfway(self: Any) -> None:
    self.update_state(state="PROGRESS", meta={"current": 5, "total": 10})


@tasks.task
def explode(text: str) -> None:
    raise KeyError(text)


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"SECRET_KEY": "test", "TASKS_BROKER_URL": "memory://", **config})
    tasks.init_app(app)
    return app


@pytest.fixture
def app() -> Iterator[Flask]:
    app = make_app()
    yield app
    app.extensions["tasks"].close()


def store(app: Flask, status: str, result: Any = None, traceback: str | None = None) -> str:
    """Send a task (so it exists) and overwrite its record; returns its status URL."""
    with app.test_request_context():
        sent = add.delay(1, 2)
        state = app.extensions["tasks"]
        if status != states.PENDING:
            if isinstance(result, BaseException):
                record = Record.failure(
                    result, "secret.module.name", traceback=traceback, state=status
                )
            elif status == states.SUCCESS:
                record = Record.success(result, "secret.module.name", worker="secret-host")
            else:
                record = Record.custom(status, result, "secret.module.name")
            state.write(sent.id, record)
        return tasks.status_url(sent)


def test_pending(app: Flask) -> None:
    response = app.test_client().get(store(app, states.PENDING))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) >= FIELDS
    assert set(body) - FIELDS == {"version"}
    assert body["state"] == "PENDING"
    assert (body["ready"], body["successful"]) == (False, False)
    assert body["progress"] is body["result"] is body["error"] is body["date_done"] is None
    assert isinstance(body["version"], str) and body["version"]


def test_progress_of_a_custom_state(app: Flask) -> None:
    url = store(app, "PROGRESS", {"current": 3, "total": 4, "message": "Step 3"})
    body = app.test_client().get(url).json
    assert body["state"] == "PROGRESS"
    assert body["ready"] is False
    assert body["progress"] == {"current": 3, "total": 4, "message": "Step 3", "percent": 75.0}
    assert body["result"] is None


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"current": 12, "total": 10}, 100.0),
        ({"current": -1, "total": 10}, 0.0),
        ({"current": 1, "total": 0}, None),
        ({"current": "1", "total": 2}, None),
        ({"percent": 42}, 42),
    ],
)
def test_percent_is_derived_only_from_numbers(app: Flask, meta: Any, expected: Any) -> None:
    body = app.test_client().get(store(app, "PROGRESS", meta)).json
    assert body["progress"].get("percent") == expected


def test_non_dict_progress_is_passed_through(app: Flask) -> None:
    assert app.test_client().get(store(app, "DOWNLOADING", "3 of 4")).json["progress"] == "3 of 4"


def test_started_state_reveals_no_worker_details(app: Flask) -> None:
    body = app.test_client().get(store(app, states.STARTED, {"hostname": "w@h", "pid": 1})).json
    assert body["state"] == "STARTED"
    assert body["progress"] is None and body["result"] is None
    assert "w@h" not in str(body)


def test_success(app: Flask) -> None:
    body = app.test_client().get(store(app, states.SUCCESS, {"total": [1, 2]})).json
    assert body["state"] == "SUCCESS"
    assert (body["ready"], body["successful"]) == (True, True)
    assert body["result"] == {"total": [1, 2]}
    assert body["error"] is None
    assert body["date_done"].startswith("20")
    assert "secret.module.name" not in str(body)


def test_failure_is_200_with_error_and_no_traceback(app: Flask) -> None:
    error = ValueError("no rows in the file")
    url = store(app, states.FAILURE, error, traceback="Traceback (most recent call last): ...")
    response = app.test_client().get(url)
    assert response.status_code == 200
    body = response.json
    assert body["state"] == "FAILURE"
    assert (body["ready"], body["successful"]) == (True, False)
    assert body["error"] == {"type": "ValueError", "message": "no rows in the file"}
    assert body["result"] is None
    assert "Traceback" not in response.get_data(as_text=True)


def test_traceback_only_when_configured() -> None:
    app = make_app(TASKS_EXPOSE_TRACEBACK=True)
    error = ValueError("boom")
    body = app.test_client().get(store(app, states.FAILURE, error, traceback="TB here")).json
    assert body["error"] == {"type": "ValueError", "message": "boom", "traceback": "TB here"}


def test_revoked_and_retry(app: Flask) -> None:
    client = app.test_client()
    stopped = TaskRevokedError("revoked")
    revoked = client.get(store(app, states.REVOKED, stopped)).json
    assert (revoked["state"], revoked["ready"], revoked["successful"]) == ("REVOKED", True, False)
    assert revoked["error"] == {"type": "TaskRevokedError", "message": "revoked"}
    retry = client.get(store(app, states.RETRY, OSError("later"))).json
    assert (retry["state"], retry["ready"]) == ("RETRY", False)
    assert retry["error"]["type"] == "OSError"


def test_odd_error_values(app: Flask) -> None:
    client = app.test_client()
    assert client.get(store(app, states.FAILURE, "plain text")).json["error"] == {
        "type": "Error",
        "message": "plain text",
    }
    assert client.get(store(app, states.FAILURE, None)).json["error"]["message"] == ""


def test_unknown_task_is_404(app: Flask) -> None:
    with app.test_request_context():
        url = tasks.status_url("never-sent")
    response = app.test_client().get(url)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert response.headers["Cache-Control"] == "no-store"


def test_forgotten_result_is_404(app: Flask) -> None:
    url = store(app, states.SUCCESS, 3)
    with app.app_context():
        tasks.AsyncResult(app.test_client().get(url).json["id"]).forget()
    assert app.test_client().get(url).status_code == 404


def test_unreadable_record_is_a_failure_not_a_500(app: Flask) -> None:
    url = store(app, states.PENDING)
    state = app.extensions["tasks"]
    task_id = app.test_client().get(url).json["id"]
    state.store.set_result(task_id, b"\x00garbage", 60)
    response = app.test_client().get(url)
    assert response.status_code == 200
    assert response.json["state"] == "FAILURE"


def test_wrong_methods_get_json_405(app: Flask) -> None:
    url = store(app, states.PENDING)
    client = app.test_client()
    for response, allow in [
        (client.post(url), "GET, HEAD"),
        (client.delete(url + "/events"), "GET, HEAD"),
        (client.get(url + "/revoke"), "POST"),
    ]:
        assert response.status_code == 405
        assert response.json["error"] == "method_not_allowed"
        assert response.headers["Allow"] == allow


def test_bad_wait_is_400(app: Flask) -> None:
    url = store(app, states.PENDING)
    for value in ("soon", "-1", "nan"):
        response = app.test_client().get(f"{url}?wait={value}")
        assert response.status_code == 400
        assert response.json["error"] == "bad_request"


def test_javascript_module_is_served(app: Flask) -> None:
    with app.test_client().get("/tasks/static/flask-tasks.js") as response:
        assert response.status_code == 200
        assert response.mimetype in ("text/javascript", "application/javascript")
        text = response.get_data(as_text=True)
    assert "export function watchTask" in text
    assert "export async function revokeTask" in text


def test_url_prefix_and_several_apps() -> None:
    first = make_app()
    second = make_app(TASKS_URL_PREFIX="/jobs/status")
    with second.test_request_context():
        url = tasks.status_url(add.delay(1, 1))
    assert url.startswith("/jobs/status/")
    assert second.test_client().get(url).status_code == 200
    assert first.test_client().get(url).status_code == 404  # not mounted there
    with second.test_client().get("/jobs/status/static/flask-tasks.js") as script:
        assert script.status_code == 200


def test_init_app_twice_on_one_app_is_refused(app: Flask) -> None:
    with pytest.raises(ImproperlyConfigured, match="already initialized"):
        tasks.init_app(app)
    with app.test_request_context():  # the first init_app still serves
        assert app.test_client().get(tasks.status_url(add.delay(1, 1))).status_code == 200


def test_real_worker_outcomes() -> None:
    """Success, progress and failure as a threads worker stores them."""
    app = make_app()
    worker = Worker(app, pool="threads", concurrency=2, loglevel="WARNING")
    with app.test_request_context():
        sent = [add.delay(2, 3), halfway.delay(), explode.delay("missing")]
        urls = [tasks.status_url(result) for result in sent]
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        with app.app_context():
            for result in sent:
                result.get(timeout=10, propagate=False)
        client = app.test_client()
        added, progressed, failed = (client.get(url).json for url in urls)
    finally:
        worker.stop()
        thread.join(10)
        app.extensions["tasks"].close()
    assert (added["state"], added["result"]) == ("SUCCESS", 5)
    assert progressed["state"] == "SUCCESS"  # the task ended after its progress update
    assert failed["state"] == "FAILURE"
    assert failed["error"] == {"type": "KeyError", "message": "'missing'"}


def test_unreachable_store_is_a_json_503(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    url = store(app, states.PENDING)
    backend = app.extensions["tasks"].store

    def unreachable(_task_id: str) -> None:
        raise OperationalError("Cannot reach Redis at redis://localhost:6379/0")

    monkeypatch.setattr(backend, "get_result", unreachable)
    for response in (app.test_client().get(url), app.test_client().get(url + "/events")):
        assert response.status_code == 503
        assert response.json["error"] == "unavailable"
        assert "redis://" not in response.get_data(as_text=True)
        assert response.headers["Retry-After"] == "2"
        assert response.headers["Cache-Control"] == "no-store"

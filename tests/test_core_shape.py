"""What the transport/store/Record/Producer shape promises beyond the old API:
options that used to be dropped, stubs that now raise, errors after the task body,
separate result stores, heartbeats."""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask

from flask_tasks import Task, Tasks, states
from flask_tasks.codec import Codec
from flask_tasks.exceptions import TaskError
from flask_tasks.records import Error, Record
from flask_tasks.testing import drain

tasks = Tasks()
seen: list[tuple[str, object]] = []


@tasks.task(bind=True, max_retries=2, default_retry_delay=0.01)
def moves_on_retry(self):
    seen.append((self.request.queue, self.request.priority))
    if self.request.retries == 0:
        raise self.retry(queue="later", priority=1, headers={"why": "moved"})
    return dict(self.request.headers)


@tasks.task(bind=True)
def retries_with_bad_option(self):
    raise self.retry(routing_key="x")


@tasks.task(bind=True)
def sends_event(self):
    self.send_event("task-progress", current=1)


@tasks.task
def add(x, y):
    return x + y


@tasks.task
def waits_inside():
    return add.delay(1, 1).get(timeout=5)


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@tasks.task
def raises_bad_str():
    raise BadStr()


class FailingHook(Task):
    def on_success(self, retval, task_id, args, kwargs):
        raise ValueError(f"hook failed for {retval}")


@tasks.task(base=FailingHook)
def hooked():
    seen.append(("hooked", None))
    return "body ran"


def make_app(**config):
    app = Flask("core_shape")
    app.config.update({"TASKS_BROKER_URL": "memory://", "SECRET_KEY": "k", **config})
    tasks.init_app(app)
    return app


@pytest.fixture
def app():
    seen.clear()
    app = make_app()
    yield app
    app.extensions["tasks"].close()


def test_retry_passes_queue_priority_and_headers_on(app):
    with app.app_context():
        result = moves_on_retry.delay()
    drain(app)  # first run: retried onto another queue
    assert result.state == states.RETRY
    transport = app.extensions["tasks"].transport
    assert transport.queue_length("default") == 0
    time.sleep(0.02)  # the retry's countdown
    drain(app, queues=["later"])
    assert result.get(timeout=1) == {"why": "moved"}
    assert seen == [("default", 5), ("later", 1)]


def test_retry_with_an_unknown_option_fails_the_task(app):
    with app.app_context():
        result = retries_with_bad_option.delay()
    drain(app)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['routing_key'\]"):
        result.get(timeout=1)


def test_send_event_says_it_is_not_available(app):
    with app.app_context():
        result = sends_event.delay()
    drain(app)
    with pytest.raises(NotImplementedError, match="no event stream"):
        result.get(timeout=1)


def test_get_inside_a_task_is_refused(app):
    with app.app_context():
        result = waits_inside.delay()
    drain(app)
    with pytest.raises(RuntimeError, match="Never call result.get"):
        result.get(timeout=1)


def test_revoke_refuses_a_signal_it_cannot_send(app):
    with app.app_context():
        result = add.delay(1, 2)
        with pytest.raises(ValueError, match="SIGKILL"):
            result.revoke(terminate=True, signal="SIGKILL")
        assert result.state == states.PENDING  # nothing was revoked
        result.revoke(signal="SIGTERM")
        assert result.state == states.REVOKED


def test_an_exception_whose_str_raises_is_stored(app):
    with app.app_context():
        result = raises_bad_str.delay()
    drain(app)
    assert result.state == states.FAILURE
    error = result.result
    assert type(error).__name__ == "BadStr"
    record = app.extensions["tasks"].read(result.id)
    assert "str() failed with RuntimeError" in record.error.message


def test_a_failing_success_hook_fails_the_task_once(app):
    with app.app_context():
        result = hooked.delay()
    drain(app)
    with pytest.raises(ValueError, match="hook failed for body ran"):
        result.get(timeout=1)
    assert seen == [("hooked", None)]  # settled: not delivered again
    assert app.extensions["tasks"].transport.queue_length("default") == 0


def test_results_in_another_store(tmp_path):
    app = make_app(TASKS_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}")
    runtime = app.extensions["tasks"]
    assert runtime.connections.broker is None  # two servers: no joint steps
    with app.app_context():
        results = [add.delay(i, i) for i in range(5)]
        revoked = add.delay(0, 0)
        revoked.revoke()
    assert runtime.transport.get_result(results[0].id) is None  # records live elsewhere
    assert runtime.store.get_result(results[0].id) is not None
    drain(app)
    assert [r.get(timeout=1) for r in results] == [0, 2, 4, 6, 8]
    assert revoked.state == states.REVOKED
    runtime.close()


def test_a_worker_announces_itself_in_the_store(app, threaded_worker):
    threaded_worker(app, concurrency=1, hostname="announcer@test")
    store = app.extensions["tasks"].store
    deadline = time.monotonic() + 5
    while not store.workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    [(name, raw)] = store.workers().items()
    info = json.loads(raw)
    assert name.startswith("announcer@test:")
    assert info["hostname"] == "announcer@test" and info["queues"] == ["default"]


def test_record_round_trip_and_old_format():
    codec = Codec()
    record = Record.success({"a": 1}, "app.t", parent_id="p", children=["c1"], retries=2)
    back = Record.decode(codec, record.encode(codec))
    assert back is not None and back.version
    assert (back.state, back.result, back.parent_id, back.children, back.retries) == (
        states.SUCCESS,
        {"a": 1},
        "p",
        ("c1",),
        2,
    )
    old = codec.encode(
        {
            "status": "FAILURE",
            "result": {"exc_type": "KeyError", "exc_module": "builtins", "exc_message": "'k'"},
            "traceback": "TB",
            "date_done": None,
        }
    )
    failure = Record.decode(codec, old)
    assert failure is not None and failure.error == Error("KeyError", "builtins", "'k'")
    assert isinstance(failure.value, KeyError)


def test_unreadable_record_reads_as_a_failure_saying_why():
    signed = Codec(secret_keys=["one"])
    other = Codec(secret_keys=["two"])
    record = Record.decode(other, Record.pending("t").encode(signed))
    assert record is not None and record.state == states.FAILURE
    assert isinstance(record.value, TaskError)
    assert "cannot be read" in str(record.value)

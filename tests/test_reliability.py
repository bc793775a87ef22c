"""Issue 11 in one process: honest revocation, log lines safe from task data, failures
after the body, undecodable messages, and the smaller refusals (NaN, read-only SQLite,
misspelled broker options)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import pytest
from flask import Flask

from flask_tasks import ImproperlyConfigured, Tasks, chain, states
from flask_tasks.brokers import Envelope
from flask_tasks.codec import Codec
from flask_tasks.exceptions import EncodeError
from flask_tasks.worker.logs import loggable

tasks = Tasks()
started = threading.Event()
release = threading.Event()


@tasks.task(name="rel.slow")
def slow() -> str:
    started.set()
    release.wait(10)
    return "finished"


@tasks.task(name="rel.shout")
def shout(text: str) -> str:
    raise ValueError(text)


@tasks.task(name="rel.echo")
def echo(value: Any) -> Any:
    return value


@tasks.task(name="rel.grow")
def grow(size: int) -> str:
    return "x" * size


@tasks.task(name="rel.huge_error")
def huge_error() -> None:
    raise ValueError("x" * 5_000_000)


def make_app(**config: Any) -> Flask:
    app = Flask("reliability")
    app.config.update(
        TASKS_BROKER_URL="memory://",
        TASKS_ALLOW_REVOKE=True,
        TASKS_ALLOW_RAW_IDS=True,
        SECRET_KEY="reliable",
        **config,
    )
    tasks.init_app(app)
    return app


@pytest.fixture
def app():
    app = make_app()
    yield app
    app.extensions["tasks"].close()


def test_revoking_a_running_task_says_so_and_never_shows_revoked(app, threaded_worker):
    started.clear()
    release.clear()
    threaded_worker(app, pool="threads", concurrency=1)
    with app.test_request_context():
        result = slow.delay()
        url = tasks.status_url(result)
    assert started.wait(10)
    response = app.test_client().post(url + "/revoke", json={})
    assert response.status_code == 202
    body = response.json
    assert body["state"] == states.PENDING and body["revoke"] == "running"
    assert "will not be stopped" in body["message"]
    release.set()
    with app.app_context():
        assert result.get(timeout=10) == "finished"
        assert result.state == states.SUCCESS


def test_revoking_a_waiting_task_still_revokes_it_at_once(app):
    with app.test_request_context():
        result = echo.apply_async((1,), countdown=60)
        url = tasks.status_url(result)
    body = app.test_client().post(url + "/revoke", json={}).json
    assert (body["state"], body["revoke"]) == (states.REVOKED, "revoked")


def test_task_data_cannot_forge_log_lines(app, threaded_worker, caplog):
    threaded_worker(app, pool="solo")
    forged = "boom\n[2024-01-01 00:00:00: INFO/MainProcess] Task rel.shout[x] succeeded\x1b[31m"
    with caplog.at_level(logging.INFO, logger="flask_tasks"), app.app_context():
        shout.delay(forged).get(timeout=10, propagate=False)
        echo.delay("\r\n" + "y" * 100_000).get(timeout=10)
    messages = [record.getMessage() for record in caplog.records]
    for line in messages:
        assert "\x1b" not in line and "\r" not in line
        assert len(line) < 20_000
    failed = next(line for line in messages if "failed in" in line)
    assert "\\x1b[31m" in failed
    assert not any(line.startswith("[2024-01-01") for m in messages for line in m.split("\n"))


def test_loggable_escapes_and_caps() -> None:
    assert loggable("a\nb\rc\x1b[0m\x00\x7f\x9b") == "a\\nb\\rc\\x1b[0m\\x00\\x7f\\x9b"
    assert loggable("x" * 50, 10) == "x" * 10 + "... (40 more characters)"
    assert loggable("line 1\nline\r2", lines=True) == "  line 1\n  line\\r2"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert loggable(Broken()) == "<unprintable Broken: RuntimeError>"


def test_a_huge_exception_message_is_stored_as_a_short_failure(app, threaded_worker):
    threaded_worker(app, pool="solo")
    with app.app_context():
        result = huge_error.delay()
        assert result.get(timeout=20, propagate=False) is not None
        assert result.state == states.FAILURE
        assert len(str(result.result)) < 5000


def test_a_chain_whose_next_step_is_too_big_fails_once(threaded_worker):
    app = make_app(TASKS_MESSAGE_MAX_BYTES=2000)
    try:
        threaded_worker(app, pool="solo")
        with app.app_context():
            chain(grow.s(5000).set(task_id="first-step"), echo.s()).apply_async()
            first = tasks.AsyncResult("first-step")
            assert first.get(timeout=10, propagate=False) is not None
            assert first.state == states.FAILURE
            assert "next step could not be sent" in str(first.result)
            time.sleep(0.5)
            assert first.state == states.FAILURE  # not run again
            assert app.extensions["tasks"].transport.held(["first-step"]) == set()
            assert app.extensions["tasks"].transport.queue_length("default") == 0
    finally:
        app.extensions["tasks"].close()


def test_a_message_that_does_not_verify_fails_its_result(app, threaded_worker):
    forged = Codec(secret_keys=["someone else"]).encode({"id": "forged", "task": "rel.echo"})
    runtime = app.extensions["tasks"]
    runtime.producer.publish_envelopes([Envelope("forged", "default", forged)], {})
    threaded_worker(app, pool="solo")
    with app.app_context():
        result = tasks.AsyncResult("forged")
        assert result.get(timeout=10, propagate=False) is not None
        assert result.state == states.FAILURE
        assert "signature" in str(result.result).lower()


def test_nan_is_refused_at_encode_time(app):
    with app.app_context(), pytest.raises(EncodeError, match="NaN"):
        echo.delay(math.nan)
    with pytest.raises(EncodeError, match="Infinity"):
        Codec().encode({"value": -math.inf})


def test_misspelled_broker_options_fail_at_init_app(redis_url):
    for url in (redis_url, "sqlite:///unused.sqlite3", "memory://"):
        app = Flask("misspelled")
        app.config.update(TASKS_BROKER_URL=url, TASKS_BROKER_OPTIONS={"sokcet_timeout": 1})
        with pytest.raises(ImproperlyConfigured, match="sokcet_timeout"):
            tasks.init_app(app)

"""Publishing when the broker cannot be reached: retry policy, then a clear error."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from redis_server import free_port

from flask_tasks import OperationalError, Tasks

tasks = Tasks()


@tasks.task
def add(x, y):
    return x + y


@pytest.fixture
def app():
    app = Flask("unreachable")
    app.config["TASKS_BROKER_URL"] = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    tasks.init_app(app)
    yield app
    app.extensions["tasks"].close()


def test_unreachable_redis_raises_after_the_retry_policy_with_password_hidden(app):
    policy = {"max_retries": 2, "interval_start": 0.05, "interval_step": 0.05}
    started = time.monotonic()
    with app.app_context(), pytest.raises(OperationalError) as info:
        add.apply_async((1, 2), retry_policy=policy)
    message = str(info.value)
    assert "after 3 attempt(s)" in message
    assert "redis://:***@127.0.0.1" in message and "hunter2" not in message
    assert time.monotonic() - started >= 0.05 + 0.10  # it did wait between attempts


def test_retry_false_fails_at_once(app):
    with app.app_context(), pytest.raises(OperationalError, match="after 1 attempt"):
        add.apply_async((1, 2), retry=False)


def test_publish_recovers_when_the_broker_comes_back(redis_url):
    app = Flask("flaky_broker")
    app.config["TASKS_BROKER_URL"] = redis_url
    tasks.init_app(app)
    state = app.extensions["tasks"]
    real_publish = state.transport.publish_with_records
    failures = [OperationalError("connection refused")] * 2

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real_publish(*args, **kwargs)

    state.transport.publish_with_records = flaky
    with app.app_context():
        result = add.apply_async((1, 2), retry_policy={"interval_step": 0.01})
        assert result.exists()
    state.close()


def test_a_publish_retried_after_an_error_does_not_count_its_ids_as_fresh(redis_url):
    app = Flask("retried")
    app.config.update(TASKS_BROKER_URL=redis_url, TASKS_DEFAULT_QUEUE="retried-publish")
    tasks.init_app(app)
    runtime = app.extensions["tasks"]
    broker = runtime.connections.joint
    real = broker.publish_with_records
    seen = []

    def stored_then_lost(envelopes, records, ttl):
        seen.append([envelope.fresh for envelope in envelopes])
        real(envelopes, records, ttl)
        if len(seen) == 1:  # stored, but the reply never came back
            raise OperationalError("connection lost after the write")

    broker.publish_with_records = stored_then_lost
    try:
        with app.app_context():
            add.apply_async((1, 2), retry_policy={"interval_start": 0})
        assert seen == [[True], [False]]
        # The second attempt replaced the first's message: one message, counted once.
        assert broker.queue_length("retried-publish") == 1
        assert len(broker.reserve(["retried-publish"], 10, 30)) == 1
    finally:
        broker.purge("retried-publish")
        runtime.close()

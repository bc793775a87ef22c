"""TASKS_ALWAYS_EAGER and Task.apply(): local runs through the full machinery."""

from __future__ import annotations

import pytest
from flask import Flask, current_app

from flask_tasks import EagerResult, EncodeError, Tasks, states

tasks = Tasks()
attempts: list[int] = []


class Boom(Exception):
    pass


@tasks.task
def add(x, y):
    return x + y


@tasks.task
def kinds(value):
    return type(value).__name__, value


@tasks.task
def where():
    return current_app.name


@tasks.task
def boom():
    raise Boom("eager boom")


@tasks.task(bind=True, max_retries=2, default_retry_delay=60)
def retried(self):
    attempts.append(self.request.retries)
    if self.request.retries < 2:
        raise self.retry(exc=Boom("again"))
    return "third time"


@tasks.task
def returns_set_of_objects():
    return {object()}


def eager_app(**config):
    app = Flask("eager_app")
    app.config.update(TASKS_ALWAYS_EAGER=True, TASKS_BROKER_URL="memory://", **config)
    tasks.init_app(app)
    return app


@pytest.fixture
def app():
    attempts.clear()
    return eager_app()


def test_delay_runs_inline_in_the_app_context(app):
    result = where.delay()
    assert isinstance(result, EagerResult)
    assert result.get() == "eager_app" and result.successful()


def test_arguments_round_trip_through_the_serializer(app):
    assert kinds.delay((1, 2)).get() == ("tuple", (1, 2))


def test_unserializable_arguments_fail_like_production(app):
    with pytest.raises(EncodeError, match="not JSON serializable"):
        add.delay(object(), 1)


def test_unserializable_result_fails_like_production():
    with eager_app(TASKS_EAGER_PROPAGATES=False).app_context():
        result = returns_set_of_objects.delay()
    assert result.state == states.FAILURE
    assert isinstance(result.result, EncodeError)


def test_exceptions_propagate_by_default(app):
    with pytest.raises(Boom, match="eager boom"):
        boom.delay()


def test_propagation_can_be_turned_off():
    with eager_app(TASKS_EAGER_PROPAGATES=False).app_context():
        result = boom.delay()
    assert result.failed() and isinstance(result.result, Boom)
    assert "eager boom" in result.traceback
    with pytest.raises(Boom):
        result.get()
    assert isinstance(result.get(propagate=False), Boom)


def test_retries_run_at_once_without_waiting(app):
    assert retried.delay().get() == "third time"
    assert attempts == [0, 1, 2]


def test_apply_runs_locally_without_eager_mode():
    app = Flask("apply_app")
    app.config["TASKS_BROKER_URL"] = "memory://"
    tasks.init_app(app)
    with app.app_context():
        result = add.apply((2, 3))
        assert isinstance(result, EagerResult) and result.get() == 5
        failed = boom.apply(throw=False)
        assert failed.state == states.FAILURE
        with pytest.raises(Boom):
            boom.apply(throw=True)
        assert app.extensions["tasks"].transport.queue_length("default") == 0


def test_eager_update_state_does_not_touch_the_store(app):
    @tasks.task(bind=True)
    def progress(self):
        self.update_state(state="PROGRESS", meta={"current": 1})
        return "ok"

    assert progress.delay().get() == "ok"
    assert app.extensions["tasks"].transport.get_result("anything") is None

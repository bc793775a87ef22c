"""The pytest plugin (``flask_tasks.testing``), used the way an app's own tests use it:
an ``app`` fixture (as pytest-flask expects) and the plugin's ``tasks_worker``."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_tasks import Tasks, TimeoutError
from flask_tasks.testing import wait_for_queues

tasks = Tasks()


@tasks.task
def double(value):
    return value * 2


@pytest.fixture
def app():
    app = Flask("plugin_app")
    app.config["TASKS_BROKER_URL"] = "memory://"
    tasks.init_app(app)
    yield app
    app.extensions["tasks"].close()


def test_tasks_worker_runs_the_apps_tasks(app, tasks_worker):
    # pytest-flask pushes a request context for the app fixture: no app_context needed.
    assert double.delay(21).get(timeout=10) == 42
    assert tasks_worker.pool == "threads"


def test_wait_for_queues_returns_once_a_worker_took_everything(app, tasks_worker):
    results = [double.delay(index) for index in range(20)]
    wait_for_queues(app, timeout=10)
    assert app.extensions["tasks"].transport.queue_length("default") == 0
    assert [result.get(timeout=10) for result in results] == [i * 2 for i in range(20)]


def test_wait_for_queues_times_out_with_the_queue_named(app):
    double.delay(1)  # no worker runs
    with pytest.raises(TimeoutError, match=r"queues \['default'\] still hold messages after 0.1 s"):
        wait_for_queues(app, timeout=0.1)


def test_the_plugin_is_registered_as_an_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("flask_tasks")

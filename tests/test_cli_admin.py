"""``flask tasks ...``: inspect, purge, revoke, dead letters."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from flask_tasks import Tasks, states
from flask_tasks.testing import drain

tasks = Tasks()


@tasks.task
def add(x, y):
    return x + y


@pytest.fixture
def app():
    app = Flask("admin_app")
    app.config.update(TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    return app


@pytest.fixture
def run(app):
    runner = app.test_cli_runner()
    return lambda *args, **kwargs: runner.invoke(args=["tasks", *args], **kwargs)


def test_inspect_shows_the_record(app, run):
    with app.app_context():
        result = add.delay(2, 3)
    drain(app)
    outcome = run("inspect", result.id)
    assert outcome.exit_code == 0, outcome.output
    shown = json.loads(outcome.output)
    assert shown["id"] == result.id and shown["state"] == "SUCCESS" and shown["result"] == 5


def test_inspect_unknown_id_fails_clearly(run):
    outcome = run("inspect", "nope")
    assert outcome.exit_code == 1
    assert "No task 'nope' is known" in outcome.output


def test_purge_asks_then_drops(app, run):
    with app.app_context():
        for _ in range(3):
            add.delay(1, 1)
    assert run("purge", "default", input="n\n").exit_code == 1
    assert app.extensions["tasks"].transport.queue_length("default") == 3
    outcome = run("purge", "default", "--force")
    assert "Purged 3 message(s)" in outcome.output
    assert app.extensions["tasks"].transport.queue_length("default") == 0


def test_revoke(app, run):
    with app.app_context():
        result = add.delay(1, 1)
    assert "Revoked 1 task(s)" in run("revoke", result.id).output
    drain(app)
    assert result.state == states.REVOKED


def test_failed_and_retry(app, run):
    with app.app_context():
        tasks.send_task("admin.unknown", args=(1,))
    assert "No dead letters." in run("failed").output
    drain(app)
    listing = run("failed").output
    assert "'admin.unknown' is not registered" in listing
    [letter] = app.extensions["tasks"].transport.dead_letters()
    assert run("retry", letter.id).output.startswith("Requeued 1 message(s)")
    assert app.extensions["tasks"].transport.queue_length("default") == 1
    assert app.extensions["tasks"].transport.dead_letters() == []
    assert "No dead letters." in run("failed").output


def test_retry_needs_ids_or_all(run):
    outcome = run("retry")
    assert outcome.exit_code == 2 and "give dead-letter ids, or --all" in outcome.output
    missing = run("retry", "ghost")
    assert missing.exit_code == 1 and "No dead letter with id: ghost" in missing.output


def test_retry_all(app, run):
    with app.app_context():
        tasks.send_task("admin.unknown")
        tasks.send_task("admin.unknown")
    drain(app)
    assert run("retry", "--all").output.startswith("Requeued 2 message(s)")

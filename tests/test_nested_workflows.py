"""Workflows that nest, as in Celery, on the Redis and SQLite brokers (and memory)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_tasks import GroupResult, Tasks, chain, chord, group
from flask_tasks.worker.runner import TaskRunner

tasks = Tasks()
body_runs: list[object] = []
lock = threading.Lock()


@tasks.task
def add(x, y):
    return x + y


@tasks.task
def total(values):
    return sum(values)


@tasks.task
def collect(values):
    with lock:
        body_runs.append(values)
    return len(values)


@tasks.task
def fail(*_args):
    raise ValueError("step failed")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # flushed around the test
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    else:
        url = "memory://"
    app = Flask(f"nested_{request.param}")
    app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="nested")
    tasks.init_app(app)
    body_runs.clear()
    yield app
    app.extensions["tasks"].close()


@pytest.fixture
def worker(app, threaded_worker):
    return threaded_worker(app, concurrency=4)


MATRIX = {
    "group | sig is a chord": (lambda: group(add.s(1, 1), add.s(2, 2)) | total.s(), 6),
    "sig | group": (lambda: add.s(1, 1) | group(add.s(10), add.s(20)), [12, 22]),
    "sig | group | sig": (lambda: add.s(1, 1) | group(add.s(10), add.s(20)) | total.s(), 34),
    "sig | chord | sig": (
        lambda: add.s(1, 1) | chord([add.s(10), add.s(20)], total.s()) | add.s(100),
        134,
    ),
    "group of chains": (lambda: group(chain(add.s(1, 1), add.s(1)), add.s(5, 5)), [3, 10]),
    "chord header of a chain and a group": (
        lambda: chord([chain(add.s(1, 1), add.s(1)), group(add.s(2, 2), add.s(3, 3))], total.s()),
        13,
    ),
    "group holding a chord": (
        lambda: group(add.s(1, 1), chord([add.s(1, 1), add.s(2, 2)], total.s())),
        [2, 6],
    ),
    "chain with a group in the middle": (
        lambda: chain(add.s(1, 1), group(add.s(1), add.s(2)), total.s(), add.s(1)),
        8,
    ),
    "chord whose body is a group": (
        lambda: chord([add.s(1, 1), add.s(2, 2)], group(total.s(), total.s())),
        [6, 6],
    ),
    "empty chord header": (lambda: chord([], total.s()), 0),
    "chain of chains": (lambda: chain(chain(add.s(1, 1), add.s(1)), chain(add.s(1))), 4),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_nested_workflow(app, worker, name):
    build, expected = MATRIX[name]
    with app.app_context():
        result = build().apply_async()
        assert result.get(timeout=20) == expected
        if isinstance(expected, list):
            assert isinstance(result, GroupResult)


def test_a_failed_chain_step_fails_what_the_caller_holds(app, worker):
    with app.app_context():
        result = (add.s(1, 1) | fail.s() | add.s(1) | add.s(2)).apply_async()
        with pytest.raises(Exception, match="earlier chain step .*fail.* failed"):
            result.get(timeout=20)


def test_a_chord_member_chain_failing_early_fails_the_body(app, worker):
    with app.app_context():
        result = chord([chain(add.s(1, 1), fail.s(), add.s(1)), add.s(2, 2)], total.s())()
        with pytest.raises(Exception, match="chord member .*fail.* failed"):
            result.get(timeout=20)


def test_chord_body_runs_once_when_every_header_task_is_delivered_twice(app):
    """At-least-once: each header task runs twice (as after a lost ack); the body must
    still run exactly once, with all fifty results."""
    with app.app_context():
        result = chord(add.s(i, i) for i in range(50))(collect.s())
    runtime = app.extensions["tasks"]
    runner = TaskRunner(runtime, "redelivery@test")
    processed = 0
    while processed < 50:
        batch = runtime.transport.reserve(["default"], 10, 60)
        assert batch, "the header tasks should all be queued"
        for delivery in batch:
            runner.process(delivery)
            runner.process(delivery)  # delivered again: runs and counts a second time
            processed += 1
    for delivery in runtime.transport.reserve(["default"], 10, 60):
        runner.process(delivery)  # the body
    with app.app_context():
        assert result.get(timeout=5) == 50
    assert body_runs == [[i * 2 for i in range(50)]]


def test_eager_nested_workflows():
    app = Flask("nested_eager")
    app.config.update(TASKS_ALWAYS_EAGER=True, TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    with app.app_context():
        for name, (build, expected) in MATRIX.items():
            assert build().apply_async().get() == expected, name


def test_a_composition_of_non_signatures_is_refused_when_built():
    with pytest.raises(TypeError, match=r"chain\(\) takes signatures"):
        chain(add.s(1, 1), print)
    with pytest.raises(TypeError, match=r"group\(\) takes signatures"):
        group(add.s(1, 1), 3)

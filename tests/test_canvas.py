"""Signatures, chains, groups and chords through a real threaded worker."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_tasks import GroupResult, Tasks, chain, chord, group, signals, signature
from flask_tasks.canvas import Signature

tasks = Tasks()
errors: list[str] = []


@tasks.task
def add(x, y):
    return x + y


@tasks.task
def total(values):
    return sum(values)


@tasks.task
def fail(*_args):
    raise ValueError("member failed")


@tasks.task
def on_error(task_id):
    errors.append(task_id)


@pytest.fixture
def app():
    app = Flask("canvas_app")
    app.config.update(TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    errors.clear()
    return app


@pytest.fixture
def worker(app, threaded_worker):
    return threaded_worker(app, concurrency=4)


def test_the_spec_chain(worker):
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=10) == 16


def test_chain_keeps_parent_links(worker):
    result = chain(add.s(1, 1), add.s(1)).apply_async()
    assert result.get(timeout=10) == 3
    assert result.parent is not None and result.parent.get(timeout=10) == 2


def test_immutable_signature_ignores_the_parent_result(worker):
    assert (add.s(1, 1) | add.si(10, 10))().get(timeout=10) == 20


def test_group_results_in_order(worker):
    result = group(add.s(i, i) for i in range(10))()
    assert isinstance(result, GroupResult) and len(result) == 10
    assert result.get(timeout=10) == [i * 2 for i in range(10)]
    assert result.ready() and result.successful() and result.completed_count() == 10


def test_group_is_published_in_one_call(app):
    broker = app.extensions["tasks"].transport
    calls = []
    original = broker.publish_with_records
    broker.publish_with_records = lambda envelopes, *rest: (
        calls.append(len(envelopes)),
        original(envelopes, *rest),
    )
    with app.app_context():
        group(add.s(i, 1) for i in range(100)).apply_async()
    assert calls == [100]


def test_a_group_sends_the_publish_signals_for_every_member(app):
    """The bulk path keeps its messages only when the publish signals have receivers:
    then each member is announced, with its own id, before and after the publish."""
    seen: list[tuple[str, str]] = []

    def before(sender, body, **_kwargs):
        seen.append(("before", body["id"]))

    def after(sender, body, **_kwargs):
        seen.append(("after", body["id"]))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        with app.app_context():
            result = group(add.s(i, 1) for i in range(5)).apply_async()
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    ids = [member.id for member in result.results]
    assert seen == [("before", i) for i in ids] + [("after", i) for i in ids]


def test_chord(worker):
    assert chord(add.s(i, i) for i in range(5))(total.s()).get(timeout=10) == 20


def test_chord_member_failure_fails_the_body(worker):
    result = chord([add.s(1, 1), fail.s()])(total.s())
    with pytest.raises(Exception, match="chord member .*fail.* failed"):
        result.get(timeout=10)


def test_link_and_link_error(app):
    from flask_tasks.testing import drain

    with app.app_context():
        result = add.apply_async((1, 1), link=add.s(100))
        failing = fail.apply_async(link_error=on_error.s())
    drain(app)
    assert result.get(timeout=1) == 2
    [child] = result.children
    assert child.get(timeout=1) == 102
    with pytest.raises(ValueError):
        failing.get(timeout=1)
    assert errors == [failing.id]


def test_signature_options_and_dict_round_trip(app):
    sig = add.s(1).set(queue="math", countdown=5)
    assert sig.options == {"queue": "math", "countdown": 5}
    again = signature(sig.to_dict())
    assert again == sig and repr(sig) == "test_canvas.add(1)"
    assert isinstance(add.signature((1, 2), immutable=True), Signature)


def test_signature_call_is_inline(app):
    with app.app_context():
        assert add.s(1)(2) == 3


def test_chain_needs_a_task():
    with pytest.raises(ValueError, match="at least one signature"):
        chain()


def test_chord_needs_a_body(app):
    with app.app_context(), pytest.raises(ValueError, match="needs a body"):
        chord([add.s(1, 1)]).apply_async()


def test_eager_workflows():
    app = Flask("eager_canvas")
    app.config.update(TASKS_ALWAYS_EAGER=True, TASKS_BROKER_URL="memory://")
    tasks.init_app(app)
    with app.app_context():
        assert (add.s(2, 2) | add.s(4) | add.s(8))().get() == 16
        assert group(add.s(i, i) for i in range(3))().get() == [0, 2, 4]
        assert chord(add.s(i, i) for i in range(3))(total.s()).get() == 6

"""The task API through a real (threaded) worker on the memory broker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask, current_app

from flask_tasks import (
    EncodeError,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    Task,
    TaskRevokedError,
    Tasks,
    TimeoutError,
    signals,
    states,
)
from flask_tasks.testing import drain
from flask_tasks.worker.runner import TaskRunner

tasks = Tasks()
runs: list[tuple[str, object]] = []


class AppError(Exception):
    pass


@tasks.task
def add(x, y):
    return x + y


@tasks.task(name="custom.name")
def named():
    return current_app.name, current_app.config["GREETING"]


@tasks.task
def fail(message="boom"):
    raise AppError(message)


@tasks.task(bind=True, max_retries=3, default_retry_delay=0.01)
def flaky(self, succeed_on):
    runs.append(("flaky", (self.request.id, self.request.retries)))
    if self.request.retries < succeed_on:
        raise self.retry(exc=AppError(f"attempt {self.request.retries}"))
    return self.request.retries


@tasks.task(bind=True, max_retries=1, default_retry_delay=0.01)
def retry_without_exc(self):
    raise self.retry()


@tasks.task(autoretry_for=(AppError,), max_retries=2, retry_kwargs={"countdown": 0.01})
def auto(counter_key):
    runs.append((counter_key, None))
    raise AppError("always")


@tasks.task(bind=True)
def introspect(self, *args, **kwargs):
    request = self.request
    return {
        "id": request.id,
        "task": request.task,
        "args": list(request.args),
        "kwargs": dict(request.kwargs),
        "retries": request.retries,
        "queue": request.queue,
        "priority": request.priority,
        "headers": request.headers,
        "parent_id": request.parent_id,
        "root_id": request.root_id,
        "hostname": request.hostname,
        "eager": request.is_eager,
    }


@tasks.task(bind=True)
def parent_of(self):
    return add.delay(1, 1).id


@tasks.task(bind=True)
def progress(self, steps):
    for step in range(steps):
        self.update_state(state="PROGRESS", meta={"current": step + 1, "total": steps})
    return "done"


@tasks.task
def record(tag):
    runs.append((tag, time.time()))
    return tag


@tasks.task
def slow(seconds):
    time.sleep(seconds)
    return seconds


@tasks.task
def returns_object():
    return object()


@tasks.task
def echo(value):
    return value


class Hooked(Task):
    calls: list[str] = []

    def on_success(self, retval, task_id, args, kwargs):
        self.calls.append(f"success:{retval}")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(f"failure:{type(exc).__name__}:{'Traceback' in einfo.traceback}")

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(f"retry:{exc}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.calls.append(f"after:{status}")


@tasks.task(base=Hooked, bind=True, max_retries=1, default_retry_delay=0.01)
def hooked(self, mode):
    if mode == "fail":
        raise AppError("bad")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=AppError("again"))
    return mode


@pytest.fixture
def app():
    app = Flask("tasks_app")
    app.config.update(TASKS_BROKER_URL="memory://", SECRET_KEY="test", GREETING="hello")
    tasks.init_app(app)
    runs.clear()
    Hooked.calls.clear()
    yield app
    app.extensions["tasks"].close()


@pytest.fixture
def worker(app, threaded_worker):
    return threaded_worker(app, concurrency=4)


def test_delay_and_get(worker):
    assert add.delay(4, 4).get(timeout=10) == 8


def test_tasks_run_inside_the_app_context(worker):
    assert named.delay().get(timeout=10) == ("tasks_app", "hello")  # tuples round-trip


def test_inline_call_is_a_plain_call():
    assert add(2, 3) == 5
    assert add.__name__ == "add" and add.name == "test_tasks.add"


def test_failure_keeps_type_message_and_traceback(worker):
    result = fail.delay("kaput")
    with pytest.raises(AppError, match="kaput"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert result.failed() and result.ready() and not result.successful()
    assert "raise AppError(message)" in result.traceback
    assert isinstance(result.result, AppError)
    assert isinstance(result.get(propagate=False), AppError)
    assert result.date_done.tzinfo is not None


def test_unimportable_exception_becomes_a_proxy_with_the_same_name(app):
    from flask_tasks.exceptions import TaskError
    from flask_tasks.records import Error

    error = Error("PaymentDeclined", "shop.never_imported", "no").exception()
    assert type(error).__name__ == "PaymentDeclined" and str(error) == "no"
    assert isinstance(error, TaskError) and type(error).__module__ == "shop.never_imported"


def test_retry_keeps_the_task_id(worker):
    result = flaky.delay(2)
    assert result.get(timeout=10) == 2
    ids = {task_id for name, (task_id, _) in runs if name == "flaky"}
    assert ids == {result.id}
    assert [retries for _, (_, retries) in runs] == [0, 1, 2]


def test_past_max_retries_the_original_error_fails_the_task(worker):
    with pytest.raises(AppError, match="attempt 3"):
        flaky.delay(10).get(timeout=10)


def test_retry_without_exception_ends_in_max_retries_exceeded(worker):
    with pytest.raises(MaxRetriesExceededError, match="max_retries=1"):
        retry_without_exc.delay().get(timeout=10)


def test_autoretry_for(worker):
    with pytest.raises(AppError, match="always"):
        auto.delay("auto-1").get(timeout=10)
    assert len([run for run in runs if run[0] == "auto-1"]) == 3


def test_exponential_backoff_bounds():
    from flask_tasks.execution import exponential_backoff

    assert [exponential_backoff(1, n, 600, False) for n in range(4)] == [1, 2, 4, 8]
    assert exponential_backoff(1, 20, 600, False) == 600
    assert all(0 <= exponential_backoff(2, 3, 600, True) <= 16 for _ in range(50))


def test_request_fields(worker):
    result = introspect.apply_async(
        (1,), {"k": 2}, queue="default", priority=3, headers={"trace": "abc"}
    )
    info = result.get(timeout=10)
    assert info["id"] == result.id and info["task"] == "test_tasks.introspect"
    assert info["args"] == [1] and info["kwargs"] == {"k": 2}
    assert info["priority"] == 3 and info["queue"] == "default"
    assert info["headers"] == {"trace": "abc"}
    assert info["root_id"] == result.id and info["parent_id"] is None
    assert info["hostname"].startswith("worker@") and info["eager"] is False


def test_subtasks_know_their_parent(worker, app):
    parent = parent_of.delay()
    child = tasks.AsyncResult(parent.get(timeout=10))
    assert child.get(timeout=10) == 2
    assert child.parent.id == parent.id


def test_progress_is_visible_through_update_state(app):
    result = progress.delay(3)
    assert result.state == states.PENDING
    runner = TaskRunner(app.extensions["tasks"], "test")
    seen = []
    original = app.extensions["tasks"].store.set_result

    def spy(task_id, record, ttl):
        original(task_id, record, ttl)
        seen.append((result.state, result.info))

    app.extensions["tasks"].store.set_result = spy
    [delivery] = app.extensions["tasks"].transport.reserve(["default"], 1, 30)
    runner.process(delivery)
    assert seen == [
        ("PROGRESS", {"current": 1, "total": 3}),
        ("PROGRESS", {"current": 2, "total": 3}),
        ("PROGRESS", {"current": 3, "total": 3}),
    ]
    assert result.get(timeout=1) == "done"


def test_hooks_are_called(worker):
    assert hooked.delay("ok").get(timeout=10) == "ok"
    with pytest.raises(AppError):
        hooked.delay("fail").get(timeout=10)
    assert hooked.delay("retry").get(timeout=10) == "retry"
    assert Hooked.calls == [
        "success:ok",
        "after:SUCCESS",
        "failure:AppError:True",
        "after:FAILURE",
        "retry:again",
        "after:RETRY",
        "success:retry",
        "after:SUCCESS",
    ]


def test_signals_are_sent(worker):
    seen: list[str] = []

    def listener(name):
        return lambda sender, **kwargs: seen.append(name)

    handlers = {
        name: listener(name)
        for name in (
            "before_task_publish",
            "after_task_publish",
            "task_received",
            "task_prerun",
            "task_postrun",
            "task_success",
            "task_failure",
        )
    }
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler)
    try:
        add.delay(1, 2).get(timeout=10)
        with pytest.raises(AppError):
            fail.delay().get(timeout=10)
    finally:
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler)
    assert seen.count("task_success") == 1 and seen.count("task_failure") == 1
    assert seen.count("before_task_publish") == 2 and seen.count("task_received") == 2
    assert seen.index("task_prerun") < seen.index("task_success") < seen.index("task_postrun")


def test_countdown_is_never_early(worker):
    sent = time.time()
    result = record.apply_async(("late",), countdown=0.4)
    assert result.get(timeout=10) == "late"
    [(_, ran_at)] = runs
    assert ran_at >= sent + 0.4


def test_eta_accepts_aware_and_naive_utc(app):
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    aware = record.apply_async(("aware",), eta=later)
    naive = record.apply_async(("naive",), eta=later.replace(tzinfo=None))
    drain(app)
    assert runs == [] and aware.state == naive.state == states.PENDING


def test_expired_task_is_revoked_without_running(app):
    result = record.apply_async(
        ("never",), expires=datetime.now(timezone.utc) - timedelta(seconds=1)
    )
    drain(app)
    assert runs == []
    assert result.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_expires_in_seconds_in_the_future_runs(app):
    result = record.apply_async(("soon",), expires=60)
    drain(app)
    assert result.get(timeout=1) == "soon"


def test_revoke_before_start(app):
    result = record.delay("revoked")
    result.revoke()
    assert result.state == states.REVOKED
    drain(app)
    assert runs == []
    assert result.state == states.REVOKED


def test_priorities_are_honoured(app):
    for priority in (9, 0, 5, 0, 9):
        record.apply_async((f"p{priority}",), priority=priority)
    drain(app)
    assert [tag for tag, _ in runs] == ["p0", "p0", "p5", "p9", "p9"]


def test_bad_priority_is_refused(app):
    with pytest.raises(ValueError, match="priority of test_tasks.add must be an int from 0"):
        add.apply_async((1, 2), priority=12)


def test_publishing_records_pending_so_queued_differs_from_unknown(app):
    result = add.delay(1, 1)
    assert result.exists() and result.state == states.PENDING and not result.ready()
    stranger = tasks.AsyncResult("no-such-id")
    assert not stranger.exists() and stranger.state == states.PENDING


def test_ignore_result_stores_nothing(app):
    result = add.apply_async((1, 1), ignore_result=True)
    assert not result.exists()
    drain(app)
    assert not result.exists()


def test_forget(app):
    result = add.delay(1, 1)
    drain(app)
    assert result.get(timeout=1) == 2
    result.forget()
    assert not result.exists() and result.state == states.PENDING


def test_get_times_out(app):
    with pytest.raises(TimeoutError, match="did not finish within 0.2 s"):
        add.delay(1, 1).get(timeout=0.2)


def test_get_waits_without_busy_polling(app, worker):
    backend = app.extensions["tasks"].store
    calls = []
    original = backend.watch_result

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    backend.watch_result = counting
    assert slow.delay(0.5).get(timeout=10) == 0.5
    assert len(calls) <= 4  # woken by writes (received/done), not by a polling interval


def test_unserializable_argument_raises_before_publishing(app):
    state = app.extensions["tasks"]
    with pytest.raises(EncodeError, match="Object of type object is not JSON serializable"):
        add.delay(object(), 1)
    assert state.transport.queue_length("default") == 0


def test_too_large_message_raises_before_publishing(app):
    app.extensions["tasks"].codec.max_bytes = 1000
    with pytest.raises(EncodeError, match="TASKS_MESSAGE_MAX_BYTES"):
        echo.delay("x" * 5000)
    assert app.extensions["tasks"].transport.queue_length("default") == 0


def test_unserializable_return_value_fails_the_task(app):
    result = returns_object.delay()
    drain(app)
    with pytest.raises(EncodeError, match="not JSON serializable"):
        result.get(timeout=1)


def test_send_task_by_name(worker):
    assert tasks.send_task("test_tasks.add", args=(2, 2)).get(timeout=10) == 4


def test_unknown_task_option_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"Unknown task option\(s\) \['retries'\]"):
        tasks.task(retries=3)(lambda: None)


def test_bad_rate_limit_is_refused():
    with pytest.raises(ImproperlyConfigured, match="rate_limit '10 per second'"):
        tasks.task(rate_limit="10 per second")(lambda: None)


def test_routes_and_annotations():
    app = Flask("routed")
    app.config.update(
        TASKS_BROKER_URL="memory://",
        TASKS_ROUTES={"test_tasks.rec*": {"queue": "slow", "priority": 2}, "custom.*": "named"},
        TASKS_ANNOTATIONS={"test_tasks.add": {"queue": "math"}},
    )
    tasks.init_app(app)
    state = app.extensions["tasks"]
    with app.app_context():
        record.delay("x")
        named.delay()
        add.delay(1, 1)
        add.apply_async((1, 1), queue="explicit")
    assert state.transport.queue_length("slow") == 1
    assert state.transport.queue_length("named") == 1
    assert state.transport.queue_length("math") == 1
    assert state.transport.queue_length("explicit") == 1
    [delivery] = state.transport.reserve(["slow"], 1, 10)
    assert delivery.priority == 2


def test_unknown_task_name_is_dead_lettered_with_the_registered_names(app):
    tasks.send_task("test_tasks.ad", args=(1, 2))
    drain(app)
    [letter] = app.extensions["tasks"].transport.dead_letters()
    assert "'test_tasks.ad' is not registered" in letter.reason
    assert "Did you mean: test_tasks.add" in letter.reason
    assert "@tasks.task" in letter.reason


def test_tampered_message_is_dead_lettered_and_the_worker_goes_on(app):
    from flask_tasks.brokers import Envelope

    state = app.extensions["tasks"]
    good = add.delay(1, 2)
    state.transport.publish([Envelope("bad-1", "default", b"not a message at all")])
    forged = state.codec.encode({"id": "bad-2", "task": "test_tasks.add", "args": [1, 1]})
    state.transport.publish([Envelope("bad-2", "default", forged.replace(b"[1,1]", b"[9,9]"))])
    drain(app)
    reasons = {letter.id: letter.reason for letter in state.transport.dead_letters()}
    assert "bad header" in reasons["bad-1"]
    assert "signature does not match" in reasons["bad-2"]
    assert good.get(timeout=1) == 3


def test_drain_times_out_on_endless_work(app):
    @tasks.task(bind=True, max_retries=None, default_retry_delay=0)
    def forever(self):
        raise self.retry()

    forever.delay()
    with pytest.raises(TimeoutError, match="did not drain"):
        drain(app, timeout=0.3)


@tasks.task(bind=True, acks_late=False, max_retries=2, default_retry_delay=0)
def early_ack_retry(self):
    runs.append(("early", self.request.retries))
    if self.request.retries < 2:
        raise self.retry()
    return "ok"


def test_retry_of_an_early_acked_task_is_published_again(app):
    result = early_ack_retry.delay()
    drain(app)
    assert result.get(timeout=1) == "ok"
    assert [retries for name, retries in runs if name == "early"] == [0, 1, 2]


def test_unknown_task_fails_its_result_so_get_does_not_hang(app):
    from flask_tasks import NotRegistered

    result = tasks.send_task("test_tasks.nope")
    drain(app)
    with pytest.raises(NotRegistered, match="'test_tasks.nope' is not registered"):
        result.get(timeout=1)
    assert result.state == states.FAILURE

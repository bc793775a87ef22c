"""End to end: real ``flask worker`` processes on a real broker.

Each test starts ``python -m flask --app proc_app worker ...`` (see ``tests/apps``) and
talks to it through the same app built in the test process. The core flows share one
worker per broker (Redis and SQLite); tests about start-up options, shutdown and crashes
start workers of their own. Every wait is bounded; no test sleeps for its condition.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from process_flows import priorities_honoured
from process_helpers import (
    BROKERS,
    WorkerProcess,
    WorkerProcesses,
    WorkerSetup,
    broker_url,
    proc_app,
    wait_until,
    worker_processes,
)
from redis_server import RestartableRedis

from flask_tasks import chord, group, states
from flask_tasks.brokers import Envelope
from flask_tasks.exceptions import TaskRevokedError, TimeLimitExceeded

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

RESULT_WAIT = 10.0


# -- fixtures ------------------------------------------------------------------------------


# ``setup``, ``workers`` and ``app``: process_helpers (a plugin, see conftest.py).


class Shared:
    """One worker (default pool: prefork, two children) serving a module's core flows."""

    def __init__(self, setup: WorkerSetup, worker: WorkerProcess) -> None:
        self.setup = setup
        self.worker = worker


@pytest.fixture(scope="module", params=BROKERS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    directory = tmp_path_factory.mktemp(f"shared-{request.param}")
    url = broker_url(request.param, lambda: request.getfixturevalue("redis_url"), directory)
    records = directory / "records"
    records.mkdir()
    worker_setup = WorkerSetup(url, records)
    with worker_processes(worker_setup, directory) as started:
        worker = started.start("-c", "2", "-n", "shared@test")
        yield Shared(worker_setup, worker)
    worker_setup.close()


@pytest.fixture
def shared_app(shared: Shared) -> Iterator[Flask]:
    test_app = shared.setup.app()
    with test_app.app_context():
        yield test_app
    assert shared.worker.returncode() is None, shared.worker.describe()


def state_of(app: Flask) -> Any:
    return app.extensions["tasks"]


def dead_letter(app: Flask, message_id: str) -> Any:
    """The dead letter of ``message_id`` once it exists (bounded wait)."""

    def find() -> Any:
        for letter in state_of(app).transport.dead_letters(1000):
            if letter.id == message_id:
                return letter
        return None

    return wait_until(find, what=f"dead letter {message_id}")


def runs(setup: WorkerSetup, log: str, task_id: str | None = None) -> list[dict[str, Any]]:
    return [line for line in setup.records(log) if task_id is None or line.get("id") == task_id]


# -- the core flows, on every broker -----------------------------------------------------


def test_tutorial_add(shared: Shared, shared_app: Flask) -> None:
    result = proc_app.add.delay(4, 4)
    assert result.get(timeout=RESULT_WAIT) == 8
    assert result.state == states.SUCCESS
    output = shared.worker.wait_for(rf"proc\.add\[{result.id}\] succeeded")
    assert f"Task proc.add[{result.id}] received" in output


def test_workflows(shared_app: Flask) -> None:
    add, total = proc_app.add, proc_app.total
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=RESULT_WAIT) == 16
    doubled = group(add.s(index, index) for index in range(4))()
    assert doubled.get(timeout=RESULT_WAIT) == [0, 2, 4, 6]
    # Members finish at about the same time in two processes: the chord must still see
    # every result (its counter once completed before a member's result was stored).
    header = [add.s(index, 1) for index in range(8)]
    assert chord(header)(total.s()).get(timeout=RESULT_WAIT) == 36


def test_log_lines_carry_duration(shared: Shared, shared_app: Flask) -> None:
    good = proc_app.add.delay(1, 2)
    bad = proc_app.fail.delay("logged")
    assert good.get(timeout=RESULT_WAIT) == 3
    bad.get(timeout=RESULT_WAIT, propagate=False)
    output = shared.worker.wait_for(rf"proc\.fail\[{bad.id}\] failed in")
    assert f"Task proc.add[{good.id}] received" in output
    assert f"Task proc.fail[{bad.id}] received" in output
    wait = shared.worker.wait_for
    wait(rf"INFO/\S+\] Task proc\.add\[{good.id}\] succeeded in \d+\.\d+s: 3")
    wait(rf"ERROR/\S+\] Task proc\.fail\[{bad.id}\] failed in \d+\.\d+s: ValueError\('logged'\)")


def test_failure_keeps_type_and_traceback(shared_app: Flask) -> None:
    result = proc_app.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=RESULT_WAIT)
    assert result.state == states.FAILURE
    assert result.failed()
    assert isinstance(result.result, ValueError)
    traceback = result.traceback
    assert traceback is not None
    assert "Traceback (most recent call last)" in traceback
    assert "proc_app.py" in traceback and "in fail" in traceback
    assert traceback.rstrip().endswith("ValueError: boom")


def test_retry_keeps_the_task_id(shared: Shared, shared_app: Flask) -> None:
    result = proc_app.flaky.delay(2)
    assert result.get(timeout=RESULT_WAIT) == {"id": result.id, "retries": 2}
    seen = runs(shared.setup, "flaky", result.id)
    assert [line["retries"] for line in seen] == [0, 1, 2]
    assert result.retries == 2


def test_retry_of_an_early_acked_task(shared_app: Flask) -> None:
    result = proc_app.flaky_early_ack.delay(2)
    assert result.get(timeout=RESULT_WAIT) == 2


def test_countdown_and_eta_never_run_early(shared: Shared, shared_app: Flask) -> None:
    label = uuid.uuid4().hex
    sent_at = time.time()
    by_countdown = proc_app.record_run.apply_async((f"{label}-countdown", label), countdown=0.8)
    eta = datetime.now(timezone.utc) + timedelta(seconds=0.6)
    by_eta = proc_app.record_run.apply_async((f"{label}-eta", label), eta=eta)
    assert by_countdown.get(timeout=RESULT_WAIT) == f"{label}-countdown"
    assert by_eta.get(timeout=RESULT_WAIT) == f"{label}-eta"
    started = {line["label"]: line["time"] for line in shared.setup.records(label)}
    assert len(shared.setup.records(label)) == 2  # each ran once
    assert started[f"{label}-countdown"] >= sent_at + 0.8
    assert started[f"{label}-eta"] >= eta.timestamp()


def test_expired_task_is_revoked_without_running(shared: Shared, shared_app: Flask) -> None:
    label = uuid.uuid4().hex
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    already = proc_app.record_run.apply_async(("already", label), expires=past)
    by_due_time = proc_app.record_run.apply_async(("late", label), countdown=0.4, expires=0.1)
    for result in (already, by_due_time):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=RESULT_WAIT)
        assert result.state == states.REVOKED
    assert shared.setup.records(label) == []
    shared.worker.wait_for(rf"proc\.record_run\[{already.id}\] expired before it started")


def test_every_task_body_runs_in_the_app_context(shared_app: Flask) -> None:
    seen = proc_app.app_context.delay().get(timeout=RESULT_WAIT)
    assert seen["app"] == proc_app.APP_NAME
    assert seen["greeting"] == "hello from the app config"
    assert seen["hostname"] == "shared@test"
    assert seen["pid"] != os.getpid()


def test_malformed_messages_are_dead_lettered(shared: Shared, shared_app: Flask) -> None:
    broker = state_of(shared_app).transport
    garbage_id, stranger_id = str(uuid.uuid4()), str(uuid.uuid4())
    not_a_task = state_of(shared_app).codec.encode({"hello": "world"})
    broker.publish([Envelope(garbage_id, "default", b"\x00\xffnot a message")])
    broker.publish([Envelope(stranger_id, "default", not_a_task)])
    garbage, stranger = dead_letter(shared_app, garbage_id), dead_letter(shared_app, stranger_id)
    assert "DecodeError" in garbage.reason and "bad header" in garbage.reason
    assert garbage.body == b"\x00\xffnot a message"
    assert "DecodeError" in stranger.reason and "task" in stranger.reason
    # The worker goes on with the next task.
    assert proc_app.add.delay(20, 22).get(timeout=RESULT_WAIT) == 42
    shared.worker.wait_for(rf"Message {garbage_id} dead-lettered: DecodeError")


def test_unknown_task_is_dead_lettered_with_help(shared: Shared, shared_app: Flask) -> None:
    tasks = proc_app.tasks
    unknown = tasks.send_task("no.such")
    close = tasks.send_task("proc.ad", args=(1, 2))
    reason = dead_letter(shared_app, unknown.id).reason
    assert reason.startswith("NotRegistered: Task 'no.such' is not registered.")
    assert "proc.add" in reason and "proc.sleep_then_return" in reason
    assert "@tasks.task" in reason
    assert "Did you mean: proc.add" in dead_letter(shared_app, close.id).reason
    assert proc_app.add.delay(2, 2).get(timeout=RESULT_WAIT) == 4
    shared.worker.wait_for(rf"Message {unknown.id} dead-lettered: NotRegistered")


def test_revoked_before_it_starts_never_runs(shared: Shared, shared_app: Flask) -> None:
    label = uuid.uuid4().hex
    result = proc_app.record_run.apply_async(("revoked", label), countdown=0.3)
    result.revoke()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=RESULT_WAIT)
    shared.worker.wait_for(rf"proc\.record_run\[{result.id}\] revoked; not run")
    assert result.state == states.REVOKED
    assert shared.setup.records(label) == []


def test_banner(shared: Shared) -> None:
    output = shared.worker.output
    assert f"app:         {proc_app.APP_NAME}" in output
    assert f"broker:      {shared.setup.broker_url}" in output
    assert "queues:      default" in output
    assert "pool:        prefork (concurrency 2" in output
    assert "shared@test" in output
    listed = [line.strip()[2:] for line in output.splitlines() if line.startswith("  . ")]
    assert listed == sorted(proc_app.tasks.registry)


# -- options of flask worker --------------------------------------------------------------


def test_priorities_are_honoured(setup: WorkerSetup, app: Flask, workers: WorkerProcesses) -> None:
    priorities_honoured(setup, workers)


def test_queues_in_order_of_precedence(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    for queue in ("b", "a", "c"):
        for index in (1, 2):
            proc_app.record_run.apply_async((f"{queue}{index}",), queue=queue)
    worker = workers.start("-P", "solo", "--prefetch", "0", "-Q", "a,b")
    assert "queues:      a, b" in worker.output
    wait_until(lambda: len(setup.records("runs")) == 4, what="four runs")
    assert [line["label"] for line in setup.records("runs")] == ["a1", "a2", "b1", "b2"]
    assert state_of(app).transport.queue_length("c") == 2


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_concurrency(setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str) -> None:
    workers.start("-P", pool, "-c", "3")
    results = [proc_app.sleep_then_return.delay(0.8, index) for index in range(3)]
    assert [result.get(timeout=RESULT_WAIT) for result in results] == [0, 1, 2]
    lines = setup.records("sleepers")
    starts = [line["time"] for line in lines if line["event"] == "start"]
    ends = [line["time"] for line in lines if line["event"] == "end"]
    assert max(starts) < min(ends), "the three tasks did not run at the same time"
    pids = {line["pid"] for line in lines}
    assert len(pids) == (3 if pool == "prefork" else 1)


def test_hostname_option(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start("-P", "threads", "-c", "1", "--hostname", "alpha@%h")
    expected = f"alpha@{socket.gethostname()}"  # %h: Celery's placeholder for the host
    assert f" {expected} (Flask-Tasks" in worker.output
    assert proc_app.app_context.delay().get(timeout=RESULT_WAIT)["hostname"] == expected


def test_loglevel_option(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start("-P", "solo", "-l", "warning", ready=False)
    result = proc_app.add.delay(1, 1)
    assert result.get(timeout=RESULT_WAIT) == 2
    failed = proc_app.fail.delay("shown")
    failed.get(timeout=RESULT_WAIT, propagate=False)
    output = worker.wait_for(rf"proc\.fail\[{failed.id}\] failed in")
    assert "received" not in output and "succeeded" not in output


def test_max_tasks_per_child_replaces_children(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start(
        "-P", "prefork", "-c", "1", "--prefetch", "0", "--max-tasks-per-child", "2"
    )
    pids = [proc_app.pid.delay().get(timeout=RESULT_WAIT) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert worker.pid not in pids
    worker.wait_for("max per child", count=2)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_prefork_with_spawn(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, method: str
) -> None:
    """The Windows code path (spawn): children are fresh interpreters that load the app
    again the way ``flask`` found it."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    worker = workers.start("-P", "prefork", "-c", "2", FLASK_TASKS_START_METHOD=method)
    seen = [proc_app.app_context.delay() for _ in range(4)]
    for result in seen:
        info = result.get(timeout=RESULT_WAIT)
        assert info["app"] == proc_app.APP_NAME
        assert info["greeting"] == "hello from the app config"
        assert info["pid"] != worker.pid
    assert proc_app.add.delay(3, 4).get(timeout=RESULT_WAIT) == 7
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_prefork_stops_when_children_cannot_load_the_app(workers: WorkerProcesses) -> None:
    """Children that die before they are ready are not restarted forever."""
    worker = workers.start(
        "-P",
        "prefork",
        "-c",
        "1",
        ready=False,
        FLASK_TASKS_START_METHOD="spawn",
        PROC_FAIL_IN_CHILD="1",
    )
    assert worker.wait(timeout=30) == 1, worker.describe()
    output = worker.output
    assert "this app cannot be loaded in a child process" in output
    assert "keep exiting before they are ready" in output
    assert output.count("starting another") == 3


# -- time limits, revocation, rate limits -------------------------------------------------


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_soft_time_limit_raises_inside_the_task(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    workers.start("-P", pool)
    result = proc_app.soft_limited.delay()
    assert result.get(timeout=RESULT_WAIT) == "cleaned up"
    assert len(runs(setup, "soft", result.id)) == 1


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_hard_time_limit_fails_the_task(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    worker = workers.start("-P", pool)
    result = proc_app.hard_limited.delay()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=RESULT_WAIT)
    assert result.state == states.FAILURE
    assert [line["event"] for line in runs(setup, "hard", result.id)] == ["start"]
    assert proc_app.add.delay(5, 5).get(timeout=RESULT_WAIT) == 10
    assert worker.returncode() is None


def test_hard_time_limit_replaces_a_child_that_does_not_stop(
    app: Flask, workers: WorkerProcesses
) -> None:
    """A prefork child whose task swallows its time limit is replaced; the task fails."""
    worker = workers.start("-P", "prefork", "-c", "1", "--prefetch", "0")
    result = proc_app.stubborn.delay(30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=RESULT_WAIT)
    assert proc_app.add.delay(6, 6).get(timeout=RESULT_WAIT) == 12
    worker.wait_for("did not stop; exiting this process")
    assert worker.returncode() is None


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_revoke_terminate_stops_a_running_task(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    worker = workers.start("-P", pool)
    result = proc_app.sleep_then_return.delay(20, "never")
    wait_until(lambda: runs(setup, "sleepers", result.id), what="the task to start")
    result.revoke(terminate=True)
    worker.wait_for(rf"proc\.sleep_then_return\[{result.id}\] (terminated|revoked)")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=RESULT_WAIT)
    assert result.state == states.REVOKED
    assert proc_app.add.delay(1, 2).get(timeout=RESULT_WAIT) == 3
    assert [line["event"] for line in runs(setup, "sleepers", result.id)] == ["start"]


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_revoking_a_prefetched_task_keeps_it_from_running(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    """Revoked while it waits in a worker's prefetch buffer: skipped when its turn comes."""
    busy = proc_app.sleep_then_return.delay(0.6, "busy")
    waiting = proc_app.record_run.delay("must not run")
    workers.start("-P", pool, "-c", "1", "--prefetch", "2")
    wait_until(lambda: runs(setup, "sleepers", busy.id), what="the first task to start")
    assert state_of(app).transport.queue_length("default") == 0  # both are in the worker
    waiting.revoke()
    assert busy.get(timeout=RESULT_WAIT) == "busy"
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=RESULT_WAIT)
    assert proc_app.add.delay(1, 1).get(timeout=RESULT_WAIT) == 2  # ran after it
    assert proc_app.tasks.AsyncResult(waiting.id).state == states.REVOKED
    assert setup.records("runs") == []


def test_rate_limit_holds_across_two_workers(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    workers.start("-P", "threads", "-c", "2", "-n", "one@test")
    workers.start("-P", "threads", "-c", "2", "-n", "two@test")
    # Runs are counted by the second they recorded; sending just after a second begins
    # keeps every permitted run well inside the window the workers counted it in.
    wait_until(lambda: time.time() % 1 < 0.2, timeout=2, interval=0.005, what="a new second")
    results = [proc_app.rate_limited.delay(index) for index in range(10)]
    assert sorted(result.get(timeout=RESULT_WAIT) for result in results) == list(range(10))
    windows = Counter(math.floor(line["time"]) for line in setup.records("rated"))
    assert sum(windows.values()) == 10
    assert max(windows.values()) <= 5, windows
    assert len(windows) >= 2


def test_unsigned_or_tampered_messages_are_dead_lettered(
    setup: WorkerSetup, workers: WorkerProcesses
) -> None:
    """A worker with a SECRET_KEY runs only messages signed with it."""
    worker = workers.start("-P", "solo", PROC_SECRET_KEY="the worker's key")
    signed = setup.app(SECRET_KEY="the worker's key")
    unsigned, other_key = setup.app(), setup.app(SECRET_KEY="another key")
    with unsigned.app_context():
        plain = proc_app.add.delay(1, 1)
    with other_key.app_context():
        forged = proc_app.add.delay(2, 2)
    with signed.app_context():
        assert proc_app.add.delay(3, 3).get(timeout=RESULT_WAIT) == 6
        assert "not signed" in dead_letter(signed, plain.id).reason
        assert "signature does not match" in dead_letter(signed, forged.id).reason
    assert worker.returncode() is None


# -- leases, crashes, losing the broker ----------------------------------------------------


def test_a_task_outliving_its_lease_runs_once(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    """A live worker renews its leases: a long task is never handed to a second worker."""
    setup.visibility_timeout = 1.0
    workers.start("-P", "solo", "-n", "busy@test")
    result = proc_app.sleep_then_return.delay(2.0, "once")
    wait_until(lambda: runs(setup, "sleepers", result.id), what="the task to start")
    workers.start("-P", "solo", "-n", "idle@test")
    assert result.get(timeout=RESULT_WAIT) == "once"
    assert [line["event"] for line in runs(setup, "sleepers", result.id)] == ["start", "end"]


def test_a_killed_prefork_child_is_replaced_and_its_task_runs_again(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    setup.visibility_timeout = 1.0
    worker = workers.start("-P", "prefork", "-c", "1")
    result = proc_app.late_ack.delay(30)
    first = wait_until(lambda: runs(setup, "late_ack", result.id), what="the task to start")
    os.kill(first[0]["pid"], signal.SIGKILL)
    worker.wait_for("exited with code -9; starting another")
    assert result.get(timeout=RESULT_WAIT) == "done"
    pids = [line["pid"] for line in runs(setup, "late_ack", result.id)]
    assert len(pids) == 2 and pids[0] != pids[1]
    assert worker.returncode() is None


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_worker_survives_losing_the_broker(tmp_path: Path, pool: str) -> None:
    """Redis goes away and comes back: the worker logs, reconnects and goes on."""
    redis = RestartableRedis(tmp_path)
    redis.start()
    setup = WorkerSetup(redis.url, tmp_path / "records")
    setup.record_dir.mkdir()
    try:
        with worker_processes(setup, tmp_path) as workers:
            worker = workers.start("-P", pool, "-c", "1")
            with setup.app().app_context():
                assert proc_app.add.delay(1, 1).get(timeout=RESULT_WAIT) == 2
            redis.stop()
            worker.wait_for("Broker unreachable")
            redis.start()
            with setup.app().app_context():
                assert proc_app.add.delay(2, 2).get(timeout=RESULT_WAIT) == 4
            assert worker.returncode() is None
    finally:
        setup.close()
        redis.stop()


def test_prefork_children_finish_and_exit_when_the_parent_dies(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    worker = workers.start("-P", "prefork", "-c", "1")
    result = proc_app.sleep_then_return.delay(0.5, "orphaned")
    wait_until(lambda: runs(setup, "sleepers", result.id), what="the task to start")
    worker.send_signal(signal.SIGKILL)  # the parent only
    assert result.get(timeout=RESULT_WAIT) == "orphaned"
    wait_until(lambda: not worker.group_alive(), timeout=10, what="the child to exit")
    worker.wait_for("Parent process is gone")


# -- shutdown signals and kill -9 ----------------------------------------------------------


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_warm_shutdown_finishes_the_task_and_returns_prefetched(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    slow = proc_app.sleep_then_return.delay(1.0, "finished")
    quick = [proc_app.record_run.delay(f"quick-{index}") for index in range(2)]
    worker = workers.start("-P", pool, "-c", "1", "--prefetch", "2")
    wait_until(lambda: runs(setup, "sleepers", slow.id), what="the slow task to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.describe()
    assert slow.state == states.SUCCESS
    assert slow.get(timeout=1) == "finished"
    assert setup.records("runs") == []
    assert state_of(app).transport.queue_length("default") == 2
    assert "Returned 2 prefetched message(s)" in worker.output
    workers.start("-P", "solo")
    assert [result.get(timeout=RESULT_WAIT) for result in quick] == ["quick-0", "quick-1"]


@pytest.mark.parametrize(
    ("pool", "signum", "to_group"),
    [
        ("solo", signal.SIGTERM, False),
        ("threads", signal.SIGTERM, False),
        ("prefork", signal.SIGTERM, False),
        ("prefork", signal.SIGINT, True),  # Ctrl-C twice in a terminal
    ],
)
def test_second_signal_is_a_cold_shutdown(
    setup: WorkerSetup,
    app: Flask,
    workers: WorkerProcesses,
    pool: str,
    signum: int,
    to_group: bool,
) -> None:
    worker = workers.start("-P", pool, "-c", "1")
    send = worker.kill_group if to_group else worker.send_signal
    result = proc_app.sleep_then_return.delay(30, "cut short")
    wait_until(lambda: runs(setup, "sleepers", result.id), what="the task to start")
    send(signum)
    worker.wait_for("Warm shutdown")
    started = time.monotonic()
    send(signum)
    assert worker.wait(timeout=5) == 1, worker.describe()  # tasks were cut short
    assert time.monotonic() - started < 3, worker.describe()
    wait_until(lambda: not worker.group_alive(), timeout=5, what="the children to exit")
    # The interrupted task went back to its queue for another worker.
    assert state_of(app).transport.queue_length("default") == 1
    assert result.state == states.PENDING


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sigkill_mid_task_redelivers_acks_late_only(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    """kill -9 a worker: an acks_late task runs again elsewhere once its lease runs out;
    an acks_late=False task (acknowledged when it started) does not."""
    setup.visibility_timeout = 2.0
    victim = workers.start("-P", pool, "-c", "2", "-n", "victim@test")
    late = proc_app.late_ack.delay(30)
    early = proc_app.early_ack.delay(30)
    wait_until(lambda: runs(setup, "late_ack") and runs(setup, "early_ack"), what="both starts")
    victim.kill_group(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = time.monotonic()
    workers.start("-P", "threads", "-c", "2", "-n", "rescuer@test")
    assert late.get(timeout=RESULT_WAIT) == "done"
    assert time.monotonic() - killed_at >= 1.0  # not before the lease ran out
    assert [line["hostname"] for line in runs(setup, "late_ack", late.id)] == [
        "victim@test",
        "rescuer@test",
    ]
    assert len(runs(setup, "early_ack", early.id)) == 1
    assert early.state == states.PENDING
    assert state_of(app).transport.queue_length("default") == 0

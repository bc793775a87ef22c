"""End to end on RabbitMQ: real ``flask worker`` processes on ``amqp://``, results in Redis.

The seed flow, a chain, retries with countdown, priorities, ``-Q`` precedence, dead
letters, and a kill -9 soak in which nothing is lost. Each test has a key prefix of its own
(queue names in the session's vhost, result keys in the session's redis-server).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from process_helpers import WorkerProcesses, WorkerSetup, proc_app, wait_until

from flask_tasks import chord, group, states
from flask_tasks.brokers import Envelope

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

RESULT_WAIT = 15.0
SOAK_TASKS = 1000


@pytest.fixture
def worker_broker_url(amqp_url: str) -> str:
    return amqp_url


@pytest.fixture
def worker_result_backend(redis_url: str) -> str:
    return redis_url


def transport(app: Flask) -> Any:
    return app.extensions["tasks"].transport


def test_seed_flow_chain_and_chord(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start("-c", "2")  # prefork: each child its own connection
    assert "amqp://guest:***@127.0.0.1:5672/" in worker.output
    result = proc_app.add.delay(4, 4)
    assert result.get(timeout=RESULT_WAIT) == 8
    assert result.state == states.SUCCESS
    add, total = proc_app.add, proc_app.total
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=RESULT_WAIT) == 16
    assert chord([add.s(index, 1) for index in range(6)])(total.s()).get(timeout=RESULT_WAIT) == 21
    assert transport(app).queue_length("default") == 0


def test_retries_with_countdown_never_run_early(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    workers.start("-P", "threads", "-c", "2")
    late = proc_app.flaky.delay(2)  # acks_late: released with an eta (the delay ladder)
    early = proc_app.flaky_early_ack.delay(2)  # acked at start: published again
    assert late.get(timeout=RESULT_WAIT) == {"id": late.id, "retries": 2}
    assert early.get(timeout=RESULT_WAIT) == 2
    seen = [line for line in setup.records("flaky") if line["id"] == late.id]
    assert [line["retries"] for line in seen] == [0, 1, 2]
    gaps = [after["time"] - before["time"] for before, after in zip(seen, seen[1:])]
    assert min(gaps) >= 0.1  # the countdown

    label = uuid.uuid4().hex
    sent_at = time.time()
    delayed = proc_app.record_run.apply_async((label, label), countdown=1.2)
    assert delayed.get(timeout=RESULT_WAIT) == label
    [run] = setup.records(label)
    assert run["time"] >= sent_at + 1.2
    assert transport(app).queue_length("default") == 0


def test_priorities_and_queue_precedence(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    sent = [("p5-a", 5), ("p9", 9), ("p0-a", 0), ("p3", 3), ("p5-b", 5), ("p0-b", 0)]
    for label, priority in sent:
        proc_app.record_run.apply_async((label,), priority=priority, queue="a")
    for index in (1, 2):
        proc_app.record_run.apply_async((f"b{index}",), queue="b")
        proc_app.record_run.apply_async((f"c{index}",), queue="c")
    workers.start("-P", "solo", "--prefetch", "0", "-Q", "b,a")
    wait_until(lambda: len(setup.records("runs")) == len(sent) + 2, what="all runs")
    order = [line["label"] for line in setup.records("runs")]
    assert order == ["b1", "b2", "p0-a", "p0-b", "p3", "p5-a", "p5-b", "p9"]
    assert transport(app).queue_length("c") == 2


def test_undecodable_and_unknown_messages_are_dead_lettered_and_retried(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    workers.start("-P", "solo")
    transport(app).publish([Envelope("garbage-1", "default", b"\xff not json")])
    letter = wait_until(
        lambda: [letter for letter in transport(app).dead_letters() if letter.id == "garbage-1"],
        what="the dead letter",
    )[0]
    assert letter.queue == "default" and letter.body == b"\xff not json"
    assert letter.reason.startswith("DecodeError")
    assert transport(app).retry_dead_letter("garbage-1") is True
    wait_until(  # the worker takes it again and dead-letters it again
        lambda: [letter for letter in transport(app).dead_letters() if letter.id == "garbage-1"],
        what="the dead letter again",
    )


def _produce(app: Flask, results: list[Any], done: threading.Event) -> None:
    with app.app_context():
        for start in range(0, SOAK_TASKS, 100):
            batch = group(proc_app.counted.s(index) for index in range(start, start + 100))
            results.extend(batch.apply_async().results)
    done.set()


def test_kill_9_soak_loses_nothing(setup: WorkerSetup, workers: WorkerProcesses) -> None:
    """Two workers and a producer; one worker is killed with SIGKILL mid-stream: every
    task still runs (RabbitMQ requeues what the dead connection held), and only the
    ones the victim held can run twice."""
    app = setup.app()
    victim = workers.start("-P", "threads", "-c", "4", "-n", "victim@test")
    survivor = workers.start("-P", "solo", "-n", "survivor@test")
    results: list[Any] = []
    produced = threading.Event()
    threading.Thread(target=_produce, args=(app, results, produced), daemon=True).start()

    def runs() -> list[dict[str, Any]]:
        return setup.records("counted")

    wait_until(lambda: len(runs()) >= SOAK_TASKS // 4, timeout=60, what="a quarter of the runs")
    victim.kill_group(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert len(runs()) < SOAK_TASKS, "killed too late to matter"

    assert produced.wait(60)
    with app.app_context():
        for result in results:
            assert result.get(timeout=60) is not None
        assert {result.state for result in results} == {states.SUCCESS}
        assert transport(app).queue_length("default") == 0
        assert transport(app).dead_letters() == []
    assert survivor.returncode() is None, survivor.describe()
    per_task = Counter(line["index"] for line in runs())
    assert set(per_task) == set(range(SOAK_TASKS)), "a task was lost"
    survivor_runs = Counter(line["index"] for line in runs() if line["hostname"] == "survivor@test")
    assert max(survivor_runs.values()) == 1
    # At least once: the victim held at most its 4 slots + prefetch (4) when it died.
    assert sum(count - 1 for count in per_task.values()) <= 8


def test_a_task_outliving_its_lease_runs_once(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    """The monitor renews the lease kept by the worker's transport: a task longer than
    the visibility timeout is neither given back nor handed to a second worker."""
    setup.visibility_timeout = 1.0
    workers.start("-P", "solo", "-n", "busy@test")
    result = proc_app.sleep_then_return.delay(2.5, "once")
    wait_until(lambda: setup.records("sleepers"), what="the task to start")
    workers.start("-P", "solo", "-n", "idle@test")
    assert result.get(timeout=RESULT_WAIT) == "once"
    events = [line["event"] for line in setup.records("sleepers") if line["id"] == result.id]
    assert events == ["start", "end"]


@pytest.mark.fault
def test_a_task_that_kills_its_process_is_dead_lettered_after_max_deliveries(
    setup: WorkerSetup, workers: WorkerProcesses
) -> None:
    """RabbitMQ requeues the message of a dead consumer uncounted: the workers count its
    starts in the result store, and the third start of a message that killed its process
    twice dead-letters it instead of running it (no poison loop)."""
    app = setup.app(TASKS_MAX_DELIVERIES=2)
    worker = workers.start("-P", "prefork", "-c", "1", PROC_MAX_DELIVERIES="2")
    with app.app_context():
        result = proc_app.die.delay("os_exit")
        assert result.get(timeout=30, propagate=False) is not None
        assert result.state == states.FAILURE
        assert type(result.result).__name__ == "WorkerLostError"
        assert "started 3 times" in str(result.result)
        assert "TASKS_MAX_DELIVERIES is 2" in str(result.result)
        runs = [r for r in setup.records("dying") if r["id"] == result.id]
        assert len(runs) == 2
        letters = wait_until(transport(app).dead_letters, what="the dead letter")
        assert [letter.id for letter in letters] == [result.id]
        assert "WorkerLostError" in letters[0].reason
        assert proc_app.add.delay(2, 3).get(timeout=RESULT_WAIT) == 5  # the worker lives on
    assert worker.returncode() is None

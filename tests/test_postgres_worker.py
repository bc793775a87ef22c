"""Real ``flask worker`` processes on ``postgresql://``: the core flows, priorities, and a
SIGKILL in the middle of a stream of tasks (nothing lost).

Every test has a key prefix of its own in the session's test database (``postgres_url``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from process_helpers import WorkerProcesses, WorkerSetup, proc_app, wait_until, worker_processes

from flask_tasks import chord, group, states

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

RESULT_WAIT = 15.0
SOAK_TASKS = 2000


@pytest.fixture
def setup(postgres_url: str, tmp_path: Path) -> Iterator[WorkerSetup]:
    records = tmp_path / "records"
    records.mkdir()
    worker_setup = WorkerSetup(postgres_url, records)
    yield worker_setup
    worker_setup.close()


@pytest.fixture
def workers(setup: WorkerSetup, tmp_path: Path) -> Iterator[WorkerProcesses]:
    with worker_processes(setup, tmp_path) as started:
        yield started


@pytest.fixture
def app(setup: WorkerSetup) -> Iterator[Flask]:
    test_app = setup.app()
    with test_app.app_context():
        yield test_app


def test_seed_flow_chain_group_chord_and_retries(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    worker = workers.start("-c", "2", "-n", "pg@test")
    assert f"broker:      {setup.broker_url}" in worker.output
    result = proc_app.add.delay(4, 4)
    assert result.get(timeout=RESULT_WAIT) == 8
    assert result.state == states.SUCCESS
    add, total = proc_app.add, proc_app.total
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=RESULT_WAIT) == 16
    assert group(add.s(i, i) for i in range(4))().get(timeout=RESULT_WAIT) == [0, 2, 4, 6]
    assert chord([add.s(i, 1) for i in range(8)])(total.s()).get(timeout=RESULT_WAIT) == 36
    flaky = proc_app.flaky.delay(2)  # retries with countdown=0.1, same task id
    assert flaky.get(timeout=RESULT_WAIT) == {"id": flaky.id, "retries": 2}
    runs = [line for line in setup.records("flaky") if line["id"] == flaky.id]
    assert [line["retries"] for line in runs] == [0, 1, 2]
    assert all(b["time"] - a["time"] >= 0.1 for a, b in zip(runs, runs[1:]))
    with pytest.raises(ValueError, match="boom"):
        proc_app.fail.delay("boom").get(timeout=RESULT_WAIT)


def test_countdown_never_runs_early(app: Flask, setup: WorkerSetup, workers: WorkerProcesses):
    workers.start("-P", "threads", "-c", "2")
    label = uuid.uuid4().hex
    sent_at = time.time()
    result = proc_app.record_run.apply_async((label, label), countdown=0.8)
    assert result.get(timeout=RESULT_WAIT) == label
    [line] = setup.records(label)
    assert line["time"] >= sent_at + 0.8


def test_priorities_are_honoured(setup: WorkerSetup, app: Flask, workers: WorkerProcesses) -> None:
    sent = [("p5-a", 5), ("p9", 9), ("p0-a", 0), ("p3", 3), ("p5-b", 5), ("p0-b", 0)]
    for label, priority in sent:
        proc_app.record_run.apply_async((label,), priority=priority)
    workers.start("-P", "solo", "-c", "1", "--prefetch", "0")
    wait_until(lambda: len(setup.records("runs")) == len(sent), what="all runs")
    order = [line["label"] for line in setup.records("runs")]
    assert order == ["p0-a", "p0-b", "p3", "p5-a", "p5-b", "p9"]


def _produce(app: Flask, results: list, done: threading.Event) -> None:
    with app.app_context():
        for start in range(0, SOAK_TASKS, 100):
            batch = group(proc_app.counted.s(index) for index in range(start, start + 100))
            results.extend(batch.apply_async().results)
    done.set()


def test_two_workers_a_producer_and_a_sigkill(setup: WorkerSetup, workers: WorkerProcesses):
    setup.visibility_timeout = 2.0
    app = setup.app()
    victim = workers.start("-P", "solo", "--prefetch", "0", "-n", "victim@test")
    survivor = workers.start("-P", "solo", "--prefetch", "0", "-n", "survivor@test")
    results: list = []
    produced = threading.Event()
    threading.Thread(target=_produce, args=(app, results, produced), daemon=True).start()

    def runs() -> list[dict]:
        return setup.records("counted")

    wait_until(lambda: len(runs()) >= SOAK_TASKS // 4, timeout=60, what="a quarter of the runs")
    victim.kill_group(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert len(runs()) < SOAK_TASKS, "killed too late to matter"

    assert produced.wait(60)
    with app.app_context():
        for result in results:  # the survivor finishes everything, the victim's too
            assert result.get(timeout=60) is not None
        assert {result.state for result in results} == {states.SUCCESS}
    assert survivor.returncode() is None, survivor.describe()

    per_task = Counter(line["index"] for line in runs())
    assert set(per_task) == set(range(SOAK_TASKS)), "a task was lost"
    by_host = Counter(line["hostname"] for line in runs())
    assert by_host["victim@test"] > 0 and by_host["survivor@test"] > 0
    survivor_runs = Counter(line["index"] for line in runs() if line["hostname"] == "survivor@test")
    assert max(survivor_runs.values()) == 1
    repeated = [index for index, count in per_task.items() if count > 1]
    assert len(repeated) <= 1 and all(per_task[index] == 2 for index in repeated)
    with app.app_context():
        broker = app.extensions["tasks"].transport
        assert broker.queue_length("default") == 0 and broker.dead_letters() == []

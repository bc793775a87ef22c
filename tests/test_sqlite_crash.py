"""The embedded SQLite broker under two worker processes, a producer and a SIGKILL."""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from process_helpers import WorkerProcesses, WorkerSetup, broker_url, proc_app, wait_until

from flask_tasks import group, states

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

TASKS = 2000


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[WorkerSetup]:
    records = tmp_path / "records"
    records.mkdir()
    worker_setup = WorkerSetup(broker_url("sqlite", lambda: "", tmp_path), records)
    worker_setup.visibility_timeout = 2.0
    yield worker_setup
    worker_setup.close()


@pytest.fixture
def workers(setup: WorkerSetup, tmp_path: Path) -> Iterator[WorkerProcesses]:
    started = WorkerProcesses(setup, tmp_path)
    yield started
    started.cleanup()


def produce(app: Flask, results: list, done: threading.Event) -> None:
    """Publish the tasks in batches of 100 while the workers run."""
    with app.app_context():
        for start in range(0, TASKS, 100):
            batch = group(proc_app.counted.s(index) for index in range(start, start + 100))
            results.extend(batch.apply_async().results)
    done.set()


def test_two_workers_a_producer_and_a_sigkill(setup: WorkerSetup, workers: WorkerProcesses):
    app = setup.app()
    victim = workers.start("-P", "solo", "--prefetch", "0", "-n", "victim@test")
    survivor = workers.start("-P", "solo", "--prefetch", "0", "-n", "survivor@test")
    results: list = []
    produced = threading.Event()
    producer = threading.Thread(target=produce, args=(app, results, produced), daemon=True)
    producer.start()

    def runs() -> list[dict]:
        return setup.records("counted")

    wait_until(lambda: len(runs()) >= TASKS // 4, timeout=60, what="a quarter of the runs")
    victim.kill_group(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_after = len(runs())
    assert killed_after < TASKS, "killed too late to matter"

    assert produced.wait(60)
    with app.app_context():
        for result in results:  # the survivor finishes everything, the victim's too
            assert result.get(timeout=60) is not None
        assert {result.state for result in results} == {states.SUCCESS}
    assert survivor.returncode() is None, survivor.describe()

    per_task = Counter(line["index"] for line in runs())
    assert set(per_task) == set(range(TASKS)), "a task was lost"
    by_host = Counter(line["hostname"] for line in runs())
    assert by_host["victim@test"] > 0 and by_host["survivor@test"] > 0
    # No live worker ran a task twice; a task ran twice at most once: the one the victim
    # held when it was killed (at-least-once: it may have run but not been acknowledged).
    survivor_runs = Counter(line["index"] for line in runs() if line["hostname"] == "survivor@test")
    assert max(survivor_runs.values()) == 1
    repeated = [index for index, count in per_task.items() if count > 1]
    assert len(repeated) <= 1 and all(per_task[index] == 2 for index in repeated)
    with app.app_context():
        broker = app.extensions["tasks"].transport
        assert broker.queue_length("default") == 0 and broker.dead_letters() == []

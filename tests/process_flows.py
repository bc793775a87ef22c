"""Scenarios that several process-test modules run on their own broker, as they are:
the seed flow, priorities, and a SIGKILL in the middle of a stream of tasks."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from typing import Any

import pytest
from process_helpers import WorkerProcesses, WorkerSetup, proc_app, wait_until

from flask_tasks import chord, group, states

RESULT_WAIT = 15.0


def seed_flow(setup: WorkerSetup, workers: WorkerProcesses, *worker_args: str) -> None:
    """A worker started with ``worker_args`` runs a task, a chain, a group, a chord, a task
    retried twice (never before its countdown) and a failing one (run in an app context)."""
    worker = workers.start(*worker_args)
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


def priorities_honoured(setup: WorkerSetup, workers: WorkerProcesses) -> None:
    """Six tasks sent with priorities before a one-slot worker starts run lowest number
    first, in the order sent within a priority (run in an app context)."""
    sent = [("p5-a", 5), ("p9", 9), ("p0-a", 0), ("p3", 3), ("p5-b", 5), ("p0-b", 0)]
    for label, priority in sent:
        proc_app.record_run.apply_async((label,), priority=priority)
    workers.start("-P", "solo", "-c", "1", "--prefetch", "0")
    wait_until(lambda: len(setup.records("runs")) == len(sent), what="all runs")
    order = [line["label"] for line in setup.records("runs")]
    assert order == ["p0-a", "p0-b", "p3", "p5-a", "p5-b", "p9"]


def sigkill_soak(setup: WorkerSetup, workers: WorkerProcesses, tasks: int) -> None:
    """Two solo workers and a producer thread publishing ``tasks`` tasks in batches of
    100; one worker is killed with SIGKILL a quarter of the way. Every task runs, the
    survivor none twice, and in all at most one twice: the one the victim held when it
    was killed (at-least-once: it may have run but not been acknowledged)."""
    app = setup.app()
    victim = workers.start("-P", "solo", "--prefetch", "0", "-n", "victim@test")
    survivor = workers.start("-P", "solo", "--prefetch", "0", "-n", "survivor@test")
    results: list[Any] = []
    produced = threading.Event()

    def produce() -> None:
        with app.app_context():
            for start in range(0, tasks, 100):
                batch = group(proc_app.counted.s(index) for index in range(start, start + 100))
                results.extend(batch.apply_async().results)
        produced.set()

    threading.Thread(target=produce, daemon=True).start()

    def runs() -> list[dict[str, Any]]:
        return setup.records("counted")

    wait_until(lambda: len(runs()) >= tasks // 4, timeout=60, what="a quarter of the runs")
    victim.kill_group(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert len(runs()) < tasks, "killed too late to matter"

    assert produced.wait(60)
    with app.app_context():
        for result in results:  # the survivor finishes everything, the victim's too
            assert result.get(timeout=60) is not None
        assert {result.state for result in results} == {states.SUCCESS}
    assert survivor.returncode() is None, survivor.describe()

    per_task = Counter(line["index"] for line in runs())
    assert set(per_task) == set(range(tasks)), "a task was lost"
    by_host = Counter(line["hostname"] for line in runs())
    assert by_host["victim@test"] > 0 and by_host["survivor@test"] > 0
    survivor_runs = Counter(line["index"] for line in runs() if line["hostname"] == "survivor@test")
    assert max(survivor_runs.values()) == 1
    repeated = [index for index, count in per_task.items() if count > 1]
    assert len(repeated) <= 1 and all(per_task[index] == 2 for index in repeated)
    with app.app_context():
        broker = app.extensions["tasks"].transport
        assert broker.queue_length("default") == 0 and broker.dead_letters() == []

"""Sentinel failover with real servers and real ``flask worker`` processes.

A master, one replica and three Sentinels run on loopback (``redis_sentinel_server``).
Two publishers and two workers use ``redis+sentinel://``; the master is killed with
SIGKILL mid-run. The publishers must see nothing worse than their bounded retry, the
workers must follow the promoted replica, and every task acknowledged as published must
have run (and have its SUCCESS record on the new master), except those the replica had not
yet received when the master died: the test counts and prints those, and bounds them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
from flask import Flask
from process_helpers import WorkerSetup, proc_app, wait_until, worker_processes
from redis_sentinel_server import SentinelSetup, redis_sentinel

from flask_tasks import OperationalError, states

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: The publish budget of the publisher that keeps the default retry policy.
BUDGET = 2.0
#: How long one attempt may take on top of the budget: the client's socket timeout
#: (``socket_timeout``, 5 s), the longest a single command waits for a reply.
ATTEMPT = 5.0
#: A publisher with a retry policy that outlasts a failover: no limit on the number of
#: attempts, at most 0.3 s apart, within a budget of 15 s.
PATIENT_POLICY = {"max_retries": None, "interval_step": 0.1, "interval_max": 0.3}
PATIENT_BUDGET = 15.0
#: The replica receives each write as the master makes it (asynchronous replication);
#: on loopback it trails by milliseconds. Only a write acknowledged in the last moment
#: before the kill can be missing on it; a second is a generous bound for that moment.
LAG_WINDOW = 1.0


@dataclass
class Publisher:
    """A thread publishing one task after another until told to stop."""

    name: str
    app: Flask
    retry_policy: Optional[dict[str, Any]] = None
    acknowledged: dict[str, float] = field(default_factory=dict)  # label -> time published
    ids: dict[str, str] = field(default_factory=dict)  # label -> task id, when acknowledged
    refused: dict[str, float] = field(default_factory=dict)  # label -> seconds it tried
    slowest: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index = 0
        with self.app.app_context():
            while not self.stop.is_set():
                label = f"{self.name}-{index}"
                index += 1
                started = time.monotonic()
                try:
                    result = proc_app.record_run.apply_async(
                        (label,), {"log": "done"}, retry_policy=self.retry_policy
                    )
                except OperationalError:
                    self.refused[label] = time.monotonic() - started
                else:
                    self.acknowledged[label] = time.monotonic()
                    self.ids[label] = result.id
                self.slowest = max(self.slowest, time.monotonic() - started)
                time.sleep(0.01)


class Waiter:
    """A thread that sends a 2 s task, then waits for its result with ``get()``."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.sent = False
        self.outcome: Any = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.app.app_context():
            result = proc_app.sleep_then_return.apply_async(
                (2.0, "slept"), retry_policy=PATIENT_POLICY
            )
            self.sent = True
            try:
                self.outcome = result.get(timeout=30)
            except Exception as error:  # reported by the assertion on the outcome
                self.outcome = error


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    with redis_sentinel() as setup:
        yield setup


def test_publishers_and_workers_follow_a_failover(sentinel: SentinelSetup, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    setup = WorkerSetup(sentinel.url, records, visibility_timeout=3.0)
    hasty = Publisher("hasty", setup.app(TASKS_PUBLISH_TIMEOUT=BUDGET))
    patient = Publisher("patient", setup.app(TASKS_PUBLISH_TIMEOUT=PATIENT_BUDGET), PATIENT_POLICY)
    threads = [threading.Thread(target=p.run, daemon=True) for p in (hasty, patient)]
    try:
        with worker_processes(setup, tmp_path) as workers:
            threaded = workers.start("-P", "threads", "-c", "2", "-n", "threads@%h")
            workers.start("-P", "prefork", "-c", "2", "-n", "prefork@%h")
            for thread in threads:
                thread.start()
            wait_until(lambda: len(setup.records("done")) >= 100, what="tasks to run")
            waiter = Waiter(patient.app)
            waiter.thread.start()
            wait_until(lambda: waiter.sent, what="the waiter's task to be sent")
            lag = _replication_lag(sentinel)
            killed_at = time.monotonic()
            sentinel.kill(sentinel.master_port)
            sentinel.wait_for_failover()
            promoted_at = time.monotonic()

            def resumed() -> set[int]:  # pids that ran a task after the promotion
                after = _wall(promoted_at)
                return {line["pid"] for line in setup.records("done") if line["time"] > after}

            def everyone_resumed() -> bool:
                pids = resumed()
                hasty_resumed = any(at > promoted_at for at in list(hasty.acknowledged.values()))
                return hasty_resumed and threaded.pid in pids and bool(pids - {threaded.pid})

            # Publishing goes on against the new master until what the assertions below
            # need has happened: the hasty publisher got a send through, and both workers
            # ran a task. A worker that failed to reach the dead master waits out its
            # reconnect backoff first (doubling, up to 10 s), so one may resume seconds
            # after the other, which by then may have run all that was sent.
            wait_until(everyone_resumed, 25, what="the hasty publisher and both workers to resume")
            for publisher in (hasty, patient):
                publisher.stop.set()
            for thread in threads:
                thread.join(PATIENT_BUDGET + ATTEMPT)
            acknowledged = {**hasty.acknowledged, **patient.acknowledged}

            def ran() -> Counter[str]:
                return Counter(line["label"] for line in setup.records("done"))

            # Whatever the new master holds runs (a message leased on the old master
            # and not acknowledged there comes back after its 3 s lease).
            after = [label for label, at in acknowledged.items() if at > promoted_at]
            wait_until(lambda: not set(after) - set(ran()), 20, what="tasks sent after failover")
            with suppress(AssertionError):  # lost to replication lag: counted below
                wait_until(lambda: not set(acknowledged) - set(ran()), 10, interval=0.2)
            runs = ran()
            waiter.thread.join(30)
            # A task that ran has its record on the new master (one whose acknowledgement
            # was lost with the old master has run again by now, and written it again).
            ids = {**hasty.ids, **patient.ids}
            wait_until(
                lambda: _all_succeeded(patient.app, [ids[label] for label in runs]),
                10,
                what="the records of the tasks that ran",
            )
            resumed_pids = resumed()
    finally:
        for publisher in (hasty, patient):
            publisher.stop.set()
        setup.close()

    lost = {label: at for label, at in acknowledged.items() if label not in runs}
    refused_ran = [label for label in {**hasty.refused, **patient.refused} if label in runs]
    print(
        f"\nSentinel failover: promoted {promoted_at - killed_at:.1f}s after the kill; "
        f"{len(acknowledged)} tasks acknowledged, {len(lost)} lost to replication lag "
        f"(replica {lag} bytes behind just before the kill), "
        f"{sum(count > 1 for count in runs.values())} run twice; "
        f"{len(hasty.refused)} publishes refused after the default retry policy "
        f"(slowest {hasty.slowest:.1f}s, {len(refused_ran)} of them ran anyway), "
        f"patient publisher's slowest publish {patient.slowest:.1f}s"
    )
    # Publishers: nothing worse than their bounded retry.
    assert hasty.slowest <= BUDGET + ATTEMPT
    assert not patient.refused, patient.refused
    assert patient.slowest <= PATIENT_BUDGET + ATTEMPT
    assert any(at > promoted_at for at in hasty.acknowledged.values()), "hasty never resumed"
    # Workers: both resumed on the new master (threads: its own pid; prefork: a child's).
    assert threaded.pid in resumed_pids and resumed_pids - {threaded.pid}, resumed_pids
    # A caller waiting on a result across the failover gets it.
    assert waiter.outcome == "slept", waiter.outcome
    # Lost: only writes acknowledged in the last moment before the kill.
    late = [label for label, at in lost.items() if at < killed_at - LAG_WINDOW or at > killed_at]
    assert not late, f"lost tasks not explained by replication lag: {late}"
    assert len(lost) <= sum(
        killed_at - LAG_WINDOW <= at <= killed_at for at in acknowledged.values()
    )


def _all_succeeded(app: Flask, task_ids: list[str]) -> bool:
    with app.app_context():
        return all(
            proc_app.tasks.AsyncResult(task_id).state == states.SUCCESS for task_id in task_ids
        )


def _replication_lag(sentinel: SentinelSetup) -> int:
    """Bytes of the master's replication stream the replica had not processed (read one
    after the other, so approximate)."""
    master = sentinel.info(sentinel.master_port)
    replica = sentinel.info(sentinel.replica_port)
    lag = int(master.get("master_repl_offset", 0)) - int(replica.get("master_repl_offset", 0))
    return max(0, lag)  # the replica may have caught up between the two reads


def _wall(monotonic: float) -> float:
    """A ``time.monotonic()`` reading as wall-clock time (what the records carry)."""
    return time.time() - (time.monotonic() - monotonic)

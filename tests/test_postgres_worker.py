"""Real ``flask worker`` processes on ``postgresql://``: the core flows, priorities, and a
SIGKILL in the middle of a stream of tasks (nothing lost).

Every test has a key prefix of its own in the session's test database (``postgres_url``).
"""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from flask import Flask
from process_flows import priorities_honoured, seed_flow, sigkill_soak
from process_helpers import WorkerProcesses, WorkerSetup, proc_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

RESULT_WAIT = 15.0
SOAK_TASKS = 2000


@pytest.fixture
def worker_broker_url(postgres_url: str) -> str:
    return postgres_url


def test_seed_flow_chain_group_chord_and_retries(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses
) -> None:
    seed_flow(setup, workers, "-c", "2", "-n", "pg@test")


def test_countdown_never_runs_early(app: Flask, setup: WorkerSetup, workers: WorkerProcesses):
    workers.start("-P", "threads", "-c", "2")
    label = uuid.uuid4().hex
    sent_at = time.time()
    result = proc_app.record_run.apply_async((label, label), countdown=0.8)
    assert result.get(timeout=RESULT_WAIT) == label
    [line] = setup.records(label)
    assert line["time"] >= sent_at + 0.8


def test_priorities_are_honoured(setup: WorkerSetup, app: Flask, workers: WorkerProcesses) -> None:
    priorities_honoured(setup, workers)


def test_two_workers_a_producer_and_a_sigkill(setup: WorkerSetup, workers: WorkerProcesses):
    setup.visibility_timeout = 2.0
    sigkill_soak(setup, workers, SOAK_TASKS)

"""The embedded SQLite broker under two worker processes, a producer and a SIGKILL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from process_flows import sigkill_soak
from process_helpers import WorkerProcesses, WorkerSetup, broker_url

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="signals process groups (POSIX)"),
]

TASKS = 2000


@pytest.fixture
def worker_broker_url(tmp_path: Path) -> str:
    return broker_url("sqlite", lambda: "", tmp_path)


def test_two_workers_a_producer_and_a_sigkill(setup: WorkerSetup, workers: WorkerProcesses):
    setup.visibility_timeout = 2.0
    sigkill_soak(setup, workers, TASKS)

"""Prefork children share the app their parent loaded (real ``flask worker`` processes).

The parent imports the app and its tasks once and forks; a child neither imports them
again nor, through its garbage collector, writes over the pages that hold them, so most of
a child's memory stays shared with its parent (copy-on-write).
"""

from __future__ import annotations

import os
import sys

import pytest
from flask import Flask
from process_helpers import WorkerProcesses, proc_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="fork (POSIX)"),
]

RESULT_WAIT = 10.0


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def test_children_share_the_app_their_parent_loaded(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start("-P", "prefork", "-c", "2", "--prefetch", "0")
    infos = [proc_app.process_info.delay().get(timeout=RESULT_WAIT) for _ in range(6)]
    for info in infos:
        assert info["pid"] != worker.pid
        assert info["parent"] == worker.pid
        assert info["imported_in"] == worker.pid  # imported once, before the fork
        assert info["frozen"] > 1000  # gc.freeze(): the collector leaves them alone
    if not os.path.exists(f"/proc/{worker.pid}/smaps_rollup"):
        return
    for child in {info["pid"] for info in infos}:
        memory = _memory_kib(child)
        private = memory["Private_Clean"] + memory["Private_Dirty"]
        assert private < memory["Rss"] / 2, f"child {child} shares little: {memory}"


def test_spawned_children_load_the_app_themselves(app: Flask, workers: WorkerProcesses) -> None:
    """The contrast (and the Windows path): nothing is inherited, nothing is frozen."""
    worker = workers.start("-P", "prefork", "-c", "1", FLASK_TASKS_START_METHOD="spawn")
    info = proc_app.process_info.delay().get(timeout=RESULT_WAIT)
    assert info["parent"] == worker.pid
    assert info["imported_in"] == info["pid"]
    assert info["frozen"] == 0

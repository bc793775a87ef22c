"""The benchmark harness (bench/) on a tiny N, so that it cannot rot.

Flask-Tasks only (Redis and SQLite brokers), with the interpreter running the tests: it
never installs the peers' virtual environment. The real run is ``bench/run.sh``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_n(tmp_path: Path) -> None:
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.harness",
            "--configs",
            "flask-tasks,flask-tasks-sqlite",
            "--n",
            "20",
            "--roundtrips",
            "10",
            "--repeat",
            "1",
            "--growth",
            "10,40",
            "--growth-repeat",
            "1",
            "--idle-settle",
            "0.2",
            "--out",
            str(tmp_path),
            "--logs",
            str(tmp_path / "logs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert time.monotonic() - started < 60

    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("flask-tasks", "flask-tasks-sqlite"):
        record = results["configs"][name]
        assert not record.get("errors"), record["errors"]
        for key in ("enqueue", "bulk", "drain", "startup", "rt_p50", "rt_p95", "rt_p99"):
            assert record[key] and all(value > 0 for value in record[key]), (name, key)
        assert record["rt_p50"][0] <= record["rt_p95"][0] <= record["rt_p99"][0]
        for key in ("memory_idle", "memory_after"):
            memory = record[key][0]
            assert memory["processes"] == 3  # the supervisor and its two children
            assert memory["rss_kib"] > 0 and memory["pss_kib"] > 0
    redis_work = results["configs"]["flask-tasks"]["drain_redis"][0]
    assert redis_work["commands"] > 0 and redis_work["round_trips"] > 0
    assert redis_work["scripts"] > 0 and redis_work["cpu_us"] > 0
    growth = results["growth"]["flask-tasks"]
    assert sorted(growth, key=int) == ["10", "40"]
    assert all(rate > 0 for size in growth.values() for rate in size["drain"])

    report = (tmp_path / "RESULTS.md").read_text()
    for heading in (
        "## Targets",
        "## 1. Enqueue rate",
        "## 2. Drain rate",
        "## 3. Round trip",
        "## 4. Worker memory",
        "## 5. Redis work per task",
        "## 6. Cost as work grows",
        "## 7. Flask-Tasks' SQLite embedded broker beside Redis",
    ):
        assert heading in report
    assert "Python " in report and "redis-server " in report

"""The benchmark harness (bench/) on a tiny N, so that it cannot rot.

Flask-Tasks only (Redis, SQLite, PostgreSQL and RabbitMQ brokers), with the interpreter
running the tests: it never installs the peers' virtual environment. The real run is
``bench/run.sh``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FLASK_TASKS_ON = (
    "flask-tasks",
    "flask-tasks-20-queues",
    "flask-tasks-sqlite",
    "flask-tasks-postgresql",
    "flask-tasks-rabbitmq",
)


def run_harness(out: Path, configs: str, *options: str) -> subprocess.CompletedProcess[str]:
    """The harness at N = 20 (a few seconds per configuration)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.harness",
            "--configs",
            configs,
            "--n",
            "20",
            "--roundtrips",
            "10",
            "--repeat",
            "1",
            "--idle-settle",
            "0.2",
            "--out",
            str(out),
            "--logs",
            str(out / "logs"),
            *options,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_n(tmp_path: Path) -> None:
    started = time.monotonic()
    completed = run_harness(
        tmp_path, ",".join(FLASK_TASKS_ON), "--growth", "10,40", "--growth-repeat", "1"
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert time.monotonic() - started < 120

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {}
    for name in FLASK_TASKS_ON:
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
    for name in ("flask-tasks", "flask-tasks-20-queues"):
        per_call = results["configs"][name]["rt_redis"][0]
        # publish; SUBSCRIBE, GET; BLPOP, reserve, ack: 6, plus the idle workers' share.
        assert 5.5 < per_call["round_trips"] < 8, (name, per_call)
        assert results["configs"][name]["bulk_redis"][0]["scripts"] > 0
    growth = results["growth"]["flask-tasks"]
    assert sorted(growth, key=int) == ["10", "40"]
    assert all(rate > 0 for size in growth.values() for rate in size["drain"])

    report = (tmp_path / "RESULTS.md").read_text()
    for heading in (
        "## Targets of issue 13",
        "## Earlier targets",
        "## 1. Enqueue rate",
        "## 2. Drain rate",
        "## 3. Round trip",
        "## 4. Worker memory",
        "## 5. Redis work per task",
        "## 6. Cost as work grows",
        "## 7. Flask-Tasks on each broker",
    ):
        assert heading in report
    assert "| drain with 20 queues consumed within 10 % of one queue | " in report
    assert "| Redis round trips per `delay().get()` ≤ 6 (results in the broker's db) | " in report
    assert "| bulk enqueue ≥ 50,000 tasks/s (results in the broker's db) | " in report
    assert "Python " in report and "redis-server " in report
    assert "PostgreSQL " in report and "RabbitMQ " in report  # the servers' versions
    brokers = report.split("## 7.", 1)[1].split("##", 1)[0]
    for label in ("| Redis |", "| SQLite", "| PostgreSQL", "| RabbitMQ"):
        assert label in brokers


TRIED: list[str] = []


@contextlib.contextmanager
def nowhere() -> Iterator[str]:
    TRIED.append("postgresql")
    raise RuntimeError("no PostgreSQL here: start one at 127.0.0.1:5432")
    yield ""  # pragma: no cover


def test_a_broker_without_a_server_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """The run goes on without the configuration, and RESULTS.md says why."""
    from bench import report
    from bench.harness import Bench, parse_options
    from bench.servers import Servers, Unavailable

    options = parse_options(
        ["--configs", "flask-tasks-postgresql,flask-tasks-sqlite", "--out", str(tmp_path)]
    )
    with contextlib.ExitStack() as stack:
        servers = Servers(stack, {"postgresql": nowhere})
        bench: Any = Bench.__new__(Bench)  # the selection alone: no Redis needed
        bench.options, bench.servers = options, servers
        bench.results = {"configs": {name: {} for name in options.configs}, "skipped": {}}
        assert bench.available() == ["flask-tasks-sqlite"]
        with pytest.raises(Unavailable, match="no PostgreSQL here"):
            servers.require("postgresql")
    assert TRIED == ["postgresql"]  # remembered, not tried again
    reason = bench.results["skipped"]["flask-tasks-postgresql"]
    assert reason == "postgresql: no PostgreSQL here: start one at 127.0.0.1:5432"
    assert list(bench.results["configs"]) == ["flask-tasks-sqlite"]

    results = {
        "meta": {"cores": 2, "settings": {"n": 20, "roundtrips": 10}},
        "configs": {"flask-tasks-sqlite": {"drain": [100.0], "enqueue": [1000.0]}},
        "skipped": bench.results["skipped"],
    }
    brokers = report.brokers_section(report.View(results))
    assert (
        f"PostgreSQL (messages and results): not measured (flask-tasks-postgresql skipped: {reason})."
        in brokers
    )
    assert f"- flask-tasks-postgresql: {reason}" in report.settings_section(report.View(results))

"""The scaling benchmark (``python -m bench.scaling``) on a tiny N, so that it cannot rot.

One and two worker processes, 50 tasks per row, one repetition. The Cluster rows run when
this checkout has the ``redis+cluster://`` broker and its server starter, and are skipped
with the reason in SCALING.md otherwise.
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
def test_scaling_benchmark_runs_on_a_tiny_n(tmp_path: Path) -> None:
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scaling",
            "--workers",
            "1,2",
            "--n",
            "50",
            "--repeat",
            "1",
            "--out",
            str(tmp_path),
            "--logs",
            str(tmp_path / "logs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert time.monotonic() - started < 120

    results = json.loads((tmp_path / "scaling.json").read_text())
    assert results["errors"] == []
    targets = ["redis"] + ([] if "cluster" in results["skipped"] else ["cluster"])
    assert [(row["target"], row["workers"]) for row in results["summary"]] == [
        (target, workers) for target in targets for workers in (1, 2)
    ]
    for row in results["rows"]:
        assert row["tasks"] == 50
        assert row["rate"] > 0 and row["seconds"] > 0
        assert row["server_cpu_us"] > 0 and row["server_busy"] > 0
        assert row["worker_cpu_us"] >= 0
    report = (tmp_path / "SCALING.md").read_text()
    for heading in ("## Machine", "## Where one Redis saturates", "## One Redis"):
        assert heading in report
    assert "**This machine has" in report and "measures the machine, not Redis" in report
    assert "| 1 | **" in report and "| 2 | **" in report
    if "cluster" in results["skipped"]:
        assert "redis+cluster://" in results["skipped"]["cluster"]
        assert f"Not measured: {results['skipped']['cluster']}" in report


def test_bad_options_are_refused_with_the_reason() -> None:
    from bench.scaling import parse_options

    for argv, message in (
        (["--workers", "1,two"], "--workers takes numbers"),
        (["--workers", "0"], "must be positive"),
        (["--targets", "redis,mongo"], "--targets takes redis and/or cluster"),
    ):
        completed = subprocess.run(
            [sys.executable, "-m", "bench.scaling", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert parse_options(["--workers", "4,1"]).workers == [4, 1]


def test_a_failing_row_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import scaling, scaling_report

    FIGURES = {"rate": 1.0, "server_cpu_us": 1.0, "server_busy": 0.1}
    options = scaling.parse_options(
        ["--workers", "1,2", "--n", "1", "--repeat", "1", "--targets", "redis"]
    )
    run = scaling.Scaling(options, REPO)

    def row(target: scaling.Target, count: int, rep: int) -> dict[str, object]:
        if count == 2:
            raise RuntimeError("2 workers did not start")
        return {"target": target.name, "workers": count, "rep": rep, **FIGURES}

    monkeypatch.setattr(run, "row", row)
    run.run()
    assert run.results["rows"] == [{"target": "redis", "workers": 1, "rep": 0, **FIGURES}]
    assert run.results["errors"] == [
        "redis, 2 worker(s), rep 1: RuntimeError('2 workers did not start')"
    ]
    lines = scaling_report.render(
        {
            **run.results,
            "summary": [],
            "meta": {
                "date": "today",
                "seconds": 1,
                "cpu": "cpu",
                "cores": 2,
                "memory_gib": 1,
                "platform": "linux",
                "versions": {},
                "commit": "abc",
                "dirty": False,
                "code_digest": "d",
                "code_changed_during_run": False,
                "settings": {"n": 1, "repeat": 1, "workers": [1, 2]},
            },
        }
    )
    assert "## Rows that failed\n\n- redis, 2 worker(s), rep 1: RuntimeError(" in lines

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

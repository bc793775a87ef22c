"""``flask worker`` on the command line: help, option checking, start-up failures, burst.

Every test runs the real ``flask`` command in a subprocess (bounded by a timeout).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from process_helpers import WorkerSetup, proc_app, run_flask
from redis_server import free_port

pytestmark = pytest.mark.slow


def test_help_lists_the_options(setup: WorkerSetup, tmp_path: Path) -> None:
    done = run_flask("worker", "--help", env=setup.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for option in (
        "-c, --concurrency",
        "-P, --pool",
        "-Q, --queues",
        "--prefetch",
        "-l, --loglevel",
        "-n, --hostname",
        "--max-tasks-per-child",
        "--burst",
    ):
        assert option in done.stdout
    for pool in ("prefork", "threads", "solo"):
        assert pool in done.stdout
    assert "worker" in run_flask("--help", env=setup.env(), cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["-c", "0"], "Invalid value for '-c' / '--concurrency'"),
        (["-c", "many"], "Invalid value for '-c' / '--concurrency'"),
        (["-P", "nope"], "Invalid value for '-P' / '--pool'"),
        (["-Q", ""], "Invalid value for '-Q' / '--queues'"),
        (["-Q", " , "], "Invalid value for '-Q' / '--queues'"),
        (["--prefetch", "-1"], "Invalid value for '--prefetch'"),
        (["-l", "chatty"], "Invalid value for '-l' / '--loglevel'"),
        (["--max-tasks-per-child", "0"], "Invalid value for '--max-tasks-per-child'"),
    ],
)
def test_bad_option_values_are_usage_errors(
    setup: WorkerSetup, tmp_path: Path, args: list[str], complaint: str
) -> None:
    done = run_flask("worker", *args, env=setup.env(), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert "ready: consuming" not in done.stderr


def test_unreachable_broker_names_the_url_without_password(
    setup: WorkerSetup, tmp_path: Path
) -> None:
    port = free_port()
    env = setup.env(PROC_BROKER_URL=f"redis://:secret@127.0.0.1:{port}/0")
    done = run_flask("worker", "-P", "solo", env=env, cwd=tmp_path, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "Error:" in done.stderr
    assert "secret" not in output
    assert "Traceback" not in output


def test_unopenable_sqlite_broker_fails_with_the_path(setup: WorkerSetup, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/tasks.sqlite3"
    done = run_flask("worker", "-P", "solo", env=setup.env(PROC_BROKER_URL=url), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Error:" in done.stderr and str(blocker) in done.stderr
    assert "Traceback" not in done.stderr


def test_burst_runs_what_is_queued_and_exits(setup: WorkerSetup, tmp_path: Path) -> None:
    app = setup.app()
    with app.app_context():
        results = [proc_app.add.delay(index, index) for index in range(5)]
    done = run_flask("worker", "--burst", env=setup.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with app.app_context():
        assert [result.get(timeout=1) for result in results] == [0, 2, 4, 6, 8]
    assert done.stderr.count("succeeded in") == 5
    assert "pool:        solo (concurrency 1," in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "complaint", "status"),
    [
        (
            ["-P", "prefork"],
            {"PROC_BROKER_URL": "memory://"},
            "The memory:// broker lives in one process",
            2,  # a configuration error
        ),
        (
            ["-P", "prefork"],
            {"FLASK_TASKS_START_METHOD": "bogus"},
            "FLASK_TASKS_START_METHOD is 'bogus'; this system offers",
            1,
        ),
    ],
)
def test_unusable_pools_are_refused_with_a_reason(
    setup: WorkerSetup,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    complaint: str,
    status: int,
) -> None:
    done = run_flask("worker", *args, env=setup.env(**env), cwd=tmp_path)
    assert done.returncode == status, done.stderr
    assert f"Error: {complaint}" in done.stderr
    assert "Traceback" not in done.stderr

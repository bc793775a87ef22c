"""Worker control with real ``flask worker`` processes: time limits that interrupt
blocking calls, the gevent and eventlet pools, autoscaling, memory recycling,
``flask tasks status`` and ``rate-limit``, RECEIVED records, and the operator papercuts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from process_helpers import WorkerProcesses, WorkerSetup, proc_app, run_flask, wait_until

from flask_tasks import states
from flask_tasks.exceptions import ImproperlyConfigured, TimeLimitExceeded
from flask_tasks.worker import green

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups"),
]

RESULT_WAIT = 15.0


# -- time limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_soft_limit_interrupts_sleep_and_socket_read(
    app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    workers.start("-P", pool, "-c", "2")
    sleeping = proc_app.soft_in_sleep.delay()
    reading = proc_app.soft_in_socket_read.delay()
    for result in (sleeping, reading):
        elapsed = result.get(timeout=RESULT_WAIT)
        assert 0.9 <= elapsed < 1.5, (result, elapsed)


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads", "gevent", "eventlet"])
def test_hard_limit_ends_a_blocked_task_and_the_worker_goes_on(
    app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    worker = workers.start("-P", pool, "-c", "1", "--prefetch", "0", ready=True)
    started = time.monotonic()
    result = proc_app.hard_in_sleep.delay()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=RESULT_WAIT)
    assert time.monotonic() - started < 10
    assert proc_app.add.delay(2, 2).get(timeout=RESULT_WAIT) == 4
    assert worker.returncode() is None
    if pool == "threads":
        worker.wait_for("its thread is abandoned and replaced")


# -- gevent and eventlet -------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_pool_runs_500_sleeping_tasks_at_once(
    app: Flask, workers: WorkerProcesses, pool: str
) -> None:
    worker = workers.start("-P", pool, "-c", "500")
    assert f"pool:        {pool} (concurrency 500" in worker.output
    started = time.monotonic()
    results = [proc_app.nap.delay(1) for _ in range(500)]
    pids = {result.get(timeout=RESULT_WAIT) for result in results}
    assert time.monotonic() - started < 5
    assert pids == {worker.pid}  # one process: greenlets, not children


def test_missing_green_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(green.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'Flask-Tasks\[eventlet\]'"):
        green.require("eventlet")


# -- autoscale and memory ------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "unit"), [("threads", "threads"), ("prefork", "children")])
def test_autoscale_grows_under_a_backlog_and_shrinks_when_idle(
    app: Flask, workers: WorkerProcesses, pool: str, unit: str
) -> None:
    worker = workers.start(
        "-P", pool, "--autoscale", "4,1", "--prefetch", "0", FLASK_TASKS_AUTOSCALE_KEEPALIVE="1"
    )
    results = [proc_app.nap.delay(1.5) for _ in range(16)]
    worker.wait_for(f"Autoscale: 3 -> 4 {unit}", timeout=RESULT_WAIT)
    for result in results:
        result.get(timeout=RESULT_WAIT * 2)
    worker.wait_for(f"Autoscale: 2 -> 1 {unit}", timeout=RESULT_WAIT)
    assert f"Autoscale: 4 -> 5 {unit}" not in worker.output


def test_prefork_child_over_max_memory_is_replaced(app: Flask, workers: WorkerProcesses) -> None:
    worker = workers.start("-P", "prefork", "-c", "1", "--max-memory-per-child", "200000")
    first = proc_app.hoard.delay(250_000).get(timeout=RESULT_WAIT)
    worker.wait_for("over --max-memory-per-child 200000 KiB; restarting")
    second = proc_app.pid.delay().get(timeout=RESULT_WAIT)
    assert second != first
    assert worker.returncode() is None


def test_threads_worker_over_max_memory_restarts_its_process(
    app: Flask, workers: WorkerProcesses
) -> None:
    worker = workers.start("-P", "threads", "-c", "1", "--max-memory-per-child", "200000")
    assert proc_app.hoard.delay(250_000).get(timeout=RESULT_WAIT) == worker.pid
    worker.wait_for("Restarting the worker process")
    worker.wait_ready(count=2)
    assert proc_app.add.delay(1, 1).get(timeout=RESULT_WAIT) == 2
    assert worker.returncode() is None


# -- rate-limit and status -----------------------------------------------------------------


def test_rate_limit_command_reaches_running_workers(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start("-P", "threads", "-c", "4")
    done = run_flask("tasks", "rate-limit", "proc.record_run", "2/s", env=setup.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    time.sleep(2)  # the documented bound: workers read overrides every second
    started = time.time()
    results = [proc_app.record_run.delay(str(index), log="rated") for index in range(6)]
    for result in results:
        result.get(timeout=RESULT_WAIT)
    times = sorted(line["time"] for line in setup.records("rated"))
    # At most 2 start in each of the limiter's 1 s windows, so the 3rd cannot start before
    # the window after the one the test began in, nor the 5th before the one after that.
    # (A run records its time a little after it was let through, so counts per window of
    # recorded times would blur on a busy machine; these bounds do not.)
    first_window = int(started)
    assert times[2] >= first_window + 1 and times[4] >= first_window + 2, times
    bad = run_flask("tasks", "rate-limit", "proc.record_run", "fast", env=setup.env(), cwd=tmp_path)
    assert bad.returncode == 2
    assert "'fast' is not a rate" in bad.stderr
    unknown = run_flask("tasks", "rate-limit", "proc.nope", "1/s", env=setup.env(), cwd=tmp_path)
    assert unknown.returncode == 1
    assert "Task 'proc.nope' is not registered" in unknown.stderr


def test_status_shows_live_workers_and_their_running_tasks(
    setup: WorkerSetup, app: Flask, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start("-P", "threads", "-c", "2", "-n", "one@test")
    workers.start("-P", "prefork", "-c", "2", "-n", "two@test")
    running = proc_app.sleep_then_return.delay(20, "x")
    wait_until(lambda: setup.records("sleepers"), what="the task to start")

    def report() -> dict:
        done = run_flask("tasks", "status", "--json", env=setup.env(), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def shows_the_task() -> dict:
        shown = report()
        ids = [task["id"] for worker in shown["workers"] for task in worker["running"]]
        return shown if running.id in ids else {}

    shown = wait_until(shows_the_task, timeout=5, interval=0.3, what="status to list the task")
    by_host = {worker["hostname"]: worker for worker in shown["workers"]}
    assert set(by_host) == {"one@test", "two@test"}
    assert (by_host["one@test"]["pool"], by_host["one@test"]["concurrency"]) == ("threads", 2)
    assert (by_host["two@test"]["pool"], by_host["two@test"]["concurrency"]) == ("prefork", 2)
    assert all(worker["heartbeat_age"] < 15 for worker in shown["workers"])
    assert shown["queues"]["default"]["reserved"] >= 1
    text = run_flask("tasks", "status", env=setup.env(), cwd=tmp_path)
    assert "2 live worker(s)" in text.stdout
    assert "proc.sleep_then_return" in text.stdout


def test_status_exits_1_when_no_worker_consumes_a_waiting_queue(
    setup: WorkerSetup, app: Flask, tmp_path: Path
) -> None:
    proc_app.add.apply_async((1, 2), queue="nobody")
    proc_app.add.apply_async((1, 2), countdown=60)
    done = run_flask("tasks", "status", "-Q", "nobody", env=setup.env(), cwd=tmp_path)
    assert done.returncode == 1
    assert "Queue 'nobody' has 1 ready message(s) and no live worker consumes it" in done.stderr
    shown = json.loads(
        run_flask("tasks", "status", "--json", "-Q", "nobody", env=setup.env(), cwd=tmp_path).stdout
    )
    assert shown["queues"]["default"] == {"ready": 0, "delayed": 1, "reserved": 0}
    assert shown["unconsumed"] == ["nobody"]


# -- records -------------------------------------------------------------------------------


def test_received_is_recorded_and_started_carries_pid_and_hostname(
    app: Flask, workers: WorkerProcesses
) -> None:
    blocker = proc_app.tracked_nap.delay(3)
    waiting = proc_app.tracked_nap.delay(0)
    untracked = proc_app.sleep_then_return.delay(0, "x")
    worker = workers.start("-P", "solo", "-n", "recorder@test", "--prefetch", "4")
    wait_until(lambda: blocker.state == states.STARTED, what="STARTED")
    assert blocker.info == {"pid": worker.pid, "hostname": "recorder@test"}
    assert waiting.state == states.RECEIVED  # reserved with it, waiting behind it
    assert waiting.info == {"hostname": "recorder@test"}
    assert untracked.state == states.PENDING  # no track_started: no extra writes
    assert waiting.get(timeout=RESULT_WAIT) == worker.pid
    assert untracked.get(timeout=RESULT_WAIT) == "x"


# -- papercuts -----------------------------------------------------------------------------


def test_prefork_logs_one_ready_line(workers: WorkerProcesses) -> None:
    worker = workers.start("-P", "prefork", "-c", "3")
    time.sleep(0.5)
    assert worker.output.count("ready: consuming") == 1
    assert "(prefork, 3 children)" in worker.output


def test_purge_names_an_unknown_queue(setup: WorkerSetup, tmp_path: Path) -> None:
    done = run_flask("tasks", "purge", "-f", "no-such-queue", env=setup.env(), cwd=tmp_path)
    assert done.returncode == 1
    assert "No queue 'no-such-queue' is known to this app (it names default" in done.stderr


def test_configuration_error_is_one_line_with_exit_status_2(
    setup: WorkerSetup, tmp_path: Path
) -> None:
    env = setup.env(PROC_TASKS_ROUTES=json.dumps({"*add": 5}))
    done = run_flask("worker", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: TASKS_ROUTES['*add'] must be a queue name or a dict with 'queue' and/or "
        "'priority', got 5"
    ]


@pytest.mark.parametrize("command", [["worker"], ["tasks", "status"]])
def test_commands_without_an_app_say_how_to_point_flask_at_it(
    tmp_path: Path, command: list[str]
) -> None:
    import os
    import subprocess

    env = {key: value for key, value in os.environ.items() if key != "FLASK_APP"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "No such command" not in done.stderr
    assert f"flask --app yourapp {' '.join(command)}" in done.stderr

"""Run real ``flask worker`` processes for tests, with bounded waits everywhere.

A worker's stdout and stderr go to a log file (no pipes, so no pipe deadlock and nothing
left open); waits poll that file and the process. Workers start in a session of their
own, so a test can signal or kill the whole process group (prefork children included),
and :class:`WorkerProcesses` kills whatever is left when the test ends.

Also a pytest plugin (``pytest_plugins`` in ``conftest.py``): the fixtures ``setup``,
``workers`` and ``app`` of the process tests. A module runs them on another broker by
overriding ``worker_broker_url`` (and ``worker_result_backend``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from flask import Flask

APPS_DIR = Path(__file__).parent / "apps"
if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))

import proc_app  # noqa: E402  (the app the worker processes load, by the same name)

#: Default upper bound of every wait, in seconds.
WAIT = 15.0
#: The line a worker logs once it consumes (once, for all its prefork children).
READY = re.compile(r"ready: consuming ")
#: The broker every process test runs on (``FLASK_TASKS_PROCESS_BROKER`` may pick
#: ``sqlite``); the core flows run on each of ``BROKERS``.
PRIMARY_BROKER = os.environ.get("FLASK_TASKS_PROCESS_BROKER", "redis")
BROKERS = ["redis", "sqlite"]
POSIX = os.name == "posix"


def wait_until(
    condition: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class WorkerSetup:
    """Where one test's workers and its own app meet: broker, key prefix, record dir."""

    broker_url: str
    record_dir: Path
    key_prefix: str = field(default_factory=lambda: f"proc-{uuid.uuid4().hex[:10]}")
    visibility_timeout: float = 30.0
    #: ``TASKS_RESULT_BACKEND`` (None: the broker keeps the results).
    result_backend: Optional[str] = None
    apps: list[Flask] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a worker process of this setup."""
        env = dict(os.environ)
        env.update(
            PROC_BROKER_URL=self.broker_url,
            PROC_KEY_PREFIX=self.key_prefix,
            PROC_VISIBILITY_TIMEOUT=str(self.visibility_timeout),
            PROC_RECORD_DIR=str(self.record_dir),
            PYTHONPATH=os.pathsep.join([str(APPS_DIR), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            PYTHONUNBUFFERED="1",
        )
        env.pop("FLASK_APP", None)
        env.pop("PROC_RESULT_BACKEND", None)
        if self.result_backend:
            env["PROC_RESULT_BACKEND"] = self.result_backend
        env.update(extra)
        return env

    def app(self, **config: Any) -> Flask:
        """The test's side of the same app (to send tasks and read results)."""
        app = proc_app.create_app(
            {
                "TASKS_BROKER_URL": self.broker_url,
                "TASKS_KEY_PREFIX": self.key_prefix,
                "TASKS_VISIBILITY_TIMEOUT": self.visibility_timeout,
                "PROC_RECORD_DIR": str(self.record_dir),
                "TASKS_RESULT_BACKEND": self.result_backend,
                **config,
            }
        )
        self.apps.append(app)
        return app

    def records(self, name: str) -> list[dict[str, Any]]:
        return proc_app.read_records(self.record_dir, name)

    def close(self) -> None:
        for app in self.apps:
            app.extensions["tasks"].close()
        self.apps.clear()


def flask_command(*args: str) -> list[str]:
    """``flask --app proc_app <args>`` with this interpreter."""
    return [sys.executable, "-m", "flask", "--app", "proc_app", *args]


class WorkerProcess:
    """One ``flask worker`` process, its output in ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.args = args
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                flask_command("worker", *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.process.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def returncode(self) -> Optional[int]:
        return self.process.poll()

    def describe(self) -> str:
        return f"worker {self.args} (pid {self.pid}, exit {self.returncode()}):\n{self.output}"

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = WAIT, count: int = 1
    ) -> str:
        """Wait until ``pattern`` (regex) occurs ``count`` times in the output; returns the
        output. Fails at once if the process exits first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            output = self.output
            if len(regex.findall(output)) >= count:
                return output
            exited = self.returncode() is not None
            if exited or time.monotonic() > deadline:
                output = self.output  # the last words of an exited process
                if len(regex.findall(output)) >= count:
                    return output
                reason = "the process exited" if exited else f"{timeout}s passed"
                raise AssertionError(
                    f"{reason} before {regex.pattern!r} appeared {count} time(s) in "
                    f"{self.describe()}"
                )
            time.sleep(0.02)

    def wait_ready(self, count: int = 1, timeout: float = WAIT) -> str:
        """Wait for the ready line of ``count`` consumers (prefork: one per child)."""
        return self.wait_for(READY, timeout, count)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's main process only."""
        if self.returncode() is None:
            os.kill(self.pid, signum)

    def kill_group(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to the whole process group (prefork children too)."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit code; AssertionError (with the output) if it does not exit in time."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout}s: {self.describe()}") from None

    def group_alive(self) -> bool:
        """True while a live (not zombie) process of the worker's group exists."""
        self.returncode()  # reap the main process if it exited
        if not Path("/proc").is_dir():  # not Linux: zombies count as alive here
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return False
            return True
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == self.pid and fields[0] != "Z":
                return True
        return False

    def stop(self, timeout: float = 5.0, graceful: bool = True) -> Optional[int]:
        """Warm stop (unless not ``graceful``), then kill the group if it does not end in
        time; never raises."""
        if graceful and self.returncode() is None:
            self.kill_group(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill_group(signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        return self.returncode()


class WorkerProcesses:
    """Starts workers for one test and cleans every one of them up."""

    def __init__(self, setup: WorkerSetup, workdir: Path) -> None:
        self.setup = setup
        self.workdir = workdir
        self.started: list[WorkerProcess] = []

    def start(
        self, *args: str, ready: bool = True, ready_count: int = 1, **env: str
    ) -> WorkerProcess:
        """Start ``flask worker <args>``; by default wait until it consumes."""
        log_path = self.workdir / f"worker-{len(self.started) + 1}.log"
        worker = WorkerProcess(list(args), self.setup.env(**env), log_path, self.workdir)
        self.started.append(worker)
        if ready:
            worker.wait_ready(ready_count)
        return worker

    def cleanup(self) -> None:
        """Kill every worker of the test at once (tests of shutdown stop theirs first)."""
        for worker in self.started:
            worker.stop(graceful=False)


@contextmanager
def worker_processes(setup: WorkerSetup, workdir: Path) -> Iterator[WorkerProcesses]:
    workers = WorkerProcesses(setup, workdir)
    try:
        yield workers
    finally:
        workers.cleanup()


def _kill_tree(process: subprocess.Popen[str]) -> None:
    if POSIX:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    elif process.poll() is None:
        process.kill()


def run_flask(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = WAIT
) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app proc_app <args>`` to completion and capture its output; past
    ``timeout`` its whole process group is killed and AssertionError raised."""
    with subprocess.Popen(
        flask_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=POSIX,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            stdout, stderr = process.communicate()
            raise AssertionError(
                f"flask {' '.join(args)} did not exit within {timeout}s:\n{stdout}{stderr}"
            ) from None
        finally:
            _kill_tree(process)  # prefork children of a parent that exited, if any
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def broker_url(kind: str, redis_url: Callable[[], str], directory: Path) -> str:
    """A broker URL of ``kind``: the session's redis-server, or a fresh SQLite file."""
    if kind == "redis":
        return redis_url()
    if kind == "sqlite":
        return f"sqlite:///{directory / 'tasks.sqlite3'}"
    raise ValueError(f"no process tests for broker {kind!r}")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def worker_broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The broker of the test's workers: the primary one (``redis_url`` or a SQLite file)."""
    return broker_url(PRIMARY_BROKER, lambda: request.getfixturevalue("redis_url"), tmp_path)


@pytest.fixture
def worker_result_backend() -> Optional[str]:
    """``TASKS_RESULT_BACKEND`` of the test's workers (None: the broker keeps results)."""
    return None


@pytest.fixture
def setup(
    worker_broker_url: str, worker_result_backend: Optional[str], tmp_path: Path
) -> Iterator[WorkerSetup]:
    """A fresh namespace (key prefix or SQLite file) on ``worker_broker_url``."""
    records = tmp_path / "records"
    records.mkdir()
    worker_setup = WorkerSetup(worker_broker_url, records, result_backend=worker_result_backend)
    yield worker_setup
    worker_setup.close()


@pytest.fixture
def workers(setup: WorkerSetup, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Starts the test's workers; kills whatever is left of them when the test ends."""
    with worker_processes(setup, tmp_path) as started:
        yield started


@pytest.fixture
def app(setup: WorkerSetup) -> Iterator[Flask]:
    """The test's side of the app, with an app context pushed."""
    test_app = setup.app()
    with test_app.app_context():
        yield test_app

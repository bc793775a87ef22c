"""Real ``flask beat`` and ``flask worker -B`` processes on Redis and SQLite."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_helpers import (
    BROKERS,
    POSIX,
    WorkerSetup,
    broker_url,
    flask_command,
    wait_until,
    worker_processes,
)

from flask_tasks.message import Message

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSIX, reason="process groups and signals are POSIX here"),
]


@pytest.fixture(params=BROKERS)
def worker_broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_client")
    return broker_url(request.param, lambda: request.getfixturevalue("redis_url"), tmp_path)


class Beats:
    """``flask beat`` processes of one test, all killed at the end."""

    def __init__(self, setup: WorkerSetup, workdir: Path) -> None:
        self.setup = setup
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"beat-{len(self.processes) + 1}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            flask_command("beat", "--max-interval", "0.1"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.setup.env(PROC_BEAT_EVERY="1"),
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def output(self, index: int) -> str:
        return (self.workdir / f"beat-{index + 1}.log").read_text(errors="replace")

    def wait_started(self) -> None:
        for index in range(len(self.processes)):
            wait_until(lambda i=index: "next due" in self.output(i), what=f"beat {index} start")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def beats(setup: WorkerSetup, tmp_path: Path) -> Iterator[Beats]:
    started = Beats(setup, tmp_path)
    yield started
    started.stop()


def beat_dues(setup: WorkerSetup) -> list[str]:
    """The due times of every message beat sent so far (taken off the queue)."""
    app = setup.app() if not setup.apps else setup.apps[0]
    runtime = app.extensions["tasks"]
    dues = []
    while batch := runtime.transport.reserve(["default"], 100, 60):
        for delivery in batch:
            message = Message.from_dict(runtime.codec.decode(delivery.body))
            dues.append(message.headers["beat_due"])
        runtime.transport.ack([delivery.id for delivery in batch])
    return dues


def test_three_beats_send_each_second_once(setup, beats):
    for _ in range(3):
        beats.start()
    beats.wait_started()
    beat_dues(setup)  # what was sent while they started
    time.sleep(10)
    dues = beat_dues(setup)
    assert 9 <= len(dues) <= 11, dues
    assert len(dues) == len(set(dues)), "a due time was sent twice"


def test_a_killed_beat_leaves_no_gap_and_no_double(setup, beats):
    first, _second = beats.start(), beats.start()
    beats.wait_started()
    beat_dues(setup)
    time.sleep(3)
    first.send_signal(signal.SIGKILL)
    time.sleep(5)
    dues = sorted(beat_dues(setup))
    assert 7 <= len(dues) <= 9, dues
    assert len(dues) == len(set(dues))
    stamps = [time.mktime(time.strptime(due[:19], "%Y-%m-%dT%H:%M:%S")) for due in dues]
    assert all(b - a == 1 for a, b in zip(stamps, stamps[1:])), dues  # no gap


def test_worker_with_beat_runs_the_schedule(setup, tmp_path):
    with worker_processes(setup, tmp_path) as workers:
        worker = workers.start("-P", "solo", "-B", PROC_BEAT_EVERY="1")
        wait_until(lambda: len(setup.records("beat")) >= 2, timeout=15, what="beat runs")
        worker.stop()
    labels = {record["label"] for record in setup.records("beat")}
    assert labels == {"beat"}

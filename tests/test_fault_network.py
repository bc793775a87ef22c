"""Faults between real ``flask worker`` processes and Redis: the server killed (SIGKILL)
and started again from its append-only file, and a connection that silently stops
forwarding. Each test has its own redis-server (and proxy)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_helpers import WorkerSetup, proc_app, wait_until, worker_processes
from redis_server import RestartableRedis
from stall_proxy import StallingProxy

from flask_tasks import OperationalError, states

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: Tasks published while Redis is killed and restarted.
RESTART_TASKS = 600
#: The stalled worker's redis-py socket timeout (s).
SOCKET_TIMEOUT = 1.0


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis", durable=True)
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


def _setup(tmp_path: Path, url: str, lease: float) -> WorkerSetup:
    records = tmp_path / "records"
    records.mkdir()
    return WorkerSetup(url, records, visibility_timeout=lease)


def test_redis_killed_and_restarted_with_aof_always_loses_nothing(
    durable_redis: RestartableRedis, tmp_path: Path
) -> None:
    setup = _setup(tmp_path, durable_redis.url, 2.0)
    app = setup.app()
    published = threading.Event()
    refusals: list[str] = []

    def publish() -> None:
        # A publish that raised is sent again under the same id: the caller's part of
        # at-least-once. One that returned must never be lost.
        with app.app_context():
            for index in range(RESTART_TASKS):
                deadline = time.monotonic() + 30
                while True:
                    try:
                        proc_app.counted.apply_async((index,), task_id=f"restart-{index}")
                        break
                    except OperationalError as error:
                        refusals.append(str(error))
                        assert time.monotonic() < deadline, error
                        time.sleep(0.1)
                time.sleep(0.004)
        published.set()

    try:
        with worker_processes(setup, tmp_path) as workers:
            for name in ("one", "two"):
                workers.start("-P", "prefork", "-c", "2", "-n", f"{name}@%h")
            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            wait_until(
                lambda: len(setup.records("counted")) >= RESTART_TASKS // 4,
                timeout=30,
                what="a quarter of the tasks to run",
            )
            durable_redis.stop()  # SIGKILL, mid-run
            time.sleep(1.0)
            durable_redis.start()  # same port, same directory: the AOF is replayed
            publisher.join(60)
            assert published.is_set(), "the publisher did not finish"
            with app.app_context():
                results = [
                    proc_app.counted.AsyncResult(f"restart-{index}")
                    for index in range(RESTART_TASKS)
                ]
                wait_until(
                    lambda: all(r.state == states.SUCCESS for r in results[-20:]),
                    timeout=60,
                    interval=0.2,
                    what="the last tasks",
                )
                unfinished = [r.id for r in results if r.state != states.SUCCESS]
            runs = Counter(line["index"] for line in setup.records("counted"))
            lost = [index for index in range(RESTART_TASKS) if runs[index] == 0]
            assert lost == [] and unfinished == []
            assert all(worker.returncode() is None for worker in workers.started)
    finally:
        setup.close()


def test_a_silently_stalled_connection_neither_hangs_the_worker_nor_wins(
    tmp_path: Path,
) -> None:
    server = RestartableRedis(tmp_path)
    server.start()
    proxy = StallingProxy(server.port)
    setup = _setup(tmp_path, server.url, 1.0)
    try:
        with worker_processes(setup, tmp_path) as workers:
            app = setup.app()
            stalled = workers.start(
                "-P",
                "solo",
                "-n",
                "stalled@%h",
                PROC_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/0",
                PROC_BROKER_OPTIONS=json.dumps({"socket_timeout": SOCKET_TIMEOUT}),
            )
            with app.app_context():
                result = proc_app.slow_first_pid.delay(5.0)
                wait_until(lambda: setup.records("slow_first"), what="the first run to start")
                stalled_at = time.monotonic()
                assert proxy.stall() > 0
                direct = workers.start("-P", "solo", "-n", "direct@%h")
                # No hang: its lease renewal gives up after the socket timeout.
                stalled.wait_for("Heartbeat failed: .*[Tt]imeout", timeout=10)
                assert time.monotonic() - stalled_at < SOCKET_TIMEOUT + 3
                # The lease ran out, so the direct worker took the task over and finished.
                taken_over_by = result.get(timeout=15)
                assert taken_over_by != stalled.pid
                proxy.resume()  # what the stalled worker sent arrives late
                output = stalled.wait_for(r"Stale outcome of \S+ refused", timeout=15)
                assert result.id in output.split("Stale outcome of", 1)[1]
                time.sleep(0.5)
                assert result.get(timeout=5) == taken_over_by  # fenced off: nothing changed
                runs = [r for r in setup.records("slow_first") if r["event"] == "end"]
                assert sorted(r["first"] for r in runs) == [False, True]  # both ran it
                assert proc_app.add.delay(2, 3).get(timeout=10) == 5
            assert stalled.returncode() is None and direct.returncode() is None
    finally:
        setup.close()
        proxy.close()
        server.stop()

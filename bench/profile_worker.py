"""Where Flask-Tasks spends its time per task: micro-costs, a cProfile of a worker, py-spy.

    python -m bench.profile_worker [--n 5000] [--py-spy] [--out bench/PROFILE.md]

Starts its own throwaway redis-server. Three parts:

1. Micro-costs, in µs per call (best of 5 rounds): each step of ``delay()`` and of a worker's
   processing of one message, with a stub broker (Python only) and with Redis.
2. cProfile of one solo consumer draining N queued tasks on Redis (burst mode), with the
   prefetch a prefork child uses by default: the functions that cost most, per task.
3. With ``--py-spy``: a sampling profile of a real ``flask worker -P prefork -c 2`` child
   while it drains, written to ``bench/profile.svg`` (needs py-spy and ptrace rights).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from flask import Flask

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from redis_server import redis_server  # noqa: E402 - tests/redis_server.py, reused


def per_call_us(function: Callable[[], Any], calls: int = 2000, rounds: int = 5) -> float:
    """Best-of-``rounds`` mean time of ``function()``, µs."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


class StubBroker:
    """Takes the broker's place with no I/O: publishing and settling do nothing, reserve
    hands out one prepared delivery. Measures the Python side alone."""

    kind = "stub"
    url = "stub://"
    survives_fork = True
    counts_lost_deliveries = True
    wait_sees_earlier_work = False

    def __init__(self, delivery: Any = None) -> None:
        self.delivery = delivery

    def publish(self, envelopes: Any) -> None:
        pass

    def publish_with_records(self, envelopes: Any, records: Any, record_ttl: float) -> None:
        pass

    def reserve(self, queues: Any, count: int, lease: float) -> list[Any]:
        return [self.delivery]

    def revoked(self, ids: Any) -> set[str]:
        return set()

    def ack(self, message_ids: Any) -> list[str]:
        return []

    def ack_with_records(self, settlements: Any, record_ttl: float) -> list[str]:
        return []

    def ack_and_reserve(self, settlements: Any, record_ttl: float, *reserve: Any) -> Any:
        return [], self.reserve(*reserve)

    def set_result(self, task_id: str, record: bytes, ttl: float) -> None:
        pass

    def set_results_fenced(self, records: Any, ttl: float) -> list[str]:
        return []

    def close(self) -> None:
        pass


class StubConnections:
    """A runtime's ``connections`` with the stub broker as transport, store and joint broker."""

    def __init__(self, broker: StubBroker) -> None:
        self.transport = self.store = self.broker = self.joint = broker
        self.broker_url = broker.url

    def close(self) -> None:
        pass


@contextmanager
def stubbed(runtime: Any, delivery: Any = None) -> Iterator[None]:
    """``runtime`` (and its producer) on a :class:`StubBroker` while the block runs."""
    real = runtime.connections
    runtime.connections = runtime.producer.connections = StubConnections(StubBroker(delivery))
    try:
        yield
    finally:
        runtime.connections = runtime.producer.connections = real


def _app(url: str) -> Flask:
    from bench.apps.ft_app import create_app

    return create_app(url)


def _message(runtime: Any) -> Any:
    """The message of one ``noop.delay()``, as the producer builds it."""
    return runtime.producer.message("bench.noop", (), {}, {}, runtime.options_for("bench.noop"))


def producer_costs(app: Flask, url: str) -> list[tuple[str, float]]:
    import redis

    from bench.apps.ft_app import noop
    from flask_tasks import group
    from flask_tasks.records import Record

    runtime = app.extensions["tasks"]
    producer = runtime.producer
    ping = redis.Redis.from_url(url)
    with app.app_context():
        message = _message(runtime)
        as_dict = message.to_dict()
        body = producer.encode(message)
        record = producer.pending_record(message)

        def publish() -> None:
            envelope = _envelope(message.id, body)
            producer.publish_envelopes([envelope], {message.id: record})

        def group_of_1000() -> None:
            group(noop.s() for _ in range(1000)).apply_async()

        rows = [
            ("producer.message() (builds the Message)", per_call_us(lambda: _message(runtime))),
            ("Message.to_dict()", per_call_us(message.to_dict)),
            ("codec.encode(message dict)", per_call_us(lambda: runtime.codec.encode(as_dict))),
            ("producer.encode() = to_dict + encode", per_call_us(lambda: producer.encode(message))),
            (
                "Record.pending().encode() (cached by the producer per task)",
                per_call_us(lambda: Record.pending("bench.noop").encode(runtime.codec)),
            ),
            ("publish_envelopes(1 envelope + its record), Redis", per_call_us(publish)),
            ("Redis PING round trip (floor)", per_call_us(ping.ping)),
            ("delay(), Redis", per_call_us(noop.delay)),
            ("group of 1,000, per task, Redis", per_call_us(group_of_1000, calls=5) / 1000),
        ]
        with stubbed(runtime):
            rows += [
                ("delay(), stub broker (Python only)", per_call_us(noop.delay)),
                (
                    "group of 1,000, per task, stub broker (Python only)",
                    per_call_us(group_of_1000, calls=5) / 1000,
                ),
            ]
    ping.flushall()
    ping.close()
    return rows


def worker_costs(app: Flask, url: str) -> list[tuple[str, float]]:
    import redis

    from bench.apps.ft_app import noop
    from flask_tasks.brokers import Delivery
    from flask_tasks.execution import execute
    from flask_tasks.message import Message, Request
    from flask_tasks.records import Record
    from flask_tasks.worker.runner import TaskRunner

    runtime = app.extensions["tasks"]
    runner = TaskRunner(runtime, "bench@profile")
    log = logging.getLogger("flask_tasks.worker")
    log.setLevel(logging.WARNING)
    with app.app_context():
        message = _message(runtime)
    body = runtime.producer.encode(message)
    delivery = Delivery(message.id, "default", 5, body)
    request = Request(message, hostname="bench@profile")

    def push_pop() -> None:
        with app.app_context():
            pass

    def success_record() -> bytes:
        record = Record.success(None, "bench.noop", worker="bench@profile")
        return record.encode(runtime.codec)

    rows = [
        ("codec.decode(body)", per_call_us(lambda: runtime.codec.decode(body))),
        (
            "decode + Message.from_dict",
            per_call_us(lambda: Message.from_dict(runtime.codec.decode(body))),
        ),
        (
            "runner.intake.decode(delivery) (with registry check)",
            per_call_us(lambda: runner.intake.decode(delivery)),
        ),
        (
            "Request(message) (what a bound task sees)",
            per_call_us(lambda: Request(message, hostname="bench@profile")),
        ),
        ("runtime.options_for(task)", per_call_us(lambda: runtime.options_for(noop.name))),
        (
            "execute() (app context, request var, hooks)",
            per_call_us(lambda: execute(runtime, noop, request)),
        ),
        ("app.app_context() push + pop alone", per_call_us(push_pop)),
        ("Record.success().encode()", per_call_us(success_record)),
        ("logger.info() below the level (3 per task)", per_call_us(lambda: log.info("x %s", 1))),
    ]
    with stubbed(runtime, delivery):
        rows.append(
            (
                "runner.process(delivery), stub broker (Python only)",
                per_call_us(lambda: runner.process(delivery)),
            )
        )
    broker = runtime.connections.broker
    flush = redis.Redis.from_url(url)
    flush.flushall()

    def publish_only() -> None:
        broker.publish([_envelope(message.id, body)])

    def reserve_ack() -> None:
        broker.publish([_envelope(message.id, body)])
        (taken,) = broker.reserve(["default"], 1, 3600)
        broker.revoked([taken.id])
        broker.ack_with_records([(taken, b"x" * 150)], 86400)

    rows += [
        ("Redis: publish alone (to subtract from the next row)", per_call_us(publish_only)),
        ("Redis: publish + reserve(1) + revoked() + ack_with_records", per_call_us(reserve_ack)),
    ]
    flush.flushall()
    flush.close()
    return rows


def _envelope(message_id: str, body: bytes) -> Any:
    from flask_tasks.brokers import Envelope

    return Envelope(message_id, "default", body)


def profile_consumer(app: Flask, count: int) -> tuple[float, float, str]:
    """cProfile a solo consumer draining ``count`` tasks; (µs/task unprofiled, profiled, table)."""
    from bench.apps.ft_app import noop
    from flask_tasks import group
    from flask_tasks.worker import Worker
    from flask_tasks.worker.consumer import Consumer

    state = app.extensions["tasks"]
    logging.getLogger("flask_tasks").setLevel(logging.WARNING)
    prefetch = Worker(app, pool="prefork", concurrency=2).prefetch

    def drain(profiler: Any = None) -> float:
        with app.app_context():
            group(noop.s() for _ in range(count)).apply_async()
        consumer = Consumer(state, ["default"], prefetch=prefetch, burst=True, hostname="profile")
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        consumer.run()
        if profiler:
            profiler.disable()
        return (time.perf_counter() - started) / count * 1e6

    drain()  # warm up
    plain = drain()
    profiler = cProfile.Profile()
    profiled = drain(profiler)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.replace(str(REPO) + "/", "").replace(sys.prefix, "<venv>")
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        rows.append((tottime, cumtime, calls, f"{where}:{line}({function})"))
    rows.sort(reverse=True)
    lines = ["| function | calls/task | own µs/task | cumulative µs/task |", "|---|---|---|---|"]
    for tottime, cumtime, calls, name in rows[:30]:
        lines.append(
            f"| `{name}` | {calls / count:.2f} | {tottime / count * 1e6:.1f} | {cumtime / count * 1e6:.1f} |"
        )
    return plain, profiled, "\n".join(lines)


def _classify(frame: str) -> str:
    """A coarse bucket for a py-spy frame ``function (file:line)``."""
    if "redis/" in frame or "hiredis" in frame:
        return "redis-py"
    if "flask_tasks/" in frame:
        return "flask_tasks"
    if "json/" in frame:
        return "json"
    if "flask/" in frame or "werkzeug/" in frame:
        return "flask"
    return "other"


def summarize_raw(path: Path, top: int = 25) -> str:
    """Own (leaf) and inclusive shares of samples in a py-spy ``--format raw`` file,
    for the consuming thread only (the monitor thread idles)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not any("_consume" in frame for frame in frames):
            continue
        count = int(count_text)
        total += count
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        # Time blocked in a socket read belongs to "waiting for Redis", whatever called it.
        bucket = (
            "waiting (socket read/poll)"
            if any(
                word in leaf for word in ("recv", "poll", "read_from_socket", "_socket_can_read")
            )
            else _classify(leaf)
        )
        buckets[bucket] = buckets.get(bucket, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "no samples of the consuming thread"

    def share(count: int) -> str:
        return f"{100 * count / total:.1f} %"

    lines = [f"{total} samples of the consuming thread (wall clock, idle included).", ""]
    lines += ["| where the time went (by leaf frame) | share |", "|---|---|"]
    lines += [
        f"| {name} | {share(count)} |"
        for name, count in sorted(buckets.items(), key=lambda kv: -kv[1])
    ]
    lines += ["", "| leaf frame (own time) | share |", "|---|---|"]
    lines += [
        f"| `{name}` | {share(count)} |"
        for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]
    ]
    lines += ["", "| flask_tasks frame (inclusive) | share |", "|---|---|"]
    ours = [(name, count) for name, count in inclusive.items() if "flask_tasks/" in name]
    lines += [
        f"| `{name}` | {share(count)} |"
        for name, count in sorted(ours, key=lambda kv: -kv[1])[:top]
    ]
    return "\n".join(lines)


def py_spy(url: str, count: int, seconds: float) -> str:
    """Sample both prefork children while they drain: a flame graph of one
    (``bench/profile.svg``) and a text summary of the other."""
    from bench.procs import process_tree

    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "py-spy is not installed in this environment (bench/run.sh installs it)."
    app = _app(url)
    from bench.apps.ft_app import noop
    from flask_tasks import group

    with app.app_context():
        for _ in range(count // 5000 + 1):
            group(noop.s() for _ in range(5000)).apply_async()
    env = dict(os.environ, BENCH_FT_BROKER=url, BENCH_REDIS_URL=url, PYTHONPATH=str(REPO))
    from bench.configs import FLASK_TASKS_WORKER as command

    worker = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    raw = Path(tempfile.mkdtemp(prefix="flask-tasks-pyspy-")) / "raw.txt"
    try:
        time.sleep(1.5)
        children = [pid for pid in process_tree(worker.pid) if pid != worker.pid]
        if len(children) < 2:
            return "the worker had no children to sample"
        common = ["--duration", str(int(seconds)), "--rate", "250", "--nonblocking"]
        recorders = [
            subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(children[0]),
                    *common,
                    "--output",
                    str(REPO / "bench" / "profile.svg"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(children[1]),
                    *common,
                    "--idle",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]
        for recorder in recorders:
            _out, error = recorder.communicate(timeout=seconds + 60)
            if recorder.returncode != 0:
                return f"py-spy failed: {error.strip()[:300]}"
        return (
            f"Flame graph of one prefork child over {seconds:.0f} s: `bench/profile.svg` "
            "(CPU only). The other child, wall clock:\n\n" + summarize_raw(raw)
        )
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        app.extensions["tasks"].close()
        shutil.rmtree(raw.parent, ignore_errors=True)


def render(title: str, rows: list[tuple[str, float]]) -> str:
    lines = [f"### {title}", "", "| step | µs per call |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks for the cProfile drain")
    parser.add_argument("--py-spy", action="store_true", help="also sample a prefork child")
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    options = parser.parse_args(argv)
    out = io.StringIO()
    with redis_server() as url:
        app = _app(url)
        out.write(
            f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}\n\n"
        )
        out.write(render("Producer: one delay() and its parts", producer_costs(app, url)) + "\n\n")
        out.write(render("Worker: one message and its parts", worker_costs(app, url)) + "\n\n")
        plain, profiled, table = profile_consumer(app, options.n)
        out.write(
            f"### cProfile of a solo consumer draining {options.n:,} tasks (Redis, burst)\n\n"
            f"{plain:.0f} µs per task without the profiler, {profiled:.0f} µs with it; "
            "sorted by own time.\n\n" + table + "\n"
        )
        app.extensions["tasks"].close()
        if options.py_spy:
            out.write("\n### py-spy\n\n" + py_spy(url, max(options.n, 100_000), 6) + "\n")
    text = out.getvalue()
    print(text)
    if options.out:
        options.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

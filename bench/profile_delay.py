"""One producer's ``delay()`` loop alone, on a throwaway Redis.

    python -m bench.profile_delay [--n 10000] [--repeat 5] [--results-db] [--receiver]
                                  [--profile]

``SECRET_KEY`` is set (signed messages). ``--results-db`` keeps results in db 1 of the
same server (the "flask-tasks-users" configuration); ``--receiver`` connects a
``task_success`` receiver as that configuration does. Prints the median wall time per
``delay()`` (and calls per second), the producer's CPU per call (``time.process_time``),
and the server's time inside EVALSHA per call (``INFO commandstats``). Compare two
versions one right after the other (the older one with ``PYTHONPATH`` pointing at a copy
of its ``flask_tasks``): the machine's load moves the wall figures, less the CPU ones.
``--profile`` adds a cProfile of one more loop, sorted by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis
from flask import Flask

import flask_tasks
from flask_tasks import Tasks, signals

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import redis_server  # tests/redis_server.py, reused


def _on_success(sender: Any, **_kwargs: Any) -> None:
    """A receiver, as the users' configuration connects one (never called here)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="delay() calls per loop")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--results-db", action="store_true", help="TASKS_RESULT_BACKEND = the same server, db 1"
    )
    parser.add_argument("--receiver", action="store_true", help="a task_success receiver")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    count = options.n
    if options.receiver:
        signals.task_success.connect(_on_success)
    with redis_server() as url:
        app = Flask("delay")
        app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="bench-secret-key")
        if options.results_db:
            app.config["TASKS_RESULT_BACKEND"] = url.rsplit("/", 1)[0] + "/1"
        tasks = Tasks(app)

        @tasks.task(name="noop")
        def noop() -> None:
            """Does nothing."""

        meter = redis.Redis.from_url(url)
        walls, producer, server = [], [], []
        with app.app_context():
            for _ in range(100):  # connects, loads scripts
                noop.delay()
            for _ in range(options.repeat):
                meter.flushall()
                meter.config_resetstat()
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(count):
                    noop.delay()
                walls.append((time.perf_counter() - started) / count * 1e6)
                producer.append((time.process_time() - cpu) / count * 1e6)
                stats = meter.info("commandstats")
                usec = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_eval"))
                server.append(usec / count)
            if options.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(count):
                    noop.delay()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        meter.close()
        app.extensions["tasks"].close()
    wall = statistics.median(walls)
    print(
        f"flask_tasks from {Path(flask_tasks.__file__).parent}, "
        f"{'results in db 1' if options.results_db else 'results in the broker db'}"
        f"{', a task_success receiver' if options.receiver else ''}, "
        f"{count:,} delay() x {options.repeat}: wall {wall:.1f} µs/call "
        f"({1e6 / wall:,.0f} calls/s, best {1e6 / min(walls):,.0f}); "
        f"producer CPU {statistics.median(producer):.1f} µs/call; "
        f"server script {statistics.median(server):.1f} µs/call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

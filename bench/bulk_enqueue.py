"""Bulk enqueue alone: ``group(noop.s() x N).apply_async()`` on a throwaway Redis.

    python -m bench.bulk_enqueue [--n 10000] [--repeat 7] [--results-db] [--profile]

Prints the median wall rate, the producer's CPU per task (``time.process_time``) and the
server's time inside the publish script per task (``INFO commandstats``). On a machine
shared with other work the wall rate swings with the load; the two CPU figures much less,
so they are the ones to compare between two versions (run them one after the other, the
older one with ``PYTHONPATH`` pointing at a copy of its ``flask_tasks``). ``--profile``
adds a cProfile of one more group, sorted by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import redis
from flask import Flask

import flask_tasks
from flask_tasks import Tasks, group

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import redis_server  # tests/redis_server.py, reused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per group")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--results-db", action="store_true", help="TASKS_RESULT_BACKEND = the same server, db 1"
    )
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    count = options.n
    with redis_server() as url:
        app = Flask("bulk")
        app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="bench-secret-key")
        if options.results_db:
            app.config["TASKS_RESULT_BACKEND"] = url.rsplit("/", 1)[0] + "/1"
        tasks = Tasks(app)

        @tasks.task(name="noop")
        def noop() -> None:
            """Does nothing."""

        meter = redis.Redis.from_url(url)
        rates, producer, server = [], [], []
        with app.app_context():
            group(noop.s() for _ in range(100)).apply_async()  # connects, loads scripts
            for _ in range(options.repeat):
                meter.flushall()
                meter.config_resetstat()
                started, cpu = time.perf_counter(), time.process_time()
                group(noop.s() for _ in range(count)).apply_async()
                rates.append(count / (time.perf_counter() - started))
                producer.append((time.process_time() - cpu) / count * 1e6)
                stats = meter.info("commandstats")
                usec = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_eval"))
                server.append(usec / count)
            if options.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                group(noop.s() for _ in range(count)).apply_async()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        meter.close()
        app.extensions["tasks"].close()
    print(
        f"flask_tasks from {Path(flask_tasks.__file__).parent}, "
        f"{'results in db 1' if options.results_db else 'results in the broker db'}, "
        f"{count:,} tasks x {options.repeat}: wall {statistics.median(rates):,.0f} tasks/s "
        f"(best {max(rates):,.0f}); producer CPU {statistics.median(producer):.1f} µs/task; "
        f"server script {statistics.median(server):.1f} µs/task"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

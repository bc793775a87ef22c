"""Two versions of Flask-Tasks' ``delay()`` loop, interleaved in one process.

    python -m bench.ab_delay OLD_CHECKOUT [--n 2000] [--rounds 10] [--results-db]

``OLD_CHECKOUT`` is a directory holding the older ``flask_tasks`` package (a
``git archive`` of a commit, unpacked): it is copied, under another name, next to this
checkout's. One throwaway redis-server serves both apps (``SECRET_KEY`` set; results in
db 1 with ``--results-db``). Blocks of ``--n`` calls alternate between the two versions
(the order swapped every round), so both see the same machine load, and each figure is the
median over rounds of: the process's user and system CPU per call
(``resource.getrusage``), the wall time per call, and the server's time inside EVALSHA per
call (``INFO commandstats``). On a shared machine the CPU figures move less than the
wall time.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import redis_server  # tests/redis_server.py, reused


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _app(package: Any, name: str, url: str, results_db: bool) -> tuple[Flask, Any]:
    app = Flask(name)
    app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="bench-secret-key")
    if results_db:
        app.config["TASKS_RESULT_BACKEND"] = url.rsplit("/", 1)[0] + "/1"
    tasks = package.Tasks(app)

    @tasks.task(name="noop")
    def noop() -> None:
        """Does nothing."""

    with app.app_context():
        for _ in range(200):  # connects, loads the scripts
            noop.delay()
    return app, noop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="a directory holding the older flask_tasks")
    parser.add_argument("--n", type=int, default=2000, help="delay() calls per block")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--results-db", action="store_true", help="results in db 1")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(options.old / "flask_tasks", Path(scratch) / "flask_tasks_old")
        sys.path.insert(0, scratch)
        versions = {
            "old": importlib.import_module("flask_tasks_old"),
            "new": importlib.import_module("flask_tasks"),
        }
        with redis_server() as url:
            meter = redis.Redis.from_url(url)
            apps = {
                name: _app(package, name, url, options.results_db)
                for name, package in versions.items()
            }
            rows: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in apps}
            for round_number in range(options.rounds):
                order = list(apps) if round_number % 2 == 0 else list(reversed(apps))
                for name in order:
                    app, noop = apps[name]
                    meter.flushall()
                    meter.config_resetstat()
                    with app.app_context():
                        (user, system), started = _cpu(), time.perf_counter()
                        for _ in range(options.n):
                            noop.delay()
                        wall = time.perf_counter() - started
                        user_after, system_after = _cpu()
                    stats = meter.info("commandstats")
                    usec = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_eval"))
                    scale = 1e6 / options.n
                    rows[name].append(
                        (
                            (user_after - user) * scale,
                            (system_after - system) * scale,
                            wall * scale,
                            usec / options.n,
                        )
                    )
            meter.close()
            for app, _noop in apps.values():
                app.extensions["tasks"].close()
    for name, measured in rows.items():
        user, system, wall, script = (statistics.median(r[i] for r in measured) for i in range(4))
        print(
            f"{name}: user CPU {user:.1f}, system CPU {system:.1f}, wall {wall:.1f}, "
            f"server script {script:.1f} µs per delay() (medians of {options.rounds} blocks "
            f"of {options.n:,})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

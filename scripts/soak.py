"""Kill loop: SIGKILL ``flask worker`` processes while they run tasks; count what is lost.

    python scripts/soak.py --kills 1000 --tasks 25000 --workers 2

Starts a private redis-server (or uses ``--sqlite``), publishes ``--tasks`` tasks of the
test app (``tests/apps/proc_app.py``, ``proc.counted``: each run appends a line), runs
``--workers`` prefork workers, and every ``--interval`` seconds SIGKILLs one (its whole
process group) and starts another, ``--kills`` times. Then it lets the survivors finish
and prints how many tasks were lost (never ran or no SUCCESS) and run more than once
(expected: at most the tasks in flight at each kill).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "apps")]

import proc_app  # noqa: E402
from process_helpers import (  # noqa: E402
    RestartableRedis,
    WorkerSetup,
    wait_until,
    worker_processes,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--lease", type=float, default=2.0, help="visibility timeout (s)")
    parser.add_argument(
        "--max-deliveries",
        type=int,
        default=1000,
        help="TASKS_MAX_DELIVERIES of the workers: the loop kills innocent tasks too, so "
        "the default is high (with 3, a task killed 3 times ends in WorkerLostError)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of Redis")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flask-tasks-soak-"))
    redis = None
    if args.sqlite:
        url = f"sqlite:///{work / 'tasks.sqlite3'}"
    else:
        redis = RestartableRedis(work)
        redis.start()
        url = redis.url
    records = work / "records"
    records.mkdir()
    setup = WorkerSetup(url, records, visibility_timeout=args.lease)
    started = time.monotonic()
    try:
        app = setup.app()
        with app.app_context():
            results = [proc_app.counted.delay(index) for index in range(args.tasks)]
        env = {"PROC_MAX_DELIVERIES": str(args.max_deliveries)}
        with worker_processes(setup, work) as workers:
            alive = [
                workers.start("-P", "prefork", "-c", str(args.concurrency), ready=False, **env)
                for _ in range(args.workers)
            ]
            for kill in range(args.kills):
                time.sleep(args.interval * random.uniform(0.5, 1.5))
                victim = alive.pop(random.randrange(len(alive)))
                victim.kill_group()
                victim.wait(10)
                alive.append(
                    workers.start("-P", "prefork", "-c", str(args.concurrency), ready=False)
                )
                if (kill + 1) % 50 == 0:
                    print(f"{kill + 1} kills, {len(setup.records('counted'))} runs", flush=True)
            with app.app_context():
                wait_until(
                    lambda: all(r.state == "SUCCESS" for r in results[-50:]),
                    timeout=max(120.0, args.tasks / 50),
                    interval=0.5,
                    what="the last tasks",
                )
                time.sleep(args.lease * 2)
                states = Counter(r.state for r in results)
                for result in [r for r in results if r.state != "SUCCESS"][:5]:
                    print(f"not SUCCESS: {result.id} {result.state} {result.result!r}")
        runs = Counter(line["index"] for line in setup.records("counted"))
        lost = sum(1 for index in range(args.tasks) if runs[index] == 0)
        not_success = args.tasks - states.get("SUCCESS", 0)
        duplicated = sum(1 for count in runs.values() if count > 1)
        extra_runs = sum(count - 1 for count in runs.values() if count > 1)
        print(
            f"broker={'sqlite' if args.sqlite else 'redis'} tasks={args.tasks} "
            f"kills={args.kills} workers={args.workers}x{args.concurrency} "
            f"lost={lost} not_success={not_success} duplicated={duplicated} "
            f"extra_runs={extra_runs} seconds={time.monotonic() - started:.0f} "
            f"states={dict(states)}"
        )
        return 1 if lost or not_success else 0
    finally:
        setup.close()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())

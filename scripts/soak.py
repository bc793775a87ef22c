"""Kill loop: SIGKILL ``flask worker`` processes while they run tasks; count what is lost.

    python scripts/soak.py --kills 1000 --tasks 80000 --interval 0.3

Starts a private redis-server (or uses ``--sqlite``), runs ``--workers`` prefork workers of
the test app (``tests/apps/proc_app.py``, ``proc.counted``: each run appends a line with the
worker's name), and publishes ``--tasks`` tasks: one share before the first kill and one
share before each kill, so that tasks are published and running while the kills go on.
Every ``--interval`` seconds (on average) it SIGKILLs one worker (its whole process group)
and starts another, ``--kills`` times. Then it lets the survivors finish and prints:

lost
    tasks that never ran (and were not dead-lettered).
not_success
    tasks whose result is not SUCCESS, less the dead-lettered ones.
dead_lettered
    tasks ended by the poison-message rule: delivered ``TASKS_MAX_DELIVERIES`` times to
    processes that died each time, then stored as FAILURE (WorkerLostError). Every worker
    gets ``--max-deliveries`` (default 1000), so with the default this stays 0.
duplicated, extra_runs
    tasks that ran more than once, and their runs past the first. Each must have run on a
    worker that was killed (``dup_not_on_victims`` counts the others, expected 0), and their
    number is bounded by the messages the victims held when killed (``in_flight_bound``:
    kills x concurrency x (1 + prefetch)).

The exit status is 1 unless lost, not_success, dead_lettered and dup_not_on_victims are 0
and duplicated is within the bound.
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
    WorkerProcess,
    WorkerSetup,
    wait_until,
    worker_processes,
)
from redis_server import RestartableRedis  # noqa: E402

#: Prefetch per prefork child (the worker's default; passed explicitly for the bound).
PREFETCH = 4


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
        help="TASKS_MAX_DELIVERIES of every worker: the loop kills innocent tasks too, so "
        "the default is high (with 3, a task held by 3 victims ends in WorkerLostError)",
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
    shares = [len(part) for part in _split(range(args.tasks), args.kills + 1)]
    results = []
    victims: set[str] = set()
    try:
        app = setup.app()
        env = {"PROC_MAX_DELIVERIES": str(args.max_deliveries)}
        serial = 0

        def start_one() -> tuple[str, WorkerProcess]:
            nonlocal serial
            serial += 1
            name = f"soak{serial}@localhost"
            worker = workers.start(
                "-P", "prefork", "-c", str(args.concurrency), "--prefetch", str(PREFETCH),
                "-n", name, ready=False, **env,
            )  # fmt: skip
            return name, worker

        def publish(count: int) -> None:
            with app.app_context():
                first = len(results)
                results.extend(proc_app.counted.delay(first + n) for n in range(count))

        with worker_processes(setup, work) as workers:
            publish(shares[0])
            alive = [start_one() for _ in range(args.workers)]
            for kill in range(args.kills):
                time.sleep(args.interval * random.uniform(0.5, 1.5))
                publish(shares[kill + 1])
                name, victim = alive.pop(random.randrange(len(alive)))
                victim.kill_group()
                victim.wait(10)
                victims.add(name)
                alive.append(start_one())
                if (kill + 1) % 50 == 0:
                    print(f"{kill + 1} kills, {len(setup.records('counted'))} runs", flush=True)
            with app.app_context():
                unfinished = list(results)

                def all_finished() -> bool:
                    unfinished[:] = [r for r in unfinished if not r.ready()]
                    return not unfinished

                try:
                    wait_until(
                        all_finished, max(120.0, args.tasks / 50), 0.5, "every task to finish"
                    )
                except AssertionError as error:  # counted below as lost or not SUCCESS
                    print(f"{error}: {len(unfinished)} unfinished")
                states = Counter(r.state for r in results)
                dead = {
                    index
                    for index, r in enumerate(results)
                    if "WorkerLostError" in type(r.result).__name__
                }
                for result in [r for r in results if r.state != "SUCCESS"][:5]:
                    print(f"not SUCCESS: {result.id} {result.state} {result.result!r}")
        runs: dict[int, list[str]] = {}
        for line in setup.records("counted"):
            runs.setdefault(line["index"], []).append(line["hostname"])
        # Dead-lettered before any run (held by victims only) is the poison rule's, not lost.
        lost = sum(1 for index in range(args.tasks) if index not in runs and index not in dead)
        not_success = args.tasks - states.get("SUCCESS", 0) - len(dead)
        duplicated = [hosts for hosts in runs.values() if len(hosts) > 1]
        extra_runs = sum(len(hosts) - 1 for hosts in duplicated)
        # A run repeated for no kill: every run but the last must be on a victim.
        not_on_victims = sum(1 for hosts in duplicated if not set(hosts[:-1]) <= victims)
        bound = args.kills * args.concurrency * (1 + PREFETCH)
        print(
            f"broker={'sqlite' if args.sqlite else 'redis'} tasks={args.tasks} "
            f"kills={args.kills} workers={args.workers}x{args.concurrency} "
            f"lost={lost} not_success={not_success} dead_lettered={len(dead)} "
            f"duplicated={len(duplicated)} extra_runs={extra_runs} "
            f"in_flight_bound={bound} dup_not_on_victims={not_on_victims} "
            f"seconds={time.monotonic() - started:.0f} states={dict(states)}"
        )
        ok = not (lost or not_success or dead or not_on_victims) and len(duplicated) <= bound
        return 0 if ok else 1
    finally:
        setup.close()
        if redis is not None:
            redis.stop()


def _split(items: range, parts: int) -> list[range]:
    size, extra = divmod(len(items), parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (1 if part < extra else 0))
    return [items[bounds[i] : bounds[i + 1]] for i in range(parts)]


if __name__ == "__main__":
    sys.exit(main())

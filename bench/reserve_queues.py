"""Server time (and caller CPU) of one Redis ``reserve`` with 1 queue consumed against 20.

    python -m bench.reserve_queues [--n 2000] [--repeat 3]

Publishes N tasks (priority 5) on a throwaway Redis: to the one queue, or to the 20 queues
in turn ("spread", as the bench's 20-queue producer does), or all to the last of the 20
("last": the queues before it are empty), then takes them with ``reserve(count=1)``, and
prints the server's time inside the script per call (``INFO commandstats``) and this
process's CPU per call (packing, sending, decoding), median of the repetitions. Compare versions one right after the other (the older one with
``PYTHONPATH`` pointing at a copy of its ``flask_tasks``).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import redis

import flask_tasks
from flask_tasks.brokers import Envelope
from flask_tasks.brokers.redis import RedisBroker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import redis_server  # tests/redis_server.py, reused

QUEUES = [f"q{index}" for index in range(20)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="tasks per repetition")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    count = options.n
    print(f"flask_tasks from {Path(flask_tasks.__file__).parent}")
    with redis_server() as url:
        broker = RedisBroker(url, key_prefix="bench")
        meter = redis.Redis.from_url(url)
        cases = [
            ("1 queue", ["q0"], lambda index: "q0"),
            ("20 queues, spread", QUEUES, lambda index: QUEUES[index % 20]),
            ("20 queues, all in the last", QUEUES, lambda index: "q19"),
        ]
        for label, consumed, target in cases:
            usec, client = [], []
            for repetition in range(options.repeat):
                meter.flushall()
                broker.publish(
                    [
                        Envelope(f"m{repetition}-{index}", target(index), b"x" * 100)
                        for index in range(count)
                    ]
                )
                broker.reserve(consumed, 1, 30)  # marks the empty lists it meets
                meter.config_resetstat()
                taken, started = 1, _cpu()
                while taken < count:
                    taken += len(broker.reserve(consumed, 1, 30))
                client.append((_cpu() - started) * 1e6 / (count - 1))
                stats = meter.info("commandstats")["cmdstat_evalsha"]
                usec.append(stats["usec"] / stats["calls"])
            print(
                f"{label}: reserve(count=1) {statistics.median(usec):.1f} µs of server "
                f"script and {statistics.median(client):.1f} µs of caller CPU per call "
                f"({count:,} tasks, median of {options.repeat})"
            )
        meter.close()
        broker.close()
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())

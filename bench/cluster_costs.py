"""Per-task cost of the broker calls on ``redis://`` and on ``redis+cluster://``.

One process, everything on loopback: a throwaway redis-server and a throwaway
three-master cluster (``tests/redis_server.py``, ``tests/redis_cluster_server.py``). Three
timings per URL, in microseconds per task:

- publish: ``publish_with_records`` of one message and its PENDING record, one at a time;
- reserve 1 + ack: ``reserve(["q"], 1)`` then ``ack_with_records`` with a record;
- 12 queues: messages spread over twelve queues, ``reserve`` of ten from all twelve,
  then ``ack_with_records`` of the ten.

Run from the repository root: ``python -m bench.cluster_costs [--n 2000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_cluster_server import redis_cluster  # noqa: E402 - tests/, reused
from redis_server import redis_server  # noqa: E402

from flask_tasks.brokers import Envelope, open_broker  # noqa: E402

QUEUES = [f"q{index}" for index in range(12)]


def measure(url: str, n: int) -> tuple[float, float, float]:
    """(publish, reserve 1 + ack, 12 queues) in microseconds per task."""
    broker = open_broker(url, key_prefix=f"costs-{uuid.uuid4().hex[:8]}")
    try:
        broker.ping()
        started = time.perf_counter()
        for index in range(n):
            envelope = Envelope(f"m{index}", "q", b"x" * 200)
            broker.publish_with_records([envelope], {envelope.id: b"PENDING"}, 3600)
        publish = time.perf_counter() - started
        started = time.perf_counter()
        for _index in range(n):
            [delivery] = broker.reserve(["q"], 1, 30)
            broker.ack_with_records([(delivery, b"SUCCESS")], 3600)
        single = time.perf_counter() - started
        for index in range(n):
            broker.publish([Envelope(f"n{index}", QUEUES[index % 12], b"x" * 200)])
        started = time.perf_counter()
        taken = 0
        while taken < n:
            deliveries = broker.reserve(QUEUES, 10, 30)
            broker.ack_with_records([(d, b"SUCCESS") for d in deliveries], 3600)
            taken += len(deliveries)
        spread = time.perf_counter() - started
    finally:
        broker.close()
    return publish / n * 1e6, single / n * 1e6, spread / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000, help="tasks per timing")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with redis_server() as single_url, redis_cluster() as cluster_url:
        for repetition in range(options.repeat):
            for name, url in (("redis://", single_url), ("redis+cluster://", cluster_url)):
                publish, single, spread = measure(url, options.n)
                print(
                    f"run {repetition + 1} {name:17} publish {publish:6.0f} us  "
                    f"reserve 1 + ack {single:6.0f} us  12 queues {spread:6.0f} us"
                )


if __name__ == "__main__":
    main()

"""Measure the SQLite broker: throughput, wake-up latency, and the CPU cost of idling.

    python bench/sqlite_broker.py [--messages 10000] [--url sqlite:////tmp/bench.db]

Throughput: publish, reserve and ack N messages one at a time (each call is one
transaction), then the same in batches of 100. Latency: how long after a commit a waiter
in ``wait()`` or ``watch_result()`` returns, for a writer thread in the same process and a
writer in another process. Idle: CPU used by a process blocked in ``wait()`` for 10 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from typing import Callable

from flask_tasks.brokers import Broker, Delivery, Envelope, open_broker


def throughput(url: str, messages: int, batch: int) -> float:
    broker = open_broker(url, key_prefix=f"bench{batch}")
    started = time.perf_counter()
    for start in range(0, messages, batch):
        broker.publish([Envelope(f"m{i}", "q", b"x" * 200) for i in range(start, start + batch)])
    while True:
        deliveries = broker.reserve(["q"], batch, 60)
        if not deliveries:
            break
        for delivery in deliveries:
            broker.ack_with_records([(delivery.id, b"result")], 3600)
    elapsed = time.perf_counter() - started
    broker.close()
    return messages / elapsed


def _open(target: str | Broker) -> Broker:
    return target if isinstance(target, Broker) else open_broker(target, key_prefix="latency")


def _publish_later(target: str | Broker, queue: str, delay: float, rounds: int) -> None:
    broker = _open(target)
    for _ in range(rounds):
        time.sleep(delay)
        broker.publish([Envelope(f"{time.time()!r}", queue, b"")])
    if broker is not target:
        broker.close()


def _write_later(target: str | Broker, task_id: str, delay: float, rounds: int) -> None:
    broker = _open(target)
    for _ in range(rounds):
        time.sleep(delay)
        broker.set_result(task_id, repr(time.time()).encode(), 60)
    if broker is not target:
        broker.close()


def wait_latency(broker: Broker, start_writer: Callable[[str], object], rounds: int) -> str:
    queue = f"q{time.monotonic_ns()}"
    start_writer(queue)
    samples = []
    for _ in range(rounds):
        deliveries: list[Delivery] = []
        while not deliveries:
            broker.wait([queue], 10)
            deliveries = broker.reserve([queue], 1, 60)
        samples.append(time.time() - float(deliveries[0].id))
        broker.ack([deliveries[0].id])
    return describe(samples)


def watch_latency(broker: Broker, start_writer: Callable[[str], object], rounds: int) -> str:
    task_id = f"t{time.monotonic_ns()}"
    start_writer(task_id)
    samples, last = [], None
    for _ in range(rounds):
        last = broker.watch_result(task_id, last, 10)
        assert last is not None
        samples.append(time.time() - float(last))
    return describe(samples)


def idle_cpu(url: str, seconds: float = 10.0) -> float:
    broker = open_broker(url, key_prefix="idle")
    broker.wait(["q"], 1.5)  # let the watcher settle into its quiet rate
    cpu, wall = time.process_time(), time.monotonic()
    while time.monotonic() - wall < seconds:
        broker.wait(["q"], seconds)
    used = (time.process_time() - cpu) / (time.monotonic() - wall)
    broker.close()
    return used


def describe(samples: list[float]) -> str:
    ms = sorted(sample * 1000 for sample in samples)
    return (
        f"median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms, "
        f"max {ms[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    url = args.url or "sqlite:///" + os.path.join(tempfile.mkdtemp(), "bench.sqlite3")
    print(url)

    for batch in (1, 100):
        rate = throughput(url, args.messages, batch)
        print(
            f"publish + reserve + ack, {args.messages} messages, batch {batch}: "
            f"{rate:,.0f} messages/s"
        )

    broker = open_broker(url, key_prefix="latency")
    spawn = multiprocessing.get_context("spawn")
    for label, delay, rounds in (("busy", 0.05, 40), ("quiet", 1.2, 8)):
        print(f"-- wake-up latency, one write every {delay} s ({label}):")
        for name, measure, writer in (
            ("wait()", wait_latency, _publish_later),
            ("watch_result()", watch_latency, _write_later),
        ):
            starters = {
                "same broker, other thread": lambda key, w=writer, d=delay, r=rounds: (
                    threading.Thread(target=w, args=(broker, key, d, r)).start()
                ),
                "other process": lambda key, w=writer, d=delay, r=rounds: spawn.Process(
                    target=w, args=(url, key, d, r)
                ).start(),
            }
            for where, start in starters.items():
                print(f"{name:15} {where:26} {measure(broker, start, rounds)}")
    broker.close()
    print(f"CPU while idle in wait(): {idle_cpu(url) * 100:.2f} % of one core")


if __name__ == "__main__":
    main()

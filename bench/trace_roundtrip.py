"""Where one ``delay().get()`` round trip spends its time, hop by hop (issue 13).

Starts a throwaway redis-server and ``flask worker -P prefork -c 2`` on it, runs N
sequential ``delay().get()`` in this process while a MONITOR connection records every
command with the server's microsecond timestamp, and lines them up with the producer's
own ``time.time_ns()`` (the same clock: one machine). Prints the median of each hop.

    .venv/bin/python -m bench.trace_roundtrip --n 200
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import redis_server  # noqa: E402

LINE = re.compile(rb'^(\d+)\.(\d+) \[(\d+) ([^\]]+)\] "([^"]+)"(.*)$')


def monitor(port: int, lines: list[bytes], stop: threading.Event) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"MONITOR\r\n")
    conn.settimeout(0.2)
    buffer = b""
    while not stop.is_set():
        try:
            chunk = conn.recv(1 << 16)
        except TimeoutError:
            continue
        if not chunk:
            break
        buffer += chunk
        *done, buffer = buffer.split(b"\r\n")
        lines.extend(line[1:] for line in done if line.startswith(b"+"))
    conn.close()


def parse(lines: list[bytes]) -> list[tuple[int, str, str, bytes]]:
    """(microseconds, client, command, rest) of every logged command."""
    events = []
    for line in lines:
        found = LINE.match(line)
        if found:
            seconds, micros, _db, client, command, rest = found.groups()
            at = int(seconds) * 1_000_000 + int(micros)
            events.append((at, client.decode(), command.decode().upper(), rest))
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between trips")
    options = parser.parse_args(argv)
    with redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        env = dict(os.environ, BENCH_FT_BROKER=url, PYTHONPATH=str(ROOT))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "bench.apps.ft_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return trace(url, port, options.n, options.pause)
        finally:
            worker.terminate()
            worker.wait(20)


def trace(url: str, port: int, n: int, pause: float) -> int:
    from bench.apps.ft_app import create_app, noop

    app = create_app(url)
    with app.app_context():
        for _ in range(20):  # warm up: connections, scripts, children forked
            noop.delay().get(timeout=30)
        time.sleep(0.5)
        plain = []
        for _ in range(n):  # the same loop without MONITOR: what MONITOR adds
            start = time.perf_counter_ns()
            noop.delay().get(timeout=30)
            plain.append((time.perf_counter_ns() - start) // 1000)
        print(f"total without MONITOR: median {statistics.median(plain):.0f} us")
        lines: list[bytes] = []
        stop = threading.Event()
        watcher = threading.Thread(target=monitor, args=(port, lines, stop))
        watcher.start()
        time.sleep(0.3)
        trips = []
        for _ in range(n):
            if pause:
                time.sleep(pause)
            start = time.time_ns() // 1000
            result = noop.delay()
            result.get(timeout=30)
            trips.append((start, time.time_ns() // 1000, result.id))
        time.sleep(0.3)
        stop.set()
        watcher.join()
    report(parse(lines), trips)
    return 0


def report(events: list[tuple[int, str, str, bytes]], trips: list[tuple[int, int, str]]) -> None:
    hops: dict[str, list[int]] = {}
    anomalies = 0

    def add(name: str, value: int) -> None:
        hops.setdefault(name, []).append(value)

    for start, end, task_id in trips:
        window = [e for e in events if start - 50 <= e[0] <= end + 50]
        marker = task_id.encode()
        try:
            publish = next(e for e in window if e[2] == "EVALSHA" and marker in e[3])
            producer = publish[1]
            # the worker's commands: a client other than the producer's two
            rpush_wake = next(
                e for e in window if e[2] == "RPUSH" and b"wake" in e[3] and e[0] >= publish[0]
            )
            worker = next(
                e for e in window if e[2] == "EVALSHA" and e[1] != producer and e[0] > publish[0]
            )
            settle = next(
                e for e in window if e[2] == "EVALSHA" and e[1] == worker[1] and e[0] > worker[0]
            )
            result_pub = next(
                e for e in window if e[2] == "PUBLISH" and marker in e[3] and e[0] >= settle[0]
            )
            subscribe = next(e for e in window if e[2] == "SUBSCRIBE")
            get = next(e for e in window if e[2] == "GET" and marker in e[3])
        except StopIteration:
            anomalies += 1
            continue
        inner = [e for e in window if e[1] == "lua"]
        publish_end = max(e[0] for e in inner if publish[0] <= e[0] < worker[0])
        reserve_end = max(e[0] for e in inner if worker[0] <= e[0] < settle[0])
        add("total (producer clock)", end - start)
        add("2a publish script, first -> last inner command", publish_end - publish[0])
        add("2b publish script's end -> worker's reserve", worker[0] - publish_end)
        add("3a reserve script, first -> last inner command", reserve_end - worker[0])
        add("3b reserve script's end -> settle (worker: run)", settle[0] - reserve_end)
        add("3c settle script -> its result PUBLISH", result_pub[0] - settle[0])
        add("1 delay(): call -> publish script at server", publish[0] - start)
        add("2 wake: publish -> worker's reserve at server", worker[0] - publish[0])
        add("3 reserve -> settle script at server (run + ack)", settle[0] - worker[0])
        add("4 result PUBLISH -> get() returns (producer clock)", end - result_pub[0])
        add("p publish -> SUBSCRIBE at server", subscribe[0] - publish[0])
        add("p SUBSCRIBE -> GET at server", get[0] - subscribe[0])
        add("p GET - result PUBLISH (neg: GET first)", get[0] - result_pub[0])
        add("x wake RPUSH inside publish - publish", rpush_wake[0] - publish[0])
    print(f"round trips traced: {len(trips) - anomalies} of {len(trips)}")
    for name, values in hops.items():
        print(f"{name:52s} median {statistics.median(values):8.0f} us  (n={len(values)})")
    per_trip = len(events) / max(1, len(trips))
    print(f"commands logged per round trip (scripts' inner commands included): {per_trip:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())

"""Measure the browser-side endpoints: request latency, and open clients per process.

    .venv/bin/python scripts/measure_web.py latency [--requests 1000] [--broker URL]
    .venv/bin/python scripts/measure_web.py clients [--clients 1000] [--mode events|wait]

``latency`` times ``GET <prefix>/<token>`` with Flask's test client (median and 95th
percentile). ``clients`` serves an app with Werkzeug's threaded server (what ``flask run``
uses) in a subprocess, opens that many event streams (or ``?wait=30`` long polls) to it
on loopback, and reports the server's memory and threads, the latency of a plain status
request meanwhile, and how long until every client saw the task finish. The broker
defaults to the embedded SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from flask import Flask

from flask_tasks import Tasks, states

SECRET = "measure-web"
tasks = Tasks()


@tasks.task
def job() -> None:
    """Never run: the script writes the records itself."""


def make_app(broker_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, TASKS_BROKER_URL=broker_url)
    if broker_url.startswith("redis"):
        # Each waiting client holds a pub/sub connection; redis-py 8 caps a pool at 100.
        app.config["TASKS_BROKER_OPTIONS"] = {"max_connections": 20000}
    tasks.init_app(app)
    return app


def send(app: Flask) -> tuple[str, str]:
    """(task id, status URL) of a new PENDING task."""
    with app.test_request_context():
        result = job.delay()
        return result.id, tasks.status_url(result)


def finish(app: Flask, task_id: str) -> None:
    state = app.extensions["tasks"]
    state.backend.set_result(task_id, state.make_record(states.SUCCESS, 1), 600)


def milliseconds(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(ordered) * 1000:.3f} ms, p95 {p95 * 1000:.3f} ms"


# -- latency ----------------------------------------------------------------------------


def latency(args: argparse.Namespace, broker_url: str) -> None:
    app = make_app(broker_url)
    client = app.test_client()
    task_id, url = send(app)
    done_id, done_url = send(app)
    finish(app, done_id)
    with app.test_request_context():
        missing_url = tasks.status_url("never-sent")
    for name, target, status in [
        ("PENDING", url, 200),
        ("SUCCESS", done_url, 200),
        ("404", missing_url, 404),
    ]:
        for _ in range(50):  # warm up
            client.get(target)
        samples = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(target)
            samples.append(time.perf_counter() - started)
            assert response.status_code == status, response.status_code
        print(f"{name:8} x{args.requests}: {milliseconds(samples)}")
    del task_id
    app.extensions["tasks"].close()


# -- open clients -----------------------------------------------------------------------


def serve(args: argparse.Namespace, broker_url: str) -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", args.port, make_app(broker_url), threaded=True)
    print("ready", flush=True)
    server.serve_forever()


def process_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as file:
        return dict(line.split(":", 1) for line in file if ":" in line)


def open_client(port: int, path: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return connection


def read_until(connection: socket.socket, marker: bytes, buffer: bytes = b"") -> bytes:
    while marker not in buffer:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}: {buffer[-200:]!r}")
        buffer += chunk
    return buffer


def open_clients(args: argparse.Namespace, port: int, path: str, pid: int) -> list[Any]:
    """Open ``args.clients`` requests to ``path`` and return once the server holds all."""
    wanted = int(process_status(pid)["Threads"]) + args.clients
    started = time.perf_counter()
    connections: list[Any] = []
    for _ in range(args.clients):
        connection = open_client(port, path)
        if args.mode == "events":  # accepted, and its first event arrived
            read_until(connection, b'"state":"PENDING"')
        connections.append(connection)
    # A long poll sends nothing (not even headers) before the change: count the server's
    # threads instead, one per open request.
    while int(process_status(pid)["Threads"]) < wanted:
        if time.perf_counter() - started > 120:
            raise TimeoutError("the server did not take every connection")
        time.sleep(0.05)
    return connections


def wait_all_see_success(connections: list[Any], timeout: float = 60) -> None:
    selector = selectors.DefaultSelector()
    for connection in connections:
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ, b"")
    deadline = time.perf_counter() + timeout
    waiting = len(connections)
    while waiting:
        for key, _ in selector.select(timeout=deadline - time.perf_counter()):
            data = key.data + key.fileobj.recv(65536)
            if b'"state":"SUCCESS"' in data:
                selector.unregister(key.fileobj)
                waiting -= 1
            else:
                selector.modify(key.fileobj, selectors.EVENT_READ, data)
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{waiting} clients never saw SUCCESS")
    selector.close()


def clients(args: argparse.Namespace, broker_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, __file__, "serve", "--port", str(port), "--broker", broker_url]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        app = make_app(broker_url)
        task_id, url = send(app)
        before = process_status(server.pid)
        path = url + ("/events" if args.mode == "events" else "?wait=30")
        started = time.perf_counter()
        connections = open_clients(args, port, path, server.pid)
        opened = time.perf_counter() - started
        after = process_status(server.pid)
        samples = []
        for _ in range(50):
            begin = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=10) as reply:
                reply.read()
            samples.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        finish(app, task_id)
        wait_all_see_success(connections)
        notified = time.perf_counter() - begin
        for connection in connections:
            connection.close()
        rss_before, rss_after = (int(s["VmRSS"].split()[0]) for s in (before, after))
        print(f"mode {args.mode}, broker {broker_url.split(':', 1)[0]}, {args.clients} clients")
        print(f"  opened all in {opened:.2f} s; every one held open at once")
        print(
            f"  server: {after['Threads'].strip()} threads (was {before['Threads'].strip()}), "
            f"RSS {rss_after / 1024:.1f} MiB (was {rss_before / 1024:.1f} MiB): "
            f"{(rss_after - rss_before) / args.clients:.1f} KiB per open client"
        )
        print(f"  plain status request meanwhile: {milliseconds(samples)}")
        print(f"  all {args.clients} clients saw SUCCESS {notified * 1000:.0f} ms after the write")
        app.extensions["tasks"].close()
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout:
            server.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["latency", "clients", "serve"])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--mode", choices=["events", "wait"], default="events")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--broker", help="broker URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        broker_url = args.broker or f"sqlite:///{os.path.join(folder, 'tasks.sqlite3')}"
        {"latency": latency, "clients": clients, "serve": serve}[args.command](args, broker_url)


if __name__ == "__main__":
    main()

"""A throwaway three-master Redis Cluster on free loopback ports (tests and ``bench/``).

Usage::

    with redis_cluster() as url:   # "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        ...

Each node is a ``redis-server --cluster-enabled yes`` in a temporary directory of its
own; ``redis-cli --cluster create ... --cluster-replicas 0`` joins them; the context
waits for ``cluster_state:ok`` on every node, and stops the servers by pid afterwards.
A node also listens on its cluster bus port, its port + 10000: both must be free.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from redis_server import redis_server_command

#: Highest client port: its cluster bus port (+10000) must stay below 65536.
_MAX_PORT = 55_535


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` ports below 55536 that are free, and whose port + 10000 is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > _MAX_PORT:
            # The kernel hands out high ports: try ones further down, at random offsets.
            port = 20_000 + port % 30_000
        if port not in ports and _port_free(port) and _port_free(port + 10_000):
            ports.append(port)
    return ports


def _binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} is not installed; install the redis-server package")
    return path


def _ask(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(command)
        return conn.recv(65536)


@contextmanager
def _node(server: str, port: int, workdir: str) -> Iterator[subprocess.Popen[bytes]]:
    cluster = ("--cluster-enabled", "yes", "--cluster-node-timeout", "5000")
    process = subprocess.Popen(
        redis_server_command(
            server,
            port,
            workdir,
            *cluster,
            "--cluster-config-file",
            os.path.join(workdir, "nodes.conf"),
            "--daemonize",
            "no",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(check: str, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise RuntimeError(f"Redis Cluster: {check} timed out")


@contextmanager
def redis_cluster(masters: int = 3, attempts: int = 3) -> Iterator[str]:
    """Start a ``masters``-node Redis Cluster; yield its ``redis+cluster://`` URL.

    A port taken by someone else between the check and the start fails that attempt; the
    next one picks other ports. RuntimeError after ``attempts``.
    """
    server, cli = _binary("redis-server"), _binary("redis-cli")
    for attempt in range(1, attempts + 1):
        stack = ExitStack()
        try:
            url = _start(stack, server, cli, masters)
        except BaseException:
            stack.close()
            if attempt == attempts:
                raise
            continue
        with stack:
            yield url
        return


def _start(stack: ExitStack, server: str, cli: str, masters: int) -> str:
    """Start and join the nodes (each stopped by ``stack``); the cluster's URL."""
    ports = free_cluster_ports(masters)
    workdir = tempfile.mkdtemp(prefix="flask-tasks-cluster-")
    stack.callback(shutil.rmtree, workdir, True)
    processes = []
    for port in ports:
        node_dir = os.path.join(workdir, str(port))
        os.mkdir(node_dir)
        processes.append(stack.enter_context(_node(server, port, node_dir)))
    deadline = time.monotonic() + 20
    for port, process in zip(ports, processes):
        while True:
            try:
                if _ask(port, b"PING\r\n").startswith(b"+PONG"):
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            _wait(f"node {port} start", deadline)
            time.sleep(0.02)
    created = subprocess.run(
        [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout!r}")
    for port in ports:
        while b"cluster_state:ok" not in _ask(port, b"CLUSTER INFO\r\n"):
            _wait(f"cluster_state:ok on {port}", deadline)
            time.sleep(0.05)
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)

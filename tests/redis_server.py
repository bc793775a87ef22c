"""A throwaway ``redis-server`` on a free loopback port, for the test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(binary: str = "redis-server") -> Iterator[str]:
    """Start a private redis-server and yield its ``redis://`` URL; stop it afterwards.

    Raises RuntimeError (never skips) when the server cannot be found or started: the
    project's test command installs it, so its absence is a broken set-up.
    """
    path = shutil.which(binary) or os.environ.get("REDIS_SERVER_BIN")
    if not path:
        raise RuntimeError(
            "redis-server is not installed; run scripts/test.sh (it installs it) "
            "or install the redis-server package"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="flask-tasks-redis-")
    process = subprocess.Popen(
        [
            path,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"redis-server did not start on port {port}: {error}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)

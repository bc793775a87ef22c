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
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_command(binary: str, port: int, directory: str, *extra: str) -> list[str]:
    """A loopback redis-server on ``port`` that saves no snapshots (``*extra``: more
    options, ``--appendonly no`` unless they say otherwise)."""
    appendonly = [] if "--appendonly" in extra else ["--appendonly", "no"]
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *appendonly,
        "--dir",
        directory,
        "--loglevel",
        "warning",
        *extra,
    ]


def answers_ping(port: int) -> bool:
    """True when the server on loopback ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_answering(process: subprocess.Popen[bytes], port: int, timeout: float = 10) -> None:
    """Wait until the just started ``process`` answers on ``port``; RuntimeError (with its
    stderr, if piped) when it exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"redis-server did not start on port {port}: {error}")
        time.sleep(0.02)


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
        redis_server_command(path, port, workdir, "--daemonize", "no"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_answering(process, port)
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


class RestartableRedis:
    """A private redis-server on a fixed port that a test may stop and start again.

    With ``durable``, every write is appended to a file and fsynced before the reply
    (``--appendonly yes --appendfsync always``), so a server killed and started again in
    the same directory has lost nothing it acknowledged."""

    def __init__(self, directory: Path, durable: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.durable = durable
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or os.environ.get("REDIS_SERVER_BIN", "")
        durable = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        self.process = subprocess.Popen(
            redis_server_command(binary, self.port, str(self.directory), *durable),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_answering(self.process, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

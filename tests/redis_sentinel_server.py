"""A throwaway Redis master, one replica and three Sentinels on free loopback ports.

There is no ``redis-sentinel`` binary on every machine: Sentinels run as
``redis-server sentinel.conf --sentinel``. Each server has a temporary directory of its own
(Sentinels rewrite their config file as they learn the topology), and every process is
stopped by its pid afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import redis
from redis_server import free_port, redis_server_command

#: The service name the Sentinels monitor.
SERVICE = "mymaster"
#: How long a Sentinel waits before it calls an unanswering master down, in ms.
DOWN_AFTER_MS = 1000
#: Sentinel's failover timeout, in ms (also the pause before it retries a failed one).
FAILOVER_TIMEOUT_MS = 5000


def _command(port: int, *words: str) -> Any:
    """Run one command on 127.0.0.1:``port``; its reply, or None if it does not answer."""
    client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return client.execute_command(*words)
    except redis.RedisError:
        return None
    finally:
        client.close()


def _fields(reply: Any) -> dict[bytes, bytes]:
    """A field/value reply as a dict: newer redis-py gives a dict, older ones the flat list."""
    if isinstance(reply, dict):
        return reply
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2]))
    return {}


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class SentinelSetup:
    """The running servers: ports, processes, and the ``redis+sentinel://`` URL."""

    binary: str
    root: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def data_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def start_server(self, port: int, *extra: str) -> None:
        workdir = self.root / str(port)
        workdir.mkdir()
        log = ("--logfile", str(workdir / "redis.log"))
        self._spawn(port, redis_server_command(self.binary, port, str(workdir), *log, *extra))

    def start_sentinel(self, port: int) -> None:
        workdir = self.root / f"sentinel-{port}"
        workdir.mkdir()
        config = workdir / "sentinel.conf"
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {workdir}\n"
            f"logfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._spawn(port, [self.binary, str(config), "--sentinel"])

    def _spawn(self, port: int, args: list[str]) -> None:
        self.processes[port] = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for(lambda: _command(port, "PING"), f"port {port}", 10)

    def info(self, port: int) -> dict[str, Any]:
        """INFO replication of one server ({} if it does not answer)."""
        return dict(_command(port, "INFO", "replication") or {})

    def master_address(self, sentinel_port: int) -> Optional[int]:
        """The master port one Sentinel reports now (None if it does not answer)."""
        reply = _command(sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply[1]) if reply else None

    def sentinels_ready(self) -> bool:
        """Every Sentinel knows the replica and the two other Sentinels."""
        for port in self.sentinel_ports:
            fields = _fields(_command(port, "SENTINEL", "MASTER", SERVICE))
            if fields.get(b"num-slaves") != b"1" or fields.get(b"num-other-sentinels") != b"2":
                return False
        return True

    def kill(self, port: int) -> None:
        """kill -9 one server."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def wait_for_failover(self, timeout: float = 30.0) -> int:
        """Wait until every Sentinel names the replica as master; its port."""
        _wait_for(
            lambda: all(self.master_address(p) == self.replica_port for p in self.sentinel_ports),
            "the Sentinels to promote the replica",
            timeout,
        )
        _wait_for(
            lambda: self.info(self.replica_port).get("role") == "master",
            "the replica to take the master role",
            timeout,
        )
        return self.replica_port

    def stop(self) -> None:
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        for process in self.processes.values():
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.processes.clear()


@contextmanager
def redis_sentinel() -> Iterator[SentinelSetup]:
    """Start a master, a replica of it and three Sentinels (quorum 2); yield the setup once
    the replica is in sync and the Sentinels know each other; stop them all afterwards."""
    binary = shutil.which("redis-server") or os.environ.get("REDIS_SERVER_BIN")
    if not binary:
        raise RuntimeError("redis-server is not installed (it also runs the Sentinels)")
    setup = SentinelSetup(binary, Path(tempfile.mkdtemp(prefix="flask-tasks-sentinel-")))
    try:
        # No 5 s pause before the replica's first (diskless) sync.
        setup.start_server(setup.master_port, "--repl-diskless-sync-delay", "0")
        setup.start_server(setup.replica_port, "--replicaof", "127.0.0.1", str(setup.master_port))
        _wait_for(
            lambda: setup.info(setup.replica_port).get("master_link_status") == "up",
            "the replica to sync",
        )
        for port in setup.sentinel_ports:
            setup.start_sentinel(port)
        _wait_for(setup.sentinels_ready, "the Sentinels to find the replica and each other")
        yield setup
    finally:
        setup.stop()
        shutil.rmtree(setup.root, ignore_errors=True)

"""A RabbitMQ vhost of the test session's own: on the machine's server at 127.0.0.1:5672
(guest/guest) when it answers, else on a throwaway ``rabbitmq-server`` started here.

Each session gets a fresh vhost (``rabbitmqctl add_vhost``), deleted afterwards; tests
within it keep apart with key prefixes (queue names). ``FLASK_TASKS_PRIVATE_RABBITMQ=1``
skips the machine's server and starts a private one. Raises RuntimeError (never skips)
when neither works.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from redis_server import free_port

LOCAL_PORT = 5672
#: How to reach the session's server with rabbitmqctl (its node and environment).
_SERVER: dict[str, object] = {}


def _answers(port: int) -> bool:
    """True when an AMQP server on ``port`` greets a protocol header."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            conn.settimeout(2)
            return conn.recv(8)[:1] == b"\x01"  # a Connection.Start frame
    except OSError:
        return False


#: Debian's /usr/sbin wrappers switch to the rabbitmq user (and its files); a private
#: node runs the real scripts as whoever runs the tests, on files of its own.
_REAL_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str, private: bool) -> str | None:
    if private and (_REAL_SCRIPTS / name).exists():
        return str(_REAL_SCRIPTS / name)
    return shutil.which(name)


def _ctl(*args: str, node: str | None = None, env: dict[str, str] | None = None) -> str:
    binary = _tool("rabbitmqctl", private=node is not None)
    if not binary:
        raise RuntimeError("rabbitmqctl is not installed: install the rabbitmq-server package")
    command = [binary, *(["-n", node] if node else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def _vhost(port: int, node: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    vhost = f"flask-tasks-test-{uuid.uuid4().hex[:10]}"
    _ctl("add_vhost", vhost, node=node, env=env)
    try:
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*", node=node, env=env)
        yield f"amqp://guest:guest@127.0.0.1:{port}/{vhost}"
    finally:
        with suppress(RuntimeError, subprocess.TimeoutExpired):  # a private server goes anyway
            _ctl("delete_vhost", vhost, node=node, env=env)


@contextmanager
def _private_server() -> Iterator[tuple[int, str, dict[str, str]]]:
    binary = _tool("rabbitmq-server", private=True)
    if not binary:
        raise RuntimeError(
            "RabbitMQ does not answer on 127.0.0.1:5672 and rabbitmq-server is not "
            "installed: install the rabbitmq-server package (scripts/system-packages.sh)"
        )
    port, dist_port = free_port(), free_port()
    home = Path(tempfile.mkdtemp(prefix="flask-tasks-rabbitmq-"))
    node = f"ft{uuid.uuid4().hex[:8]}@localhost"
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users.guest = true\n"
    )
    (home / "enabled_plugins").write_text("[].\n")
    env = dict(
        os.environ,
        HOME=str(home),
        RABBITMQ_NODENAME=node,
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_CONFIG_FILE=str(home / "rabbitmq"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
        RABBITMQ_LOG_BASE=str(home / "log"),
        RABBITMQ_PID_FILE=str(home / "rabbitmq.pid"),
    )
    with open(home / "server.out", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [binary], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"rabbitmq-server did not start on port {port}: "
                    f"{(home / 'server.out').read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)
        _ctl("await_startup", node=node, env=env)
        yield port, node, env
    finally:
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            _ctl("stop", node=node, env=env)  # the node, whatever wrapper scripts started it
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the session's server; its output."""
    return _ctl(*args, node=_SERVER.get("node"), env=_SERVER.get("env"))  # type: ignore[arg-type]


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """Yield the ``amqp://`` URL of a fresh vhost for this session; delete it afterwards."""
    if os.environ.get("FLASK_TASKS_PRIVATE_RABBITMQ") != "1" and _answers(LOCAL_PORT):
        with _vhost(LOCAL_PORT) as url:
            yield url
        return
    with _private_server() as (port, node, env), _vhost(port, node, env) as url:
        _SERVER.update(node=node, env=env)
        try:
            yield url
        finally:
            _SERVER.clear()

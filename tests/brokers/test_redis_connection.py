"""The Redis broker's connections: URL forms (redis, rediss, unix, sentinel), the server
version check, and errors that hide the password when the server cannot be reached.

These tests start extra servers (unix socket, sentinel, one to stop and restart) on free
ports or in temporary directories; none touches the machine's own Redis.
"""

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
from typing import Any, Callable

import pytest
import redis
from redis_server import free_port

from flask_tasks.brokers import Delivery, Envelope, open_broker
from flask_tasks.brokers.redis import RedisBroker
from flask_tasks.brokers.redis_connection import check_version, parse_version
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError

LEASE = 30.0


def env(message_id: str, queue: str = "q", body: bytes | None = None) -> Envelope:
    return Envelope(message_id, queue, body or message_id.encode())


def until(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


@contextmanager
def spawned(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run another redis-server (or sentinel) with ``args``; stop it afterwards."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    process = subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


def server_args(*extra: str) -> list[str]:
    return ["--save", "", "--appendonly", "no", "--loglevel", "warning", *extra]


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# -- URLs, connecting, the server check ---------------------------------------------------


def test_kind_and_url_hide_the_password(redis_url: str) -> None:
    broker = open_broker(redis_url.replace("//", "//:secret@"), key_prefix="x")
    try:
        assert isinstance(broker, RedisBroker)
        assert broker.kind == "redis"
        assert "secret" not in broker.url and ":***@" in broker.url
    finally:
        broker.close()


def test_unreachable_server_raises_operational_error_without_the_password() -> None:
    port = free_port()
    broker = RedisBroker(f"redis://:secret@127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        for call in (
            lambda: broker.publish([env("m")]),
            lambda: broker.reserve(["q"], 1, LEASE),
            lambda: broker.wait(["q"], 1),
            lambda: broker.watch_result("t", None, 1),
            lambda: broker.ack_with_records([("a", b"1"), ("b", None)], 60),
            lambda: broker.set_results({"a": b"1", "b": b"2"}, 60),
            lambda: broker.claim("beat", 60),
            lambda: broker.heartbeat("w", b"info", 60),
            broker.workers,
            broker.ping,
        ):
            with pytest.raises(OperationalError) as caught:
                call()
            assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)
            assert "secret" not in str(caught.value)
        assert time.monotonic() - started < 5, "a refused connection must fail promptly"
    finally:
        broker.close()


@pytest.mark.parametrize("version", ["4.0.14", "2.8.24"])
def test_older_redis_is_refused_naming_the_version(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(redis.Redis, "info", lambda *_a, **_k: {"redis_version": version})
    broker = RedisBroker(redis_url.replace("//", "//:secret@"))
    try:
        with pytest.raises(ImproperlyConfigured) as caught:
            broker.publish([env("m")])
        hidden = broker.url
        assert str(caught.value) == (
            f"Redis {version} found at {hidden}; Flask-Tasks needs Redis 5.0 or newer"
        )
    finally:
        broker.close()


def test_version_parsing() -> None:
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("5.0.14.1-rc") == (5, 0, 14, 1)
    check_version({"redis_version": "5.0.0"}, "redis://x")
    with pytest.raises(ImproperlyConfigured, match="Redis 4.9.9 found at redis://x"):
        check_version({"redis_version": "4.9.9"}, "redis://x")


def test_rediss_url_is_parsed_without_connecting() -> None:
    broker = RedisBroker("rediss://:secret@redis.example.invalid:6380/2?ssl_cert_reqs=none")
    try:
        assert broker.url == "rediss://:***@redis.example.invalid:6380/2?ssl_cert_reqs=none"
        pool = broker._client.connection_pool
        assert pool.connection_class is redis.SSLConnection
        assert pool.connection_kwargs["db"] == 2
    finally:
        broker.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs unix sockets")
def test_unix_socket_url_with_password() -> None:
    workdir = tempfile.mkdtemp(prefix="ft-unix-")
    socket_path = os.path.join(workdir, "redis.sock")
    args = [
        "--port",
        "0",
        "--unixsocket",
        socket_path,
        "--unixsocketperm",
        "700",
        "--requirepass",
        "secret",
        "--dir",
        workdir,
    ]
    try:
        with spawned(*server_args(*args)):
            probe = redis.Redis(unix_socket_path=socket_path, password="secret")
            try:
                assert until(lambda: answers(probe)), "unix-socket redis-server did not start"
            finally:
                probe.close()
            broker = open_broker(f"unix://:secret@{socket_path}?db=1", key_prefix="u")
            try:
                assert "secret" not in broker.url
                broker.publish([env("m", body=b"over a socket")])
                assert broker.reserve(["q"], 5, LEASE) == [Delivery("m", "q", 5, b"over a socket")]
            finally:
                broker.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_sentinel_url_finds_the_master(redis_url: str) -> None:
    master_port = redis_url.rsplit(":", 1)[1].split("/")[0]
    sentinel_port = free_port()
    workdir = tempfile.mkdtemp(prefix="ft-sentinel-")
    config = Path(workdir, "sentinel.conf")
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
    )
    try:
        with spawned(str(config), "--sentinel", "--loglevel", "warning"):
            probe = redis.Redis(port=sentinel_port)
            try:
                assert until(lambda: answers(probe)), "redis sentinel did not start"
            finally:
                probe.close()
            several = open_broker(
                f"redis+sentinel://:pw@127.0.0.1:{sentinel_port},127.0.0.1:1/mymaster/0"
            )
            several.close()
            assert several.url == (
                f"redis+sentinel://:***@127.0.0.1:{sentinel_port},127.0.0.1:1/mymaster/0"
            )
            broker = open_broker(
                f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster/0", key_prefix="s"
            )
            try:
                broker.publish([env("m")])
                assert [d.id for d in broker.reserve(["q"], 5, LEASE)] == ["m"]
                broker.ack(["m"])
            finally:
                broker.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_losing_the_server_raises_operational_error_and_reconnects() -> None:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ft-lost-")
    args = server_args("--port", str(port), "--bind", "127.0.0.1", "--dir", workdir)
    broker = RedisBroker(f"redis://127.0.0.1:{port}/0")
    probe = redis.Redis(port=port)
    try:
        with spawned(*args):
            assert until(lambda: answers(probe))
            broker.publish([env("before")])
            broker.wait(["q"], 0.01)
            assert broker.watch_result("t", None, 0.01) is None
        with pytest.raises(OperationalError, match=f"127.0.0.1:{port}"):
            broker.publish([env("during")])
        with pytest.raises(OperationalError, match=f"127.0.0.1:{port}"):
            broker.wait(["q"], 0.01)
        with spawned(*args):  # a restarted, empty server: scripts are loaded again
            assert until(lambda: answers(probe))
            broker.publish([env("after")])
            broker.wait(["q"], 0.01)
            assert broker.watch_result("t", None, 0.01) is None
            assert [d.id for d in broker.reserve(["q"], 5, LEASE)] == ["after"]
    finally:
        probe.close()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_an_option_redis_py_refuses_fails_at_once() -> None:
    with pytest.raises(ImproperlyConfigured, match="TASKS_BROKER_OPTIONS .* 'socket_tiemout'"):
        RedisBroker("redis://127.0.0.1:1/0", socket_tiemout=3)


def test_a_server_that_refuses_info_is_used_unchecked(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise redis.ResponseError("unknown command 'INFO'")

    monkeypatch.setattr(redis.Redis, "info", refuse)
    broker = RedisBroker(redis_url, key_prefix="no-info")
    try:
        broker.publish([env("m")])
        assert [d.id for d in broker.reserve(["q"], 1, LEASE)] == ["m"]
    finally:
        broker.close()


def test_connections_do_not_read_package_metadata(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py would read its version from the installed metadata for each connection
    object (slow, and in a forked worker child it writes over megabytes of shared pages)."""
    import importlib.metadata

    def refuse(name: str) -> str:
        raise AssertionError(f"read the metadata of {name!r}")

    monkeypatch.setattr(importlib.metadata, "version", refuse)
    broker = RedisBroker(redis_url, key_prefix="no-metadata")
    try:
        pool = broker._client.connection_pool
        for _ in range(3):
            pool.connection_class(**pool.connection_kwargs)
        broker.publish([env("m")])
        assert [d.id for d in broker.reserve(["q"], 1, LEASE)] == ["m"]
    finally:
        broker.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # lib_name: redis-py 7+ says so
def test_driver_options_given_by_the_user_are_kept(redis_url: str) -> None:
    broker = RedisBroker(redis_url, key_prefix="own-name", lib_name="my-app")
    try:
        kwargs = broker._client.connection_pool.connection_kwargs
        assert kwargs["lib_name"] == "my-app"
        assert "driver_info" not in kwargs
    finally:
        broker.close()

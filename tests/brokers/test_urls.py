"""Choosing an implementation by URL (``check_url``, ``open_broker``), ``Connections``,
and the rules the ``flask_tasks.brokers`` modules keep among themselves."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from flask_tasks.brokers import (
    Broker,
    Connections,
    Store,
    Transport,
    check_url,
    check_urls,
    hide_password,
    open_broker,
    open_transport,
)
from flask_tasks.brokers.memory import MemoryBroker
from flask_tasks.brokers.sqlite import SQLiteBroker
from flask_tasks.exceptions import ImproperlyConfigured

BROKERS = Path(__file__).parents[2] / "flask_tasks" / "brokers"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://localhost:6379/0", "redis"),
        ("REDIS://localhost", "redis"),
        ("rediss://:pw@host:6380/1", "redis"),
        ("unix:///tmp/redis.sock", "redis"),
        ("redis+sentinel://h1:26379,h2:26379/mymaster", "redis"),
        ("sqlite:///tasks.db", "sqlite"),
        ("memory://", "memory"),
        ("amqp://guest:guest@localhost//", "amqp"),
        ("AMQPS://user:pw@rabbit:5671/vhost", "amqp"),
    ],
)
def test_check_url_names_the_kind(url: str, kind: str) -> None:
    assert check_url(url, "TASKS_BROKER_URL") == kind


@pytest.mark.parametrize("url", ["kafka://guest:secret@rabbit//", "localhost:6379", "", "redis"])
def test_an_unknown_scheme_names_the_setting_and_the_known_ones(url: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        check_url(url, "TASKS_RESULT_BACKEND")
    message = str(caught.value)
    assert message.startswith("TASKS_RESULT_BACKEND ")
    assert "unknown scheme" in message
    assert "redis://" in message and "sqlite://" in message and "memory://" in message
    assert "secret" not in message


def test_open_broker_refuses_an_unknown_scheme_before_connecting() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown scheme 'kafka'.*redis://"):
        open_broker("kafka://guest:secret@rabbit//")


def test_open_broker_refuses_a_transport_only_url() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"amqp://guest:\*\*\*@rabbit// is a transport only"
    ):
        open_broker("amqp://guest:secret@rabbit//")


def test_open_transport_opens_rabbitmq_and_any_broker(tmp_path: Path, amqp_url: str) -> None:
    opened = [
        open_transport(amqp_url, key_prefix="app"),
        open_transport(f"sqlite:///{tmp_path / 'tasks.db'}", key_prefix="app"),
    ]
    try:
        assert [transport.kind for transport in opened] == ["amqp", "sqlite"]
        assert not isinstance(opened[0], Store)
        for transport in opened:
            transport.ping()
    finally:
        for transport in opened:
            transport.close()


def test_check_urls_needs_a_store_beside_rabbitmq() -> None:
    check_urls("amqp://localhost//", "redis://localhost")
    check_urls("redis://localhost", None)
    with pytest.raises(ImproperlyConfigured, match="set TASKS_RESULT_BACKEND to a store"):
        check_urls("amqp://localhost//", None)
    with pytest.raises(ImproperlyConfigured, match="TASKS_RESULT_BACKEND .* is RabbitMQ"):
        check_urls("redis://localhost", "amqp://localhost//")


def test_open_broker_opens_each_kind(tmp_path: Path, redis_url: str) -> None:
    opened = [
        open_broker("memory://"),
        open_broker(f"sqlite:///{tmp_path / 'tasks.db'}", key_prefix="app"),
        open_broker(redis_url, key_prefix="app"),
    ]
    try:
        assert [broker.kind for broker in opened] == ["memory", "sqlite", "redis"]
        for broker in opened:
            assert isinstance(broker, (Broker, Transport, Store))
            broker.ping()
    finally:
        for broker in opened:
            broker.close()


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:secret@host", "redis://user:***@host"),
        ("redis+sentinel://:pw@h1:26379,h2:26379/m", "redis+sentinel://:***@h1:26379,h2:26379/m"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("sqlite:////var/tasks.db", "sqlite:////var/tasks.db"),
    ],
)
def test_hide_password(url: str, hidden: str) -> None:
    assert hide_password(url) == hidden


# -- Connections ---------------------------------------------------------------------------


def test_connections_share_one_broker_without_a_result_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    for backend in (None, url):
        connections = Connections(url, backend, key_prefix="app")
        try:
            assert isinstance(connections.transport, SQLiteBroker)
            assert connections.store is connections.transport
            assert connections.broker is connections.transport
        finally:
            connections.close()


def test_connections_with_another_result_backend(tmp_path: Path) -> None:
    connections = Connections("memory://", f"sqlite:///{tmp_path / 'results.db'}")
    try:
        assert isinstance(connections.transport, MemoryBroker)
        assert isinstance(connections.store, SQLiteBroker)
        assert connections.broker is None  # no joint steps across two servers
        assert connections.store is connections.store  # opened once
    finally:
        connections.close()


def test_connections_open_rabbitmq_as_a_transport_beside_a_store(
    tmp_path: Path, amqp_url: str
) -> None:
    connections = Connections(amqp_url, f"sqlite:///{tmp_path / 'results.db'}", key_prefix="c")
    try:
        assert connections.transport.kind == "amqp"
        assert isinstance(connections.store, SQLiteBroker)
        assert connections.broker is None
    finally:
        connections.close()


def test_connections_refuse_rabbitmq_as_its_own_store(amqp_url: str) -> None:
    connections = Connections(amqp_url, key_prefix="c")
    try:
        assert connections.transport.kind == "amqp"
        assert connections.broker is None
        with pytest.raises(ImproperlyConfigured, match="set TASKS_RESULT_BACKEND to a store"):
            connections.store
    finally:
        connections.close()


def test_connections_open_again_after_close_and_in_a_forked_child() -> None:
    connections = Connections("memory://")
    first = connections.transport
    connections.close()
    assert connections.transport is not first
    second = connections.transport
    connections._pid = os.getpid() + 1  # as if this process were a forked child
    assert connections.transport is not second


def test_a_forked_child_keeps_the_redis_broker_its_parent_opened(
    redis_url: str, redis_client
) -> None:
    """A prefork worker opens the broker before forking: its children use that object
    (memory shared with the parent) with sockets of their own."""
    connections = Connections(redis_url, key_prefix="fork")
    try:
        opened = connections.transport
        assert opened.survives_fork
        opened.ping()
        clients = len(redis_client.client_list())
        connections.prepare_fork()
        assert len(redis_client.client_list()) == clients - 1  # its socket closed
        assert connections.transport is opened
        connections._pid = os.getpid() + 1  # as if this process were a forked child
        assert connections.transport is opened
        assert connections.store is opened
        opened.ping()  # usable: connects again
    finally:
        connections.close()


def test_before_a_fork_connections_close_what_does_not_survive_it(tmp_path: Path) -> None:
    connections = Connections("memory://", f"sqlite:///{tmp_path / 'results.db'}")
    try:
        transport, store = connections.transport, connections.store
        assert not transport.survives_fork and not store.survives_fork
        connections.prepare_fork()
        assert connections.transport is not transport
        assert connections.store is not store
    finally:
        connections.close()


# -- rules among the modules -------------------------------------------------------------------


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` (a module of ``flask_tasks.brokers``) imports,
    function-level imports included; ``from . import x`` counts as the package."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append(node.module or "")
            else:
                base = ["flask_tasks", "brokers"][: 3 - node.level]
                found.append(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_no_broker_module_imports_the_package_or_the_url_switch() -> None:
    modules = sorted(path for path in BROKERS.glob("*.py") if path.name != "__init__.py")
    assert len(modules) > 10
    for path in modules:
        for module in _imported_modules(path):
            assert module != "flask_tasks.brokers", f"{path.name} imports the package"
            if path.name not in {"connections.py", "urls.py"}:  # urls imports the backends
                assert module not in {
                    "flask_tasks.brokers.urls",
                    "flask_tasks.brokers.connections",
                }, f"{path.name} imports {module}"
            if module.startswith("flask_tasks"):
                assert module.startswith("flask_tasks.brokers.") or module == (
                    "flask_tasks.exceptions"
                ), f"{path.name} imports {module}: the brokers know nothing of the core"

"""Fixtures for the contract suites: each contract test runs once per implementation.

``transport``
    every name in :data:`TRANSPORTS` (``test_transport_contract*.py``),
``store``
    every name in :data:`STORES` (``test_store_contract.py``),
``broker``
    every name in :data:`BROKERS`, the implementations that are both and offer the joint
    steps (``test_broker_contract.py``).

Each has a ``*_spec`` fixture (the URL and key prefix, to open more connections) and an
``other_*`` fixture (a second connection to the same data; skipped where there is none).
``-k redis`` (or ``-k "not redis"``) selects by implementation. Each test gets data of its
own: a fresh memory store, a fresh SQLite file, or a unique Redis or PostgreSQL key
prefix (PostgreSQL: in a database made for the test session).

To add an implementation: add a :class:`Backend` to :data:`BACKENDS` (how to make a URL
for one test, and how to open it if not with ``open_broker``), then its name to each list
whose contract it meets (a RabbitMQ transport joins TRANSPORTS only).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from contract_helpers import BackendSpec, open_plain_transport, open_with_broker

from flask_tasks.brokers import Broker, Store, Transport


@dataclass(frozen=True)
class Backend:
    """An implementation under test."""

    #: ``(request, tmp_path) -> URL`` of an empty server for one test.
    url: Callable[[pytest.FixtureRequest, Path], str]
    #: Whether two connections see the same data.
    shared: bool = True
    #: ``(url, key_prefix) -> connection`` (a module-level function: spawned processes
    #: receive it).
    opener: Callable[[str, str], Any] = open_with_broker
    #: Contract tests this implementation cannot meet: test function name -> why. They
    #: are skipped for it alone, with the reason; its own tests show what it does instead.
    differs: dict[str, str] = field(default_factory=dict)


def _redis_url(request: pytest.FixtureRequest, _tmp_path: Path) -> str:
    request.getfixturevalue("redis_client")  # flushes the database around the test
    return str(request.getfixturevalue("redis_url"))


def _redis_cluster_url(request: pytest.FixtureRequest, _tmp_path: Path) -> str:
    return str(request.getfixturevalue("redis_cluster_url"))  # the key prefix isolates tests


_CLUSTER_TWO_SLOTS = (
    "a record hashes by task id, its message by queue: two slots, no atomic step across "
    "them. The record is written first, then the queue changes (a worker's outcome is "
    "never overwritten by PENDING or RETRY), so a watcher may see it a moment early"
)
#: What a Redis Cluster broker cannot do (docs/broker-redis-cluster.rst).
REDIS_CLUSTER_DIFFERS = {
    "test_publish_replacing_moves_queue_and_timing": (
        "each queue's messages live in the queue's own slot: republishing an id replaces it "
        "within its queue; finding it in another queue would need a cluster-wide index of "
        "ids written on every publish (one hot slot)"
    ),
    "test_a_published_record_is_never_seen_before_its_message": _CLUSTER_TWO_SLOTS,
    "test_a_retry_record_is_never_seen_before_the_release": _CLUSTER_TWO_SLOTS,
}


def _amqp_url(request: pytest.FixtureRequest, _tmp_path: Path) -> str:
    return str(request.getfixturevalue("amqp_url"))  # the session's vhost; tests use prefixes


#: Why RabbitMQ cannot meet some transport contract tests (tests/brokers/test_amqp_transport.py
#: shows what it does instead).
_AMQP_NO_REPLACE = (
    "RabbitMQ cannot take a waiting message out of a queue: publishing an id that waits "
    "already adds a second message (one this transport holds is replaced)"
)
#: The lease contract (test_transport_contract_leases.py) passes on RabbitMQ, whose counts
#: are those one transport can see: test_amqp_transport.py shows the messages it cannot count.
AMQP_DIFFERS = {
    "test_publish_replaces_a_stored_id": _AMQP_NO_REPLACE,
    "test_publish_replacing_moves_queue_and_timing": _AMQP_NO_REPLACE,
    "test_release_not_held_with_body_publishes_again": _AMQP_NO_REPLACE,
    "test_queue_counts_ready_delayed_and_reserved": (
        "RabbitMQ tells ready counts only (delayed messages wait in the delay queues, reserved "
        "ones are unacked); test_amqp_transport.py checks that it says so (None)"
    ),
}


def _postgres_url(request: pytest.FixtureRequest, _tmp_path: Path) -> str:
    return str(request.getfixturevalue("postgres_url"))  # the key prefix isolates each test


BACKENDS: dict[str, Backend] = {
    "memory": Backend(lambda _request, _tmp: "memory://", shared=False),
    "sqlite": Backend(lambda _request, tmp: f"sqlite:///{tmp / 'tasks.sqlite3'}"),
    "redis": Backend(_redis_url),
    "redis_cluster": Backend(_redis_cluster_url, differs=REDIS_CLUSTER_DIFFERS),
    "amqp": Backend(_amqp_url, opener=open_plain_transport, differs=AMQP_DIFFERS),
    "postgresql": Backend(_postgres_url),
}

#: Implementations of :class:`flask_tasks.brokers.Transport`.
TRANSPORTS = ["memory", "sqlite", "redis", "redis_cluster", "postgresql", "amqp"]
#: Implementations of :class:`flask_tasks.brokers.Store`.
STORES = ["memory", "sqlite", "redis", "redis_cluster", "postgresql"]
#: Implementations of :class:`flask_tasks.brokers.Broker` (transport, store, joint steps).
BROKERS = ["memory", "sqlite", "redis", "redis_cluster", "postgresql"]


def _spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendSpec]:
    kind = request.param
    backend = BACKENDS[kind]
    test = getattr(request.node, "originalname", request.node.name)
    if test in backend.differs:
        pytest.skip(f"{kind}:// differs here: {backend.differs[test]}")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    spec = BackendSpec(kind, backend.url(request, tmp_path), prefix, backend.shared, backend.opener)
    yield spec
    spec.close_all()


def _other(spec: BackendSpec) -> Any:
    if not spec.shared:
        pytest.skip(f"{spec.kind}:// connections do not share data")
    return spec.open()


# -- transports ----------------------------------------------------------------------------


@pytest.fixture(params=TRANSPORTS)
def transport_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendSpec]:
    yield from _spec(request, tmp_path)


@pytest.fixture
def transport(transport_spec: BackendSpec) -> Transport:
    """A transport with no messages, of the kind under test; closed after the test."""
    return transport_spec.open_transport()


@pytest.fixture
def other_transport(transport_spec: BackendSpec) -> Transport:
    """A second connection to the same transport; skipped where there is none."""
    opened: Transport = _other(transport_spec)
    return opened


# -- stores --------------------------------------------------------------------------------


@pytest.fixture(params=STORES)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendSpec]:
    yield from _spec(request, tmp_path)


@pytest.fixture
def store(store_spec: BackendSpec) -> Store:
    """An empty store of the kind under test; closed after the test."""
    return store_spec.open_store()


@pytest.fixture
def other_store(store_spec: BackendSpec) -> Store:
    """A second connection to the same store; skipped where there is none."""
    opened: Store = _other(store_spec)
    return opened


# -- brokers (both, with the joint steps) ------------------------------------------------


@pytest.fixture(params=BROKERS)
def broker_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendSpec]:
    yield from _spec(request, tmp_path)


@pytest.fixture
def broker(broker_spec: BackendSpec) -> Broker:
    """An empty broker of the kind under test; closed after the test."""
    return broker_spec.open_broker()


@pytest.fixture
def other_broker(broker_spec: BackendSpec) -> Broker:
    """A second connection to the same broker; skipped where there is none."""
    opened: Broker = _other(broker_spec)
    return opened

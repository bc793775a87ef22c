"""The ``broker`` fixture: every contract test runs once per broker (memory, sqlite, redis).

``-k redis`` (or ``-k "not redis"``) selects by broker. Each test gets a store of its own:
a fresh memory broker, a fresh SQLite file, or a unique Redis key prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from contract_helpers import BrokerSpec

from flask_tasks.brokers import Broker

BROKERS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BROKERS)
def broker_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerSpec]:
    kind = request.param
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    else:
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # flushes the database around the test
    spec = BrokerSpec(kind, url, prefix)
    yield spec
    for broker in spec.opened:
        broker.close()


@pytest.fixture
def broker(broker_spec: BrokerSpec) -> Broker:
    """A broker on an empty store of the kind under test; closed after the test."""
    return broker_spec.open()


@pytest.fixture
def other_broker(broker_spec: BrokerSpec) -> Broker:
    """A second broker on the same store (another connection); skipped for memory://."""
    if not broker_spec.shared:
        pytest.skip("memory:// brokers do not share a store")
    return broker_spec.open()


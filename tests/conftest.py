from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from postgres_server import postgres_server, scratch_database
from redis_cluster_server import redis_cluster
from redis_server import redis_server

#: The fixtures of the ``flask worker`` process tests (``setup``, ``workers``, ``app``).
pytest_plugins = ["process_helpers"]
#: Scenarios several of those tests share: their asserts explain a failure like a test's.
pytest.register_assert_rewrite("process_flows")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a private redis-server for this test session (never the machine's own)."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of a private three-master Redis Cluster for this test
    session. Tests keep apart by key prefix (the cluster is never flushed)."""
    with redis_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database of this test session's own (``flask_tasks_test_<random>``) on the
    machine's PostgreSQL, or on a throwaway server when none answers; dropped afterwards."""
    with postgres_server() as admin_url, scratch_database(admin_url) as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """A raw redis-py client on the session server; the database is flushed after each test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def threaded_worker():
    """Start workers for an app in background threads (the plugin's ``start_worker``);
    every one is stopped after the test."""
    from flask_tasks.testing import start_worker

    started = []

    def start(app, **options):
        worker, thread = start_worker(app, **options)
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "worker thread did not stop"


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """``amqp://`` URL of a RabbitMQ vhost of this test session's own (deleted afterwards)."""
    from rabbitmq_server import rabbitmq_vhost

    with rabbitmq_vhost() as url:
        yield url

"""Results in another database of the broker's Redis server (``TASKS_RESULT_BACKEND`` =
the same server, db N): the broker's scripts write the records there themselves, so a
message and its record still change together, in one round trip."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from flask_tasks import Tasks
from flask_tasks.brokers import Envelope
from flask_tasks.brokers.redis import RedisBroker
from flask_tasks.brokers.redis_connection import records_database
from flask_tasks.exceptions import OperationalError
from flask_tasks.runtime import Runtime
from flask_tasks.worker.consumer import Consumer


@pytest.mark.parametrize(
    ("broker", "backend", "expected"),
    [
        ("redis://h:6379/0", "redis://h:6379/1", 1),
        ("redis://h:6379", "redis://h:6379/2", 2),
        ("redis://:pw@h/0", "redis://:pw@h/3", 3),
        ("unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=4", 4),
        ("redis://h:6379/1", "redis://h:6379/1", None),  # the same database
        ("redis://h:6379/0", "redis://other:6379/1", None),  # another server
        ("redis://h:6379/0", "redis://h:6380/1", None),
        ("redis://:pw@h/0", "redis://h/1", None),  # other credentials
        ("rediss://h/0", "redis://h/1", None),  # TLS on one side only
        ("redis://h/0", "sqlite:///results.sqlite3", None),
        ("redis+sentinel://h:26379/main/0", "redis+sentinel://h:26379/main/1", None),
    ],
)
def test_records_database(broker: str, backend: str, expected: int | None) -> None:
    assert records_database(broker, backend) == expected


@pytest.fixture
def prefix() -> str:
    return f"recdb-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def db1(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/1")
    yield client
    client.close()


@pytest.fixture
def app(redis_url: str, redis_client: redis.Redis, prefix: str) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        TASKS_BROKER_URL=redis_url,
        TASKS_RESULT_BACKEND=f"{redis_url.rsplit('/', 1)[0]}/1",
        TASKS_KEY_PREFIX=prefix,
        SECRET_KEY="records-elsewhere",
    )
    tasks = Tasks(app)

    @tasks.task(name="double")
    def double(value: int) -> int:
        return value * 2

    yield app
    app.extensions["tasks"].close()


def _result_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(client.keys(f"{{{prefix}}}:result:*"))


def test_records_go_to_the_store_database_with_the_message(
    app: Flask, redis_client: redis.Redis, db1: redis.Redis, prefix: str
) -> None:
    runtime: Runtime = app.extensions["tasks"]
    assert runtime.connections.joint is runtime.transport
    assert runtime.connections.broker is None
    with app.app_context():
        result = runtime.registry["double"].delay(21)
        assert runtime.transport.queue_length("default") == 1
        assert _result_keys(db1, prefix) == [f"{{{prefix}}}:result:{result.id}".encode()]
        assert _result_keys(redis_client, prefix) == []
        assert result.state == "PENDING"
        consumer = Consumer(runtime, ["default"], announce_ready=False)
        assert consumer._fetch()
        consumer._execute(*consumer._pending.popleft())
        consumer._flush_acks(force=True)
        assert result.get(timeout=10) == 42
        assert runtime.transport.queue_length("default") == 0
        assert _result_keys(redis_client, prefix) == []


def test_reserve_flags_revocations_kept_with_the_records(app: Flask) -> None:
    runtime: Runtime = app.extensions["tasks"]
    with app.app_context():
        kept = runtime.registry["double"].delay(1)
        revoked = runtime.registry["double"].delay(2)
        runtime.store.revoke([revoked.id], 60)
        deliveries = runtime.transport.reserve(["default"], 10, 30)
    flags = {delivery.id: delivery.revoked for delivery in deliveries}
    assert flags == {kept.id: False, revoked.id: True}


def test_get_with_no_time_left_still_reads_the_record(app: Flask) -> None:
    runtime: Runtime = app.extensions["tasks"]
    with app.app_context():
        result = runtime.registry["double"].delay(5)
        consumer = Consumer(runtime, ["default"], announce_ready=False)
        assert consumer._fetch()
        consumer._execute(*consumer._pending.popleft())
        consumer._flush_acks(force=True)
        # The handle still holds the PENDING record it was sent with; timeout 0 must not
        # report a timeout without reading the store once.
        assert result.get(timeout=0) == 10


def test_a_records_database_the_server_refuses_writes_nothing(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    broker = RedisBroker(redis_url, key_prefix=prefix, records_db=999)
    plain = RedisBroker(redis_url, key_prefix=prefix)
    try:
        with pytest.raises(OperationalError, match="DB index is out of range"):
            broker.publish_with_records(
                [Envelope("m1", "default", b"body")], {"m1": b"PENDING"}, 60
            )
        assert broker.queue_length("default") == 0  # the record first: nothing written
        broker.publish_with_records([Envelope("m2", "default", b"body")], {}, 60)
        with pytest.raises(OperationalError, match="DB index is out of range"):
            broker.reserve(["default"], 1, 30)
        assert broker.queue_length("default") == 1  # refused before leasing anything
        (delivery,) = plain.reserve(["default"], 1, 30)
        with pytest.raises(OperationalError, match="DB index is out of range"):
            broker.ack_with_records([(delivery, b"SUCCESS")], 60)
        assert broker.held(["m2"]) == {"m2"}  # not acked: its lease brings it back
    finally:
        broker.close()
        plain.close()

"""A group's publish on Redis (``publish_many.lua``): fresh messages, ready now, each
ready list passed once. What it stores must equal what ``publish.lua`` stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from flask_tasks.brokers import Envelope
from flask_tasks.brokers.redis import RedisBroker
from flask_tasks.exceptions import OperationalError

LEASE = 30.0


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker(redis_url: str, redis_client: redis.Redis, prefix: str) -> Iterator[RedisBroker]:
    opened = RedisBroker(redis_url, key_prefix=prefix)
    yield opened
    opened.close()


def fresh(message_id: str, queue: str = "q", priority: int = 5) -> Envelope:
    return Envelope(message_id, queue, f"body-{message_id}".encode(), priority, None, True)


def test_fresh_messages_go_in_one_script_each_list_once(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    assert broker.reserve(["q", "r"], 1, LEASE) == []  # marks every list empty
    envelopes = [fresh(f"m{i:04d}", "q" if i % 5 else "r", 5 if i % 3 else 2) for i in range(2500)]
    records = {e.id: b"PENDING " + e.id.encode() for e in envelopes if e.id != "m0001"}
    redis_client.config_resetstat()
    broker.publish_with_records(envelopes, records, 60)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    # No stored-id checks, generations or notifications: every id is fresh.
    assert {"cmdstat_hmget", "cmdstat_incrby", "cmdstat_publish"}.isdisjoint(stats)
    assert broker.queue_length("q") == 2000 and broker.queue_length("r") == 500
    assert broker.get_result("m0002") == b"PENDING m0002"
    assert broker.get_result("m0001") is None
    assert 0 < redis_client.pttl(broker.keys.result("m0002")) <= 60_000
    taken = broker.reserve(["q"], 3000, LEASE)
    expected = [e for e in envelopes if e.queue == "q"]
    expected.sort(key=lambda e: e.priority)  # priority 2 first, each list in order
    assert [(d.id, d.body, d.priority) for d in taken] == [
        (e.id, e.body, e.priority) for e in expected
    ]
    assert [d.id for d in broker.reserve(["r"], 3000, LEASE)][:3] == ["m0000", "m0015", "m0030"]


def test_a_fresh_message_published_again_replaces_the_first(broker: RedisBroker) -> None:
    broker.publish_with_records([fresh("a"), fresh("b")], {}, 60)
    broker.publish_with_records([Envelope("a", "q", b"again")], {}, 60)  # not fresh
    assert broker.queue_length("q") == 2
    assert [(d.id, d.body) for d in broker.reserve(["q"], 5, LEASE)] == [
        ("b", b"body-b"),
        ("a", b"again"),
    ]


def test_a_delayed_or_known_id_takes_the_general_script(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    later = Envelope("later", "q", b"x", 5, broker.now() + 60, True)
    broker.publish_with_records([fresh("now"), later], {}, 60)
    assert redis_client.hexists(broker.keys.meta, "later")
    assert redis_client.zscore(broker.keys.delayed, "later") is not None
    assert [d.id for d in broker.reserve(["q"], 5, LEASE)] == ["now"]


def test_records_in_another_database(redis_url: str, prefix: str) -> None:
    broker = RedisBroker(redis_url, key_prefix=prefix, records_db=1)
    db1 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    try:
        broker.publish_with_records([fresh("a"), fresh("b")], {"a": b"P", "b": b"P"}, 60)
        assert db1.get(broker.keys.result("a")) == b"P"
        assert broker.get_result("a") is None  # not in the messages' database
        assert broker.queue_length("q") == 2
    finally:
        db1.delete(broker.keys.result("a"), broker.keys.result("b"))
        db1.close()
        broker.close()


def test_a_records_database_the_server_refuses_writes_nothing(redis_url: str, prefix: str) -> None:
    broker = RedisBroker(redis_url, key_prefix=prefix, records_db=999)
    try:
        with pytest.raises(OperationalError, match="DB index is out of range"):
            broker.publish_with_records([fresh("a"), fresh("b")], {"a": b"P"}, 60)
        assert broker.queue_length("q") == 0
    finally:
        broker.close()


def test_a_priority_out_of_range_is_refused_before_anything_is_stored(
    broker: RedisBroker,
) -> None:
    with pytest.raises(ValueError, match="priority"):
        broker.publish_with_records([fresh("a"), fresh("b", priority=12)], {}, 60)
    assert broker.queue_length("q") == 0

"""The Redis broker's reserve over many queues: a call carries the keys of the queues it
should take from only (see ``flask_tasks/brokers/redis_reserve.py``), and still takes in
queue precedence, due and expired messages first."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
import redis
from redis.connection import AbstractConnection

from flask_tasks.brokers import Envelope
from flask_tasks.brokers.redis import RedisBroker

LEASE = 30.0
QUEUES = [f"q{i}" for i in range(20)]


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker(redis_url: str, redis_client: redis.Redis, prefix: str) -> Iterator[RedisBroker]:
    opened = RedisBroker(redis_url, key_prefix=prefix)
    yield opened
    opened.close()


@pytest.fixture
def other(redis_url: str, prefix: str) -> Iterator[RedisBroker]:
    opened = RedisBroker(redis_url, key_prefix=prefix)
    yield opened
    opened.close()


def publish(broker: RedisBroker, queue: str, ids: list[str]) -> None:
    broker.publish([Envelope(message_id, queue, b"x") for message_id in ids])


@contextmanager
def script_keys() -> Iterator[list[int]]:
    """The number of KEYS of each EVALSHA sent on any connection meanwhile."""
    counts: list[int] = []
    original = AbstractConnection.send_packed_command

    def spy(connection: AbstractConnection, command: object, *args: object) -> None:
        packed = b"".join(command) if isinstance(command, list) else command
        assert isinstance(packed, bytes)
        words = packed.split(b"\r\n")
        if len(words) > 6 and words[2].upper() == b"EVALSHA":
            counts.append(int(words[6]))  # *N, $7, EVALSHA, $40, sha, $n, numkeys
        original(connection, command, *args)  # type: ignore[no-untyped-call]

    with mock.patch.object(AbstractConnection, "send_packed_command", autospec=True) as sent:
        sent.side_effect = spy
        yield counts


def test_a_busy_reserve_carries_the_keys_of_the_queues_it_takes_from(
    broker: RedisBroker,
) -> None:
    for queue in QUEUES:
        publish(broker, queue, [f"{queue}-{n}" for n in range(3)])
    with script_keys() as first:
        taken = broker.reserve(QUEUES, 4, LEASE)
    assert [d.id for d in taken] == ["q0-0", "q0-1", "q0-2", "q1-0"]
    assert first == [8 + 11 * 20 + 1]  # no ready counts known yet: every queue's keys
    with script_keys() as second:
        taken = broker.reserve(QUEUES, 4, LEASE)
    assert [d.id for d in taken] == ["q1-1", "q1-2", "q2-0", "q2-1"]
    # q1 (2 left) and q2 (3) cover the count, and the next queue holding some (q3).
    assert second == [8 + 11 * 3 + 1]


def test_work_in_an_earlier_queue_without_keys_is_taken_first(
    broker: RedisBroker, other: RedisBroker
) -> None:
    publish(broker, "q5", [f"late{n}" for n in range(10)])
    assert len(broker.reserve(QUEUES, 2, LEASE)) == 2  # the next call: q5's keys (and none)
    publish(other, "q1", ["early"])
    with script_keys() as calls:
        taken = broker.reserve(QUEUES, 2, LEASE)
    assert [d.id for d in taken] == ["early", "late2"]
    assert calls == [8 + 11 + 1, 8 + 11 * 20 + 1]  # stopped at q1, then every queue


def test_an_expired_lease_in_a_queue_without_keys_comes_first(
    broker: RedisBroker, other: RedisBroker
) -> None:
    publish(broker, "q5", [f"late{n}" for n in range(10)])
    assert len(broker.reserve(QUEUES, 2, LEASE)) == 2
    publish(other, "q2", ["lost"])
    assert [d.id for d in other.reserve(["q2"], 1, 0.01)] == ["lost"]
    time.sleep(0.05)  # its lease runs out
    with script_keys() as calls:
        taken = broker.reserve(QUEUES, 2, LEASE)
    assert [d.id for d in taken] == ["lost", "late2"]
    assert len(calls) == 2  # promoting it needs q2's keys: every queue's, then


def test_a_short_reserve_looks_at_every_queue_and_empties_their_wake_lists(
    broker: RedisBroker, other: RedisBroker, redis_client: redis.Redis
) -> None:
    publish(broker, "q3", ["a", "b", "c", "d", "e"])
    broker.reserve(QUEUES, 2, LEASE)  # the next call: q3's keys
    assert [d.id for d in other.reserve(["q3"], 2, LEASE)] == ["c", "d"]
    redis_client.rpush(broker.keys.wake_list("q9"), "1")  # a stale token
    with script_keys() as calls:
        assert [d.id for d in broker.reserve(QUEUES, 2, LEASE)] == ["e"]
    assert calls == [8 + 11 + 1, 8 + 11 * 20 + 1]  # q3 came short: then every queue
    assert not redis_client.exists(broker.keys.wake_list("q9"))
    with script_keys() as calls:
        assert broker.reserve(QUEUES, 2, LEASE) == []
    assert calls == [8 + 11 * 20 + 1]


def test_an_expired_lease_in_a_later_queue_is_promoted_in_the_same_reserve(
    broker: RedisBroker, other: RedisBroker
) -> None:
    publish(broker, "q1", [f"first{n}" for n in range(10)])
    assert len(broker.reserve(QUEUES, 2, LEASE)) == 2  # the next call: q1's keys
    publish(other, "q9", ["lost"])
    assert [d.id for d in other.reserve(["q9"], 1, 0.01)] == ["lost"]
    time.sleep(0.05)  # its lease runs out
    with script_keys() as calls:
        taken = broker.reserve(QUEUES, 2, LEASE)
    assert [d.id for d in taken] == ["first2", "first3"]  # q1 comes first
    assert calls == [8 + 11 + 1, 8 + 11 + 1]  # then q9's keys, to promote it
    assert broker.queue_length("q9") == 1

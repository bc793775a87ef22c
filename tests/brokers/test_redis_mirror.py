"""The Redis broker gives the same answers as the memory broker, the reference, for the
same random sequences of operations."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from flask_tasks.brokers import Delivery, Envelope
from flask_tasks.brokers.memory import MemoryBroker
from flask_tasks.brokers.redis import RedisBroker

LEASE = 30.0


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker(redis_url: str, redis_client: redis.Redis, prefix: str) -> Iterator[RedisBroker]:
    opened = RedisBroker(redis_url, key_prefix=prefix)
    yield opened
    opened.close()


def env(
    message_id: str,
    queue: str = "q",
    priority: int = 5,
    eta: float | None = None,
    body: bytes | None = None,
) -> Envelope:
    return Envelope(message_id, queue, body or message_id.encode(), priority, eta)


# -- the same answers as the reference broker ----------------------------------------------


class Mirror:
    """Runs each call on the memory broker and on Redis; the answers must agree."""

    def __init__(self, redis_broker: RedisBroker) -> None:
        self.memory = MemoryBroker()
        self.redis = redis_broker

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        expected = getattr(self.memory, name)(*args, **kwargs)
        actual = getattr(self.redis, name)(*args, **kwargs)
        assert actual == expected, f"{name}{args} {kwargs}"
        return actual


@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_the_memory_broker(broker: RedisBroker, seed: int) -> None:
    rng = random.Random(seed)
    mirror = Mirror(broker)
    ids, queues = [f"m{i}" for i in range(8)], ["a", "b"]
    held: list[Delivery] = []
    for step in range(300):
        now, operation = time.time(), rng.random()
        eta = rng.choice([None, None, now - 1, now + 1000])
        if operation < 0.3:
            envelopes = [
                env(
                    rng.choice(ids),
                    rng.choice(queues),
                    rng.randrange(10),
                    eta,
                    f"body {step}.{n}".encode(),
                )
                for n in range(rng.randint(1, 3))
            ]
            mirror("publish", envelopes)
        elif operation < 0.55:
            expire = rng.random() < 0.2  # an already expired lease, one message at a time
            order = rng.sample(queues, rng.randint(1, 2))
            held += mirror(
                "reserve", order, 1 if expire else rng.randint(1, 4), -1.0 if expire else LEASE
            )
        elif operation < 0.65 and held:
            mirror("ack", [held.pop(rng.randrange(len(held))).id])
        elif operation < 0.8 and held:
            body = rng.choice([None, f"retry {step}".encode()])
            mirror("release", held.pop(rng.randrange(len(held))).id, body, eta)
        elif operation < 0.85:
            mirror("release", rng.choice(ids), rng.choice([None, b"not held"]))
        elif operation < 0.9 and held:
            mirror("dead_letter", held.pop(rng.randrange(len(held))), f"step {step}")
        elif operation < 0.95:
            mirror("retry_dead_letter", rng.choice(ids))
        elif operation < 0.97:
            mirror("purge", rng.choice(queues))
        for queue in queues:
            mirror("queue_length", queue)
        dead = {letter.id for letter in mirror.memory.dead_letters(100)}
        assert {letter.id for letter in broker.dead_letters(100)} == dead


def test_expired_leases_return_in_deadline_order_like_the_memory_broker(
    broker: RedisBroker,
) -> None:
    mirror = Mirror(broker)
    mirror("publish", [env("a"), env("b"), env("c")])
    mirror("reserve", ["q"], 1, 0.2)
    mirror("reserve", ["q"], 1, 0.1)
    time.sleep(0.25)
    assert [d.id for d in mirror("reserve", ["q"], 3, LEASE)] == ["b", "a", "c"]

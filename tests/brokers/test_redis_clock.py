"""The Redis broker judges due times and leases by the server's clock (``TIME``), so a
process whose own clock is wrong changes nothing; and a ready-list entry it did not
write is dropped, not an error."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from flask_tasks.brokers import Envelope
from flask_tasks.brokers.redis import RedisBroker

SKEW = 300.0


@pytest.fixture
def broker(redis_url: str, redis_client: redis.Redis) -> Iterator[RedisBroker]:
    opened = RedisBroker(redis_url, key_prefix=f"t-{uuid.uuid4().hex[:10]}")
    yield opened
    opened.close()


@pytest.fixture
def fast_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's clock runs ``SKEW`` seconds ahead from here on."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)


def test_a_fast_clock_does_not_take_a_delayed_message_early(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.publish([Envelope("later", "q", b"x", eta=time.time() + 60)])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)
    assert broker.reserve(["q"], 1, 30) == []


def test_a_fast_clock_does_not_take_a_running_task(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.publish([Envelope("running", "q", b"x")])
    assert [d.id for d in broker.reserve(["q"], 1, 120)] == ["running"]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)
    assert broker.reserve(["q"], 1, 120) == []


@pytest.mark.usefixtures("fast_clock")
def test_a_fast_publisher_delays_by_the_countdown_it_meant(broker: RedisBroker) -> None:
    broker.publish([Envelope("countdown", "q", b"x", eta=time.time() + 60)])
    assert broker.reserve(["q"], 1, 30) == []
    [(_id, due)] = broker._client.zrange(broker.keys.delayed, 0, 0, withscores=True)
    seconds, micros = broker._client.time()
    assert 50 < due - (seconds + micros / 1e6) <= 60


@pytest.mark.usefixtures("fast_clock")
def test_a_fast_consumer_renews_and_retries_by_the_server_clock(broker: RedisBroker) -> None:
    broker.publish([Envelope("m", "q", b"x")])
    [delivery] = broker.reserve(["q"], 1, 0.3)
    broker.extend([delivery], 30)
    time.sleep(0.4)
    assert broker.reserve(["q"], 1, 30) == []  # renewed for 30 s by the server's clock
    broker.release(delivery, body=b"retry", eta=time.time() + 0.3)
    assert broker.reserve(["q"], 1, 30) == []
    time.sleep(0.4)
    [again] = broker.reserve(["q"], 1, 30)
    assert again.body == b"retry"


def test_a_fast_consumer_waits_for_a_delayed_message(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.publish([Envelope("later", "q", b"x", eta=time.time() + 60)])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)
    started = time.monotonic()
    broker.wait(["q"], 0.5)
    assert time.monotonic() - started >= 0.4  # not at once, as if it were due


def test_a_malformed_ready_entry_is_dropped(broker: RedisBroker, redis_client: redis.Redis) -> None:
    redis_client.rpush(broker.keys.ready_list("q", 5), b"no separator here")
    broker.publish([Envelope("m", "q", b"x")])
    assert [d.id for d in broker.reserve(["q"], 5, 30)] == ["m"]
    redis_client.rpush(broker.keys.ready_list("q", 5), b"still none")
    assert broker.purge("q") == 0

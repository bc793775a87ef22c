"""What only the Redis broker promises: key layout, the Lua scripts, round trips and cost,
wake-ups through pub/sub, fork safety. Connections and URLs: ``test_redis_connection.py``.

The shared behaviour is in the contract suite (``test_contract*.py``). These tests use the
session's private redis-server (``redis_url``), each under a key prefix of its own.
"""

from __future__ import annotations

import functools
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import pytest
import redis
from redis.connection import AbstractConnection
from redis.crc import key_slot

from flask_tasks.brokers import Delivery, Envelope
from flask_tasks.brokers.memory import MemoryBroker
from flask_tasks.brokers.redis import RedisBroker
from flask_tasks.brokers.redis_keys import RedisKeys

LUA = Path(__file__).parents[2] / "flask_tasks" / "brokers" / "lua"
LEASE = 30.0


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
    """A second broker on the same store, with connections of its own."""
    opened = RedisBroker(redis_url, key_prefix=prefix)
    yield opened
    opened.close()


def env(message_id: str, queue: str = "q", priority: int = 5, eta: float | None = None,
        body: bytes | None = None) -> Envelope:
    return Envelope(message_id, queue, body or message_id.encode(), priority, eta)


# -- keys and scripts ---------------------------------------------------------------------


def test_every_key_is_under_the_prefix_in_one_slot(
    broker: RedisBroker, redis_client: redis.Redis, prefix: str
) -> None:
    now = time.time()
    broker.publish([env("a"), env("b", "other", 0), env("later", eta=now + 60)],
                   records={"a": b"PENDING"}, record_ttl=60)
    [first] = broker.reserve(["q"], 1, LEASE)
    broker.release(first.id, body=b"retry", eta=now + 60, record=b"RETRY", record_ttl=60)
    [held] = broker.reserve(["other"], 1, LEASE)
    broker.dead_letter(held, "bad")
    broker.retry_dead_letter(held.id)
    broker.set_result("t", b"SUCCESS", 0)
    broker.revoke(["t"], 60)
    broker.incr("chord", 60)
    keys = [key.decode() for key in redis_client.scan_iter("*")]
    assert len(keys) >= 10
    assert all(key.startswith(f"{{{prefix}}}:") for key in keys), keys
    assert len({key_slot(key.encode()) for key in keys}) == 1


def test_prefix_hash_tag() -> None:
    assert RedisKeys("flask_tasks").base == "{flask_tasks}"
    assert RedisKeys("{shop}:tasks").base == "{shop}:tasks"
    assert RedisKeys("a{b").base == "{a{b}"


def test_each_script_starts_with_a_header() -> None:
    scripts = sorted(LUA.glob("*.lua"))
    assert len(scripts) >= 10
    for script in scripts:
        header = script.read_text(encoding="utf-8").split("\n\n", 1)[0]
        assert header.startswith(f"-- {script.name}: "), script.name
        assert all(line.startswith("--") for line in header.splitlines()), script.name
        for word in ("KEYS", "ARGV", "Returns"):
            assert word in header, f"{script.name} header does not list {word}"


#: What a script may name as the key of a command: a KEYS entry, a local bound to one, or
#: (for PUBLISH) a channel from ARGV. Never a name built with "..".
_KEY_ARGUMENT = re.compile(
    r"^(KEYS\[[^\]]+\]|META|BODIES|DELAYED|LEASES|READY|SEQUENCE|REVOKED|key|list_key|source|channel"
    r"|ARGV\[\d\]|KEYS\[#KEYS\])$"
)


def test_scripts_only_touch_keys_passed_in_keys() -> None:
    call = re.compile(r'redis\.call\("(\w+)",\s*([^,)]+)')
    for script in LUA.glob("*.lua"):
        for command, key in call.findall(script.read_text(encoding="utf-8")):
            assert ".." not in key, f"{script.name}: {command} on a built name {key}"
            assert _KEY_ARGUMENT.match(key.strip()), f"{script.name}: {command} {key}"


def test_scripts_survive_a_script_flush(broker: RedisBroker, redis_client: redis.Redis) -> None:
    broker.publish([env("m")])
    redis_client.script_flush()
    assert [d.id for d in broker.reserve(["q"], 1, LEASE)] == ["m"]
    redis_client.script_flush()
    broker.ack("m", b"done", 60)
    assert broker.get_result("m") == b"done"


# -- round trips and cost ------------------------------------------------------------------


@contextmanager
def round_trips() -> Iterator[mock.MagicMock]:
    """Count the commands (or pipelines) written to any Redis connection."""
    original = AbstractConnection.send_packed_command
    with mock.patch.object(
        AbstractConnection, "send_packed_command", autospec=True, side_effect=original
    ) as sent:
        yield sent


def test_hot_paths_take_one_round_trip_each(broker: RedisBroker) -> None:
    broker.ping()  # the first call checks the server and loads the scripts
    with round_trips() as publish:
        broker.publish([env(f"m{i}") for i in range(5)], records={"m0": b"PENDING"})
    with round_trips() as reserve:
        taken = broker.reserve(["q"], 5, LEASE)
    with round_trips() as ack:
        broker.ack(taken[0].id, b"SUCCESS", 60)
    with round_trips() as extend:
        broker.extend([d.id for d in taken], LEASE)
    with round_trips() as revoked:
        broker.revoked(["m1", "m2"])
    with round_trips() as retry:  # the broker remembers the queue of what it handed out
        broker.release(taken[1].id, body=b"again", eta=time.time() + 60, record=b"RETRY")
    assert len(taken) == 5
    counts = [calls.call_count for calls in (publish, reserve, ack, extend, revoked, retry)]
    assert counts == [1] * 6


def server_commands(client: redis.Redis) -> int:
    """Commands the server ran (inside scripts too) since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return sum(
        int(value["calls"]) for name, value in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    )


def test_reserve_cost_does_not_grow_with_the_store(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    def reserve_cost() -> int:
        redis_client.config_resetstat()
        assert len(broker.reserve(["q"], 10, LEASE)) == 10
        return server_commands(redis_client)

    broker.publish([env(f"small{i}") for i in range(20)])
    small = reserve_cost()
    broker.purge("q")

    later = time.time() + 600
    broker.publish([env(f"held{i}") for i in range(2000)])
    broker.reserve(["q"], 2000, LEASE)
    broker.publish([env(f"late{i}", eta=later) for i in range(5000)])
    broker.publish([env(f"big{i}") for i in range(5000)])
    assert reserve_cost() == small


def test_replacing_a_ready_message_keeps_counts_exact(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    for round_number in range(20):
        broker.publish([env("m", body=f"v{round_number}".encode())])
    assert broker.queue_length("q") == 1
    assert redis_client.llen(broker.keys.ready_list("q", 5)) == 20  # 19 stale entries
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("m", "q", 5, b"v19")]
    assert redis_client.llen(broker.keys.ready_list("q", 5)) == 0
    assert broker.queue_length("q") == 0


# -- promotion by consumers of other queues ----------------------------------------------


def test_a_consumer_of_another_queue_promotes_due_and_expired_messages(
    broker: RedisBroker,
) -> None:
    broker.publish([env("due", eta=time.time() + 0.1), env("leased", "mail")])
    assert [d.id for d in broker.reserve(["mail"], 1, 0.1)] == ["leased"]
    time.sleep(0.15)
    assert broker.reserve(["nobody-publishes-here"], 5, LEASE) == []
    assert broker.queue_length("q") == 1
    assert broker.queue_length("mail") == 1
    assert [d.id for d in broker.reserve(["q", "mail"], 5, LEASE)] == ["due", "leased"]


def test_dead_letters_are_capped(redis_url: str, redis_client: redis.Redis) -> None:
    broker = RedisBroker(redis_url, key_prefix="cap", dead_letter_limit=3)
    try:
        broker.publish([env(f"m{i}") for i in range(5)])
        for delivery in broker.reserve(["q"], 5, LEASE):
            broker.dead_letter(delivery, f"reason {delivery.id}")
            time.sleep(0.002)
        assert [letter.id for letter in broker.dead_letters(10)] == ["m4", "m3", "m2"]
        assert redis_client.hlen(broker.keys.dead) == 3
        assert broker.retry_dead_letter("m0") is False
    finally:
        broker.close()


def test_priority_outside_zero_to_nine_and_empty_queue_names_are_refused(
    broker: RedisBroker,
) -> None:
    with pytest.raises(ValueError, match="priority 10; priorities run from 0 to 9"):
        broker.publish([env("m", priority=10)])
    with pytest.raises(ValueError, match="names no queue"):
        broker.publish([env("m", queue="")])


# -- waking through pub/sub ---------------------------------------------------------------


def wait_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[float]]:
    returned: list[float] = []

    def run() -> None:
        call()
        returned.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, returned


def test_wait_wakes_within_milliseconds_of_a_publish(
    broker: RedisBroker, other: RedisBroker
) -> None:
    broker.wait(["q"], 0.01)  # the subscriber is ready and kept
    thread, returned = wait_in_thread(lambda: broker.wait(["q"], 10))
    time.sleep(0.2)
    published_at = time.monotonic()
    other.publish([env("m")])
    thread.join(5)
    assert returned, "wait() did not return"
    assert returned[0] - published_at < 0.5


def test_waiting_again_reuses_the_subscription(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.wait(["q", "r"], 0.01)
    clients = len(redis_client.client_list())
    redis_client.config_resetstat()
    for _ in range(5):
        broker.wait(["q", "r"], 0.01)
    stats = redis_client.info("commandstats")
    assert "cmdstat_subscribe" not in stats
    assert len(redis_client.client_list()) == clients


def test_watch_result_wakes_on_a_write_and_reuses_its_connection(
    broker: RedisBroker, other: RedisBroker, redis_client: redis.Redis
) -> None:
    assert broker.watch_result("t", None, 0.05) is None
    other.ping()
    clients = len(redis_client.client_list())
    for round_number in range(3):
        record = f"r{round_number}".encode()
        last = broker.get_result("t")
        thread, returned = wait_in_thread(functools.partial(broker.watch_result, "t", last, 10))
        time.sleep(0.1)
        written_at = time.monotonic()
        other.set_result("t", record, 60)
        thread.join(5)
        assert returned and returned[0] - written_at < 0.5
    assert len(redis_client.client_list()) <= clients  # no connection per wait


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_opens_its_own_connections(
    broker: RedisBroker, other: RedisBroker
) -> None:
    broker.wait(["q"], 0.01)
    broker.watch_result("t", None, 0.01)
    connection_id = broker._client.client_id()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            broker.publish([env("child")])
            broker.wait(["q"], 0.01)
            taken = broker.reserve(["q"], 5, LEASE)
            broker.ack("child", b"from the child", 60)
            broker.watch_result("t", None, 0.01)
            code = 0 if [d.id for d in taken] == ["child"] else 2
            broker.close()  # must not shut down the parent's sockets
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert broker.get_result("child") == b"from the child"
    assert broker._client.client_id() == connection_id  # the child left it open
    # The parent's pooled subscriber still works.
    thread, returned = wait_in_thread(lambda: broker.wait(["q"], 10))
    time.sleep(0.1)
    other.publish([env("parent")])
    thread.join(5)
    assert returned


def test_release_checks_the_queue_it_remembers(broker: RedisBroker, other: RedisBroker) -> None:
    broker.publish([env("m")])
    [held] = broker.reserve(["q"], 1, LEASE)
    other.publish([env("m", "elsewhere", body=b"moved")])  # replaces it, dropping the lease
    broker.release(held.id)  # remembered "q"; finds "elsewhere" and does nothing
    assert (broker.queue_length("q"), broker.queue_length("elsewhere")) == (0, 1)
    broker.publish([env("n")])
    [held] = broker.reserve(["q"], 1, LEASE)
    other.publish([env("n", "elsewhere", body=b"moved")])
    broker.release(held.id, body=b"new body")  # not held: published again, where it is
    assert broker.reserve(["q", "elsewhere"], 5, LEASE) == [
        Delivery("n", "elsewhere", 5, b"new body"), Delivery("m", "elsewhere", 5, b"moved"),
    ]


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
            envelopes = [env(rng.choice(ids), rng.choice(queues), rng.randrange(10), eta,
                             f"body {step}.{n}".encode()) for n in range(rng.randint(1, 3))]
            mirror("publish", envelopes)
        elif operation < 0.55:
            expire = rng.random() < 0.2  # an already expired lease, one message at a time
            order = rng.sample(queues, rng.randint(1, 2))
            held += mirror("reserve", order, 1 if expire else rng.randint(1, 4),
                           -1.0 if expire else LEASE)
        elif operation < 0.65 and held:
            mirror("ack", held.pop(rng.randrange(len(held))).id)
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

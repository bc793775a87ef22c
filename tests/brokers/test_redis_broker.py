"""What only the Redis broker promises: key layout, the Lua scripts, round trips and cost.
Connections and URLs: ``test_redis_connection.py``; pub/sub wake-ups and fork safety:
``test_redis_watchers.py``; agreeing with the memory broker: ``test_redis_mirror.py``.

The shared behaviour is in the contract suites (``test_*_contract*.py``). These tests use the
session's private redis-server (``redis_url``), each under a key prefix of its own.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import redis
from redis.connection import AbstractConnection, Connection
from redis.crc import key_slot

from flask_tasks.brokers import Delivery, Envelope, QueueCounts
from flask_tasks.brokers.redis import RedisBroker
from flask_tasks.brokers.redis_keys import RedisKeys
from flask_tasks.brokers.redis_scripts import (
    IDLE_CONNECTIONS,
    RedisScripts,
    library_for,
    sources,
)
from flask_tasks.exceptions import OperationalError

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


def env(
    message_id: str,
    queue: str = "q",
    priority: int = 5,
    eta: float | None = None,
    body: bytes | None = None,
) -> Envelope:
    return Envelope(message_id, queue, body or message_id.encode(), priority, eta)


# -- keys and scripts ---------------------------------------------------------------------


def test_every_key_is_under_the_prefix_in_one_slot(
    broker: RedisBroker, redis_client: redis.Redis, prefix: str
) -> None:
    now = time.time()
    broker.publish_with_records(
        [env("a"), env("b", "other", 0), env("later", eta=now + 60)], {"a": b"PENDING"}, 60
    )
    [first] = broker.reserve(["q"], 1, LEASE)
    broker.release_with_record(first.id, b"retry", now + 60, b"RETRY", 60)
    [held] = broker.reserve(["other"], 1, LEASE)
    broker.dead_letter(held, "bad")
    broker.retry_dead_letter(held.id)
    broker.set_result("t", b"SUCCESS", 0)
    broker.revoke(["t"], 60)
    broker.revoke(["u"], 60, terminate=True)
    broker.incr("chord", 60)
    broker.claim("beat:entry", 60)
    broker.heartbeat("worker@host", b"info", 60)
    broker.set_results({"r1": b"x", "r2": b"y"}, 60)
    keys = [key.decode() for key in redis_client.scan_iter("*")]
    assert len(keys) >= 15
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
    r"^(KEYS\[[^\]]+\]|META|BODIES|DELAYED|LEASES|LEASED|READY|SEQUENCE|REVOKED|EMPTY|key|list_key"
    r"|wake_key|unpack\(wake_keys|source|channel"
    r"|ARGV\[\d\]|KEYS\[#KEYS\])$"
)


def test_scripts_only_touch_keys_passed_in_keys() -> None:
    call = re.compile(r'redis\.call\("(\w+)",\s*([^,)]+)')
    for script in LUA.glob("*.lua"):
        for command, key in call.findall(script.read_text(encoding="utf-8")):
            if command == "SELECT":  # a database number (records kept apart), not a key
                continue
            assert ".." not in key, f"{script.name}: {command} on a built name {key}"
            assert _KEY_ARGUMENT.match(key.strip()), f"{script.name}: {command} {key}"


def test_each_script_gets_only_the_helpers_it_calls() -> None:
    library = (LUA / "lib.lua").read_text(encoding="utf-8")
    made = sources()

    def defined(source: str) -> set[str]:
        return set(re.findall(r"^local function (\w+)\(", source, re.MULTILINE))

    assert defined(made["purge"]) == {"parse_meta", "parse_entry"}
    # ack calls delete_message, which calls detach, which calls parse_meta; holds calls
    # lease_info.
    assert defined(made["ack"]) == {
        *("delete_message", "detach", "parse_meta", "holds", "lease_info"),
        *("write_record", "use_records_db"),
    }
    assert len(defined(library)) == 15 and not defined(library_for(library, "return 1"))
    # Lines left blank, not dropped: Lua's line numbers in errors still match lib.lua's.
    ack_lines = (LUA / "ack.lua").read_text(encoding="utf-8").count("\n")
    assert made["ack"].count("\n") == library.count("\n") + ack_lines


def test_scripts_are_read_once_per_process(redis_url: str, broker: RedisBroker) -> None:
    """A forked worker child uses the sources its parent read (shared memory)."""

    def refuse(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("read a Lua file again")

    with mock.patch.object(Path, "read_text", refuse):
        another = RedisBroker(redis_url, key_prefix="read-once")
    try:
        another.publish([Envelope("m", "q", b"x")])
        assert [d.id for d in another.reserve(["q"], 1, 30)] == ["m"]
    finally:
        another.close()


def test_scripts_survive_a_script_flush(broker: RedisBroker, redis_client: redis.Redis) -> None:
    redis_client.script_flush()
    broker.publish([env("m")])  # publish runs its script on a pooled connection itself
    redis_client.script_flush()
    assert [d.id for d in broker.reserve(["q"], 1, LEASE)] == ["m"]
    redis_client.script_flush()
    broker.ack_with_records([("m", b"done")], 60)
    assert broker.get_result("m") == b"done"


class _PoolWantingACommandName(redis.ConnectionPool):
    """As redis-py before 5.3: ``get_connection`` requires the command's name."""

    def get_connection(self, command_name, *keys, **options):  # type: ignore[no-untyped-def,override]
        assert command_name == "EVALSHA"
        return super().get_connection()


def test_a_script_call_works_with_pools_that_want_a_command_name(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    client = redis.Redis(connection_pool=_PoolWantingACommandName.from_url(redis_url))
    scripts = RedisScripts(client)
    scripts.preload(redis_client)  # this redis-py's own commands name none
    key = f"{prefix}:counter"
    assert scripts.call(client, scripts.incr, [key], [60_000]) == 1
    assert scripts.call(client, scripts.incr, [key], [60_000]) == 2
    client.close()


def test_script_calls_keep_a_few_connections_out_of_the_pool(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    scripts = RedisScripts(client)
    scripts.preload(client)
    key = f"{prefix}:counter"
    start = threading.Barrier(12, timeout=10)
    counts: list[int] = []

    def count() -> None:
        start.wait()
        for _ in range(20):
            counts.append(scripts.call(client, scripts.incr, [key], [60_000]))

    threads = [threading.Thread(target=count) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(counts) == list(range(1, 241))
    assert 1 <= len(scripts._idle) <= IDLE_CONNECTIONS  # the others went back to the pool
    client.close()  # closes the ones kept out too: they are still the pool's
    assert all(connection._sock is None for connection in scripts._idle)


def test_a_script_call_reconnects_a_kept_connection_the_server_closed(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    scripts = RedisScripts(client)
    key = f"{prefix}:counter"
    assert scripts.call(client, scripts.incr, [key], [60_000]) == 1
    [kept] = scripts._idle
    kept.send_command("CLIENT", "ID")
    redis_client.client_kill_filter(_id=kept.read_response())
    assert scripts.call(client, scripts.incr, [key], [60_000]) == 2  # no ConnectionError
    client.close()


def test_script_calls_keep_no_connection_of_a_small_pool(redis_url: str, prefix: str) -> None:
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=1)
    client = redis.Redis(connection_pool=pool)
    scripts = RedisScripts(client)
    assert scripts.call(client, scripts.incr, [f"{prefix}:n"], [60_000]) == 1
    assert not scripts._idle
    assert client.get(f"{prefix}:n") == b"1" and client.get(f"{prefix}:n") == b"1"
    client.close()


def test_a_script_call_takes_arguments_hiredis_refuses(
    redis_client: redis.Redis, prefix: str
) -> None:
    """An argument hiredis's packer refuses is packed as redis-py packs it: accepted where
    this redis-py converts it (a bytearray, since redis-py 8), refused as it refuses it."""
    scripts = RedisScripts(redis_client)
    key = f"{prefix}:counter"
    try:
        Connection().pack_command("SET", "k", bytearray(b"1"))
    except redis.DataError:  # older redis-py with hiredis: what hiredis takes only
        with pytest.raises(redis.DataError):
            scripts.call(redis_client, scripts.incr, [key], [bytearray(b"60000")])
        count = 0
    else:
        assert scripts.call(redis_client, scripts.incr, [key], [bytearray(b"60000")]) == 1
        count = 1
    with pytest.raises(redis.DataError):  # what redis-py says of a bool
        scripts.call(redis_client, scripts.incr, [key], [True])
    assert scripts.call(redis_client, scripts.incr, [key], [60_000]) == count + 1


def test_pipelined_scripts_survive_a_script_flush(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.publish([env("a"), env("b")])
    taken = broker.reserve(["q"], 2, LEASE)
    redis_client.script_flush()
    broker.ack_with_records([(d.id, d.id.encode()) for d in taken], 60)
    assert broker.get_results(["a", "b"]) == [b"a", b"b"]
    redis_client.script_flush()
    broker.set_results({"c": b"C", "d": b"D"}, 60)
    assert broker.get_results(["c", "d"]) == [b"C", b"D"]
    assert broker.queue_length("q") == 0


def test_a_failing_pipelined_call_raises_operational_error(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.set_result("ok", b"x", 60)
    redis_client.hset(broker.keys.meta, "m", b"not a valid meta")  # breaks ack.lua for m
    with pytest.raises(OperationalError, match="failed a command"):
        broker.ack_with_records([("m", b"record"), ("n", b"stored")], 60)
    assert broker.get_result("n") == b"stored"  # each call is atomic on its own


def test_expired_workers_are_dropped_by_the_next_heartbeat(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.heartbeat("gone", b"1", 0.05)
    broker.heartbeat("kept", b"2", 60)
    time.sleep(0.1)
    assert broker.workers() == {"kept": b"2"}
    assert redis_client.hlen(broker.keys.workers) == 2  # ignored, not yet dropped
    broker.heartbeat("kept", b"3", 60)
    assert redis_client.hkeys(broker.keys.workers) == [b"kept"]
    assert redis_client.zrange(broker.keys.workers_expiry, 0, -1) == [b"kept"]


def test_terminate_marks_live_in_their_own_sorted_set(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.revoke(["a"], 60)
    broker.revoke(["b"], 60, terminate=True)
    assert redis_client.zrange(broker.keys.revoked, 0, -1) == [b"a", b"b"]
    assert redis_client.zrange(broker.keys.terminate, 0, -1) == [b"b"]
    broker.revoke(["c"], 0.05, terminate=True)
    time.sleep(0.1)
    broker.revoke(["d"], 60)  # drops the expired marks of both sets
    assert redis_client.zrange(broker.keys.terminate, 0, -1) == [b"b"]
    assert b"c" not in redis_client.zrange(broker.keys.revoked, 0, -1)


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
    # A script call keeps its connection out of the pool (RedisScripts.call): the other
    # commands then open one more, whose handshake is no round trip of theirs.
    broker.publish_with_records([env("warm")], {}, 0)
    broker.ping()
    with round_trips() as publish:
        broker.publish_with_records([env(f"m{i}") for i in range(5)], {"m0": b"PENDING"}, 0)
    with round_trips() as reserve:
        taken = broker.reserve(["q"], 5, LEASE)
    with round_trips() as ack:
        broker.ack_with_records([(taken[0].id, b"SUCCESS")], 60)
    with round_trips() as extend:
        broker.extend([d.id for d in taken], LEASE)
    with round_trips() as revoked:
        broker.revoked(["m1", "m2"])
    with round_trips() as terminating:
        broker.terminating(["m1", "m2"])
    with round_trips() as retry:  # the broker remembers the queue of what it handed out
        broker.release_with_record(taken[1].id, b"again", time.time() + 60, b"RETRY", 0)
    with round_trips() as settle:  # several outcomes: one pipelined round trip
        broker.ack_with_records([(taken[2].id, b"SUCCESS"), (taken[3].id, None)], 60)
    with round_trips() as plain_ack:
        broker.ack([taken[4].id, "ghost"])
    with round_trips() as records:
        broker.set_results({"a": b"A", "b": b"B", "c": b"C"}, 60)
    with round_trips() as revoke:
        broker.revoke(["x", "y"], 60, terminate=True)
    with round_trips() as claim:
        broker.claim("beat", 60)
    with round_trips() as heartbeat:
        broker.heartbeat("w", b"info", 60)
    with round_trips() as workers:
        broker.workers()
    assert len(taken) == 5
    each = (publish, reserve, ack, extend, revoked, terminating, retry, settle, plain_ack)
    each += (records, revoke, claim, heartbeat, workers)
    assert [calls.call_count for calls in each] == [1] * len(each)


def server_commands(client: redis.Redis) -> int:
    """Commands the server ran (inside scripts too) since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
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
    assert reserve_cost() <= small  # the first also marked the empty lists


def test_reserve_cost_does_not_grow_with_priority_levels_or_queues(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    queues = [f"q{i}" for i in range(20)]

    def reserve_cost(consumed: list[str]) -> int:
        broker.publish([env("m", queue="q7", priority=3)])
        redis_client.config_resetstat()
        assert [d.id for d in broker.reserve(consumed, 10, LEASE)] == ["m"]
        cost = server_commands(redis_client)
        broker.ack(["m"])
        return cost

    reserve_cost(queues)  # finds q7's other lists empty, and marks them
    one = reserve_cost(["q7"])
    # One HMGET reads the 20 ready counts; one DEL empties the other wake lists.
    assert reserve_cost(queues) <= one + 2
    assert one <= 22  # one LPOP per list holding something, not per priority level (10)


def _script_commands(redis_url: str, action: Callable[[], object]) -> list[list[str]]:
    """The commands scripts ran during ``action``, as MONITOR reports them."""
    watcher = redis.Redis.from_url(redis_url)
    marker = uuid.uuid4().hex
    seen: list[list[str]] = []
    with watcher.monitor() as monitor:
        action()
        redis.Redis.from_url(redis_url).echo(marker)
        while True:
            command = monitor.next_command()
            words = str(command["command"]).split(" ")
            if words[:2] == ["ECHO", marker]:
                break
            if command.get("client_type") == "lua":
                seen.append(words)
    watcher.close()
    return seen


def test_reserve_reads_the_marks_of_the_queues_holding_messages_only(
    broker: RedisBroker, redis_url: str
) -> None:
    queues = [f"q{i}" for i in range(20)]
    broker.publish([env("warm", queue="q19", priority=3)])
    broker.reserve(queues, 10, LEASE)  # marks q19's empty lists
    broker.ack(["warm"])
    broker.publish([env("m", queue="q19", priority=3)])

    ran = _script_commands(redis_url, lambda: broker.reserve(queues, 10, LEASE))
    fields_read = [words for words in ran if words[0] == "HMGET"]
    # The 20 ready counts, then the 10 marks of the one queue with a ready message.
    assert [len(words) - 2 for words in fields_read] == [20, 10]
    popped = {words[1] for words in ran if words[0] == "LPOP"}
    assert popped == {broker.keys.ready_list("q19", 3)}


def test_a_bulk_publish_keeps_order_counts_and_replacements(broker: RedisBroker) -> None:
    # Fresh ids (written with variadic commands, in chunks), across two priorities.
    broker.publish([env(f"m{i:04d}", priority=5 if i % 3 else 4) for i in range(2500)])
    assert broker.queue_length("q") == 2500
    taken = [d.id for d in broker.reserve(["q"], 3000, LEASE)]
    assert taken == [f"m{i:04d}" for i in range(2500) if i % 3 == 0] + [
        f"m{i:04d}" for i in range(2500) if i % 3
    ]
    # An id repeated in one batch, and one already stored: one message each, the last.
    broker.publish([env("held", body=b"old")])
    broker.publish([env("a", body=b"1"), env("b"), env("a", body=b"2"), env("held", body=b"new")])
    assert broker.queue_length("q") == 3
    assert [(d.id, d.body) for d in broker.reserve(["q"], 10, LEASE)] == [
        ("b", b"b"),
        ("a", b"2"),
        ("held", b"new"),
    ]


def test_a_fresh_id_is_published_without_the_stored_id_checks(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    redis_client.config_resetstat()
    fresh = Envelope("new", "q", b"body", 5, None, fresh=True)
    broker.publish_with_records([fresh], {"new": b"PENDING"}, 60)
    stats = redis_client.info("commandstats")
    # No HMGET (is the id stored?), no INCRBY (a generation), no PUBLISH (a listener).
    assert {"cmdstat_hmget", "cmdstat_incrby", "cmdstat_publish"}.isdisjoint(stats)
    assert broker.get_result("new") == b"PENDING"
    assert broker.queue_length("q") == 1
    # The same id published again (not fresh) replaces it: one message, the last body.
    broker.publish_with_records([env("new", body=b"again")], {"new": b"PENDING"}, 60)
    assert broker.queue_length("q") == 1
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("new", "q", 5, b"again")]
    assert broker.reserve(["q"], 10, LEASE) == []


def test_one_fresh_message_delayed_or_with_another_record_is_published_too(
    broker: RedisBroker,
) -> None:
    """publish_one.lua takes one fresh message ready now with its own record, if any; the
    others go through publish.lua."""
    later = Envelope("later", "q", b"x", 5, time.time() + 60, fresh=True)
    broker.publish_with_records([later], {"later": b"PENDING"}, 60)
    now = Envelope("now", "q", b"y", 5, None, fresh=True)
    broker.publish_with_records([now], {"other": b"R"}, 0)
    assert broker.queue_counts(["q"])["q"] == QueueCounts(1, 1, 0)
    assert broker.get_result("later") == b"PENDING" and broker.get_result("other") == b"R"
    assert broker.get_result("now") is None
    assert broker.reserve(["q"], 10, LEASE) == [Delivery("now", "q", 5, b"y")]


def test_a_fresh_message_clears_the_empty_mark_of_its_list(broker: RedisBroker) -> None:
    assert broker.reserve(["q"], 1, LEASE) == []  # marks the 10 lists of q empty
    broker.publish([Envelope("a", "q", b"1", 2, None, fresh=True)])
    broker.publish([Envelope("b", "q", b"2", 2, None, fresh=True)])
    assert [d.id for d in broker.reserve(["q"], 5, LEASE)] == ["a", "b"]
    assert broker.queue_length("q") == 0


def test_a_record_of_an_id_not_fresh_is_published(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe(broker.keys.result_channel("old"), broker.keys.result_channel("new"))
    for _ in range(2):
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    fresh = Envelope("new", "q", b"body", 5, None, fresh=True)
    broker.publish_with_records([fresh, env("old")], {"new": b"N", "old": b"O"}, 60)
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"O"
    assert pubsub.get_message(timeout=0.2) is None
    pubsub.close()


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
        Delivery("n", "elsewhere", 5, b"new body"),
        Delivery("m", "elsewhere", 5, b"moved"),
    ]

"""What ``redis+cluster://`` does beyond the contract suites: its URLs, where its keys
hash, and waiting on queues of several slots (sharing the session's three-master cluster;
each test has a key prefix of its own)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from contract_helpers import LEASE, Background, env, ids
from redis.cluster import RedisCluster
from redis_server import free_port

from flask_tasks.brokers import Connections, check_url, check_urls, open_broker, redis_cluster_store
from flask_tasks.brokers.redis_cluster import RedisClusterBroker
from flask_tasks.brokers.redis_cluster_connection import parse_cluster_url
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError


@pytest.fixture
def prefix() -> str:
    return f"cl-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker(redis_cluster_url: str, prefix: str) -> Iterator[RedisClusterBroker]:
    opened = open_broker(redis_cluster_url, key_prefix=prefix)
    assert isinstance(opened, RedisClusterBroker)
    yield opened
    opened.close()


@pytest.fixture
def raw(redis_cluster_url: str) -> Iterator[RedisCluster]:
    host, port = redis_cluster_url.split("://", 1)[1].split(",")[0].split(":")
    client = RedisCluster(host=host, port=int(port))
    yield client
    client.close()


# -- URLs ------------------------------------------------------------------------------------


def test_a_cluster_url_names_its_nodes_and_credentials() -> None:
    nodes, credentials = parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,[::1]:7001/0")
    assert nodes == [("h1", 7000), ("::1", 7001)]
    assert credentials == {"username": "u", "password": "p@ss"}
    assert check_url("REDIS+CLUSTER://h1:7000", "TASKS_BROKER_URL") == "redis-cluster"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "bad node address ''"),
        ("redis+cluster://h1", "bad node address 'h1'"),
        ("redis+cluster://h1:7000,h2", "bad node address 'h2'"),
        ("redis+cluster://h1:0", "bad node address 'h1:0'"),
        ("redis+cluster://h1:99999", "bad node address 'h1:99999'"),
        ("redis+cluster://h1:7000/2", "names database '2'; a cluster has database 0 only"),
        ("redis+cluster://h1:7000?ssl=true", "has query options"),
    ],
)
def test_bad_cluster_urls_are_refused_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"TASKS_BROKER_URL: .*{message}"):
        check_urls(url, None)
    with pytest.raises(ImproperlyConfigured, match=message):
        open_broker(url)


def test_the_password_is_hidden_in_url_errors() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        check_url("redis+cluster://:secret@h1:7000/5", "TASKS_BROKER_URL")
    assert "secret" not in str(caught.value)


def test_an_unreachable_cluster_is_an_operational_error() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    with pytest.raises(OperationalError, match="Cannot reach the Redis Cluster at redis"):
        open_broker(url, socket_connect_timeout=0.5)


def test_an_option_the_cluster_client_does_not_take_is_refused(redis_cluster_url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="does not take: bogus_option, max_conn"):
        open_broker(redis_cluster_url, bogus_option=1, max_conn=2, socket_timeout=2.0)


def test_client_options_reach_the_cluster_client(redis_cluster_url: str) -> None:
    opened = open_broker(redis_cluster_url, key_prefix="opts", max_connections=7)
    try:
        assert isinstance(opened, RedisClusterBroker)
        opened.ping()
        node = opened._cluster.get_primaries()[0]
        pool = opened._cluster.get_redis_connection(node).connection_pool
        assert pool.max_connections == 7
    finally:
        opened.close()


def test_a_records_database_is_refused(redis_cluster_url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="database 0 only"):
        open_broker(redis_cluster_url, records_db=1)


def test_connections_use_the_cluster_broker_for_the_joint_steps(redis_cluster_url: str) -> None:
    connections = Connections(redis_cluster_url, redis_cluster_url, key_prefix="conn")
    try:
        assert isinstance(connections.joint, RedisClusterBroker)
        assert connections.store is connections.transport
    finally:
        connections.close()


# -- where keys hash -----------------------------------------------------------------------


def test_queues_and_results_hash_apart(broker: RedisClusterBroker, raw: RedisCluster, prefix: str):
    queues = [f"queue-{index}" for index in range(12)]
    broker.publish_with_records(
        [env(f"m{index}", queue) for index, queue in enumerate(queues)],
        {f"m{index}": b"PENDING" for index in range(12)},
        60,
    )
    queue_slots = {raw.keyslot(f"{{{prefix}:{queue}}}") for queue in queues}
    assert len(queue_slots) == 12
    for queue in queues:  # every key of one queue is on its slot
        keys = broker.keys.queue(queue)
        slot = raw.keyslot(keys.meta)
        assert {raw.keyslot(key) for key in [*keys.core(), *keys.reserve_keys([queue])]} == {slot}
        assert raw.hexists(keys.meta, f"m{queues.index(queue)}")
    result_slots = {raw.keyslot(broker.keys.result(f"m{index}")) for index in range(12)}
    assert result_slots == {raw.keyslot(f"m{index}") for index in range(12)}
    assert raw.get(f"{prefix}:result:{{m3}}") == b"PENDING"
    assert broker.get_results(["m0", "m11", "none"]) == [b"PENDING", b"PENDING", None]
    assert raw.smembers(broker.keys.queues) == {queue.encode() for queue in queues}


def test_a_prefix_with_braces_is_still_spread(redis_cluster_url: str, raw: RedisCluster) -> None:
    opened = open_broker(redis_cluster_url, key_prefix="{shop}")
    try:
        assert isinstance(opened, RedisClusterBroker)
        assert opened.keys.queue("a").meta.startswith("{shop:a}:")
        assert raw.keyslot(opened.keys.result("x")) == raw.keyslot("x")
    finally:
        opened.close()


# -- waiting on several slots --------------------------------------------------------------


@pytest.fixture(params=["sharded", "plain"])
def waiter(
    request: pytest.FixtureRequest,
    redis_cluster_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RedisClusterBroker]:
    """A cluster broker publishing wake-ups on shard channels (this Redis 7) or, as on
    Redis 6 and older, on plain channels."""
    if request.param == "plain":
        monkeypatch.setattr(redis_cluster_store, "parse_version", lambda _text: (6, 2, 0))
    opened = open_broker(redis_cluster_url, key_prefix=prefix)
    assert isinstance(opened, RedisClusterBroker)
    opened.ping()
    assert opened.sharded_pubsub is (request.param == "sharded")
    yield opened
    opened.close()


def test_wake_ups_go_on_the_shard_channel_of_the_queues_master(
    waiter: RedisClusterBroker, raw: RedisCluster
) -> None:
    channel = waiter.keys.queue("a").wake_list("a")
    client = raw.get_redis_connection(raw.get_node_from_key(channel))
    pubsub = client.pubsub()
    try:
        pubsub.ssubscribe(channel)
        pubsub.subscribe(channel)
        seen = set()
        waiter.publish([env("m", "a")])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "smessage" not in seen and "message" not in seen:
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] in ("smessage", "message"):
                assert message["data"] == b"1"
                seen.add(message["type"])
        assert seen == ({"smessage"} if waiter.sharded_pubsub else {"message"})
    finally:
        pubsub.close()


def test_result_records_notify_on_their_slots_channel(
    waiter: RedisClusterBroker, raw: RedisCluster
) -> None:
    channel = waiter.keys.result_channel("task-1")
    assert raw.keyslot(channel) == raw.keyslot(waiter.keys.result("task-1"))
    client = raw.get_redis_connection(raw.get_node_from_key(channel))
    pubsub = client.pubsub()
    try:
        pubsub.ssubscribe(channel)
        pubsub.subscribe(channel)
        waiter.set_result("task-1", b"SUCCESS", 60)
        waiter.forget_result("task-1")
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(seen) < 2:
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] in ("smessage", "message"):
                seen.append((message["type"], message["data"]))
        kind = "smessage" if waiter.sharded_pubsub else "message"
        assert seen == [(kind, b"SUCCESS"), (kind, b"")]
    finally:
        pubsub.close()


def test_watching_a_result_wakes_on_its_write(
    waiter: RedisClusterBroker, redis_cluster_url: str, prefix: str
) -> None:
    writer = open_broker(redis_cluster_url, key_prefix=prefix)
    try:
        for task_id in ("t1", "t2", "t1"):  # t1 again: subscribed anew after its last watcher
            watcher = Background(lambda t=task_id: waiter.watch_result(t, None, 10))
            time.sleep(0.3)
            started = time.monotonic()
            writer.set_result(task_id, f"done-{task_id}".encode(), 60)
            assert watcher.result() == f"done-{task_id}".encode()
            assert time.monotonic() - started < 3
            writer.forget_result(task_id)
    finally:
        writer.close()


def test_waiting_on_two_queues_wakes_on_a_publish_to_either(
    waiter: RedisClusterBroker, redis_cluster_url: str, prefix: str, raw: RedisCluster
) -> None:
    broker = waiter
    assert raw.keyslot(f"{{{prefix}:a}}") != raw.keyslot(f"{{{prefix}:b}}")
    publisher = open_broker(redis_cluster_url, key_prefix=prefix)
    try:
        for queue in ("b", "a"):
            assert broker.reserve(["a", "b"], 1, LEASE) == []

            def wait() -> float:
                started = time.monotonic()
                broker.wait(["a", "b"], 10)
                return time.monotonic() - started

            waiter = Background(wait)
            time.sleep(0.3)
            publisher.publish([env(f"to-{queue}", queue)])
            assert waiter.result() < 3
            assert ids(broker.reserve(["a", "b"], 5, LEASE)) == [f"to-{queue}"]
    finally:
        publisher.close()


def test_waiting_on_two_queues_ends_when_a_delayed_message_is_due(
    waiter: RedisClusterBroker,
) -> None:
    broker = waiter
    broker.publish([env("later", "b", eta=time.time() + 0.6)])
    assert broker.reserve(["a", "b"], 1, LEASE) == []
    started = time.monotonic()
    broker.wait(["a", "b"], 10)
    assert 0.3 < time.monotonic() - started < 3
    assert ids(broker.reserve(["a", "b"], 1, LEASE)) == ["later"]


def test_waiting_on_two_queues_returns_at_once_when_work_is_ready(
    broker: RedisClusterBroker,
) -> None:
    broker.publish([env("ready", "a")])
    started = time.monotonic()
    broker.wait(["b", "a"], 10)
    assert time.monotonic() - started < 1


def test_bare_ids_are_found_in_their_queue(broker: RedisClusterBroker, redis_cluster_url: str):
    broker.publish([env("x", "a"), env("y", "b")])
    assert {d.id for d in broker.reserve(["a", "b"], 2, LEASE)} == {"x", "y"}
    other = open_broker(redis_cluster_url, key_prefix=broker.keys.name)
    try:  # knows neither id: looks them up in the queues published to
        assert other.held(["x", "y", "z"]) == {"x", "y"}
        assert other.release("y") is True
        assert other.ack(["x", "z"]) == []
    finally:
        other.close()
    assert broker.queue_counts(["a", "b"])["b"].ready == 1
    assert broker.queue_counts(["a", "b"])["a"].reserved == 0


# -- reserving from many queues, scripts ----------------------------------------------------


def test_reserve_probes_the_queues_after_the_first(broker: RedisClusterBroker) -> None:
    queues = ["a", "b", "c", "d", "e"]
    broker.publish([env("leased", "b"), env("due", "c", eta=time.time() + 0.3)])
    assert ids(broker.reserve(["b"], 1, 0.2)) == ["leased"]  # its lease runs out
    broker.publish([env("ready-d", "d"), env("ready-a", "a")])
    assert ids(broker.reserve(queues, 1, LEASE)) == ["ready-a"]  # the first queue suffices
    time.sleep(0.4)
    taken = broker.reserve(queues, 10, LEASE)
    assert ids(taken) == ["leased", "due", "ready-d"]
    assert [delivery.deliveries for delivery in taken] == [2, 1, 1]
    assert broker.reserve(queues, 10, LEASE) == []


def test_scripts_are_loaded_again_after_a_script_flush(
    broker: RedisClusterBroker, raw: RedisCluster
) -> None:
    broker.publish([env("before", "a")])
    raw.script_flush()  # every primary
    broker.publish([env("x", "a"), env("y", "b"), env("z", "c")])  # pipelined: NOSCRIPT
    taken = broker.reserve(["a", "b", "c"], 10, LEASE)
    assert ids(taken) == ["before", "x", "y", "z"]
    raw.script_flush()  # every primary
    assert broker.ack_with_records([(d, b"SUCCESS") for d in taken], 60) == []
    assert broker.get_results(["x", "z"]) == [b"SUCCESS", b"SUCCESS"]


def test_waiting_on_two_queues_of_one_master(
    waiter: RedisClusterBroker, raw: RedisCluster, prefix: str
) -> None:
    """Two slots of one master: subscribed one command each (one SSUBSCRIBE is one slot)."""
    by_master: dict[str, list[str]] = {}
    for index in range(50):
        node = raw.get_node_from_key(f"{{{prefix}:q{index}}}")
        by_master.setdefault(node.name, []).append(f"q{index}")
    first, second = next(names for names in by_master.values() if len(names) >= 2)[:2]
    waiter.publish([env("later", second, eta=time.time() + 0.5)])
    started = time.monotonic()
    taken: list[str] = []
    waits = 0
    # A wake-up left over from an earlier publish may end one wait early; a few are
    # allowed, a wait that never blocks is not.
    while not taken and waits < 3:
        waiter.wait([first, second], 10)  # wakes when "later" is due
        waits += 1
        taken = ids(waiter.reserve([first, second], 5, LEASE))
    assert taken == ["later"]
    assert 0.2 < time.monotonic() - started < 3


# -- the fixture -----------------------------------------------------------------------------


def test_the_cluster_fixture_tries_other_ports_when_one_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import redis_cluster_server

    real = redis_cluster_server.free_cluster_ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        offered: list[list[int]] = []

        def first_one_taken(count: int) -> list[int]:
            ports = real(count) if offered else [port, *real(count - 1)]
            offered.append(ports)
            return ports

        monkeypatch.setattr(redis_cluster_server, "free_cluster_ports", first_one_taken)
        with redis_cluster_server.redis_cluster() as url:
            assert len(offered) == 2 and f":{port}" not in url
            assert check_url(url, "URL") == "redis-cluster"

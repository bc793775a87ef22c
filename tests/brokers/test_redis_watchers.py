"""Wake-ups: ``wait`` blocks in BLPOP on the queues' wake lists (one idle consumer per
message), ``watch_result`` on pub/sub subscriptions; both reuse their connections, many
watchers share one, and both survive ``fork()``."""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Callable

import pytest
import redis

from flask_tasks.brokers import Envelope
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


def _blocked(client: redis.Redis, name: str) -> int:
    """Connections named ``name`` blocked in BLPOP now."""
    return sum(1 for c in client.client_list() if c["name"] == name and "b" in c["flags"])


def test_a_message_wakes_one_idle_consumer_not_all(
    redis_url: str, redis_client: redis.Redis, prefix: str, other: RedisBroker
) -> None:
    name = f"waiters-{uuid.uuid4().hex[:8]}"
    waiting = RedisBroker(redis_url, key_prefix=prefix, client_name=name)
    try:
        waiters = [wait_in_thread(lambda: waiting.wait(["q"], 20)) for _ in range(3)]
        deadline = time.monotonic() + 10
        while _blocked(redis_client, name) < 3:
            assert time.monotonic() < deadline, "the waiters never blocked"
            time.sleep(0.01)
        for woken in (1, 2, 3):
            other.publish([env(f"m{woken}")])
            while sum(len(returned) for _thread, returned in waiters) < woken:
                assert time.monotonic() < deadline, "no waiter woke"
                time.sleep(0.01)
            # The token was taken by the one that woke; the others still block.
            assert redis_client.llen(other.keys.wake_list("q")) == 0
            assert _blocked(redis_client, name) == 3 - woken
            assert sum(len(returned) for _thread, returned in waiters) == woken
    finally:
        waiting.close()


def test_a_delayed_message_retimes_a_waiter_instead_of_waking_it(
    broker: RedisBroker, other: RedisBroker
) -> None:
    thread, returned = wait_in_thread(lambda: broker.wait(["q"], 30))
    time.sleep(0.2)
    published_at = time.monotonic()
    other.publish([env("later", eta=time.time() + 0.5)])
    thread.join(10)
    assert returned, "wait() kept its 30 s timeout"
    assert returned[0] - published_at >= 0.3  # woken by the due time, not the publish


def test_after_an_empty_reserve_wait_blocks_at_once(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    broker.wait(["q"], 0.01)  # asks the server's version once
    broker.publish([env("later", eta=time.time() + 0.4)])
    assert broker.reserve(["q"], 5, LEASE) == []
    redis_client.config_resetstat()
    started = time.monotonic()
    broker.wait(["q"], 30)  # the reserve said when the delayed message falls due
    assert time.monotonic() - started < 10
    commands = {name for name in redis_client.info("commandstats") if "config" not in name}
    assert commands <= {"cmdstat_blpop", "cmdstat_info"}  # no read before blocking
    assert "cmdstat_blpop" in commands
    assert [d.id for d in broker.reserve(["q"], 5, LEASE)] == ["later"]


def test_wake_tokens_stay_bounded_without_consumers(
    broker: RedisBroker, redis_client: redis.Redis
) -> None:
    wake_list = broker.keys.wake_list("q")
    broker.publish([env(f"m{i}") for i in range(1500)])  # 1,000 tokens at most per call
    assert redis_client.llen(wake_list) == 1000
    broker.publish([env(f"n{i}") for i in range(1001)])
    assert redis_client.llen(wake_list) == 2000
    broker.publish([env("one more")])
    assert redis_client.llen(wake_list) == 1000  # over 2,000: back to 1,000
    broker.publish([env("and another")])
    assert redis_client.llen(wake_list) == 1001
    assert len(broker.reserve(["q"], 2400, LEASE)) == 2400
    assert redis_client.llen(wake_list) == 103  # trimmed to the ready count
    assert len(broker.reserve(["q"], 200, LEASE)) == 103
    assert redis_client.llen(wake_list) == 0


def test_blocking_timeouts_fit_the_server_and_the_socket(redis_url: str, prefix: str) -> None:
    broker = RedisBroker(redis_url, key_prefix=prefix, socket_timeout=1.0)
    try:
        broker.wait(["q"], 0.01)  # asks the server's version
        assert broker._waker.fractional  # the test server is Redis 6 or newer
        assert broker._waker.block_for(0.25) == 0.25
        assert broker._waker.block_for(10) == 0.5  # half the socket timeout: the reply fits
        broker._waker.fractional = False  # Redis 5: whole seconds, never 0 (forever)
        assert broker._waker.block_for(0.25) == 1.0
        assert broker._waker.block_for(0.0001) == 1.0
    finally:
        broker.close()


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
def test_a_forked_child_opens_its_own_connections(broker: RedisBroker, other: RedisBroker) -> None:
    broker.wait(["q"], 0.01)
    broker.watch_result("t", None, 0.01)
    broker.publish([env("before", queue="elsewhere")])  # keeps a connection for scripts
    connection_id = broker._client.client_id()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            assert not broker._scripts._idle  # the parent's: forgotten
            broker.publish([env("child")])
            broker.wait(["q"], 0.01)
            taken = broker.reserve(["q"], 5, LEASE)
            broker.ack_with_records([("child", b"from the child")], 60)
            broker.watch_result("t", None, 0.01)
            code = 0 if [d.id for d in taken] == ["child"] else 2
            broker.close()  # must not shut down the parent's sockets
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert broker.get_result("child") == b"from the child"
    assert broker._client.client_id() == connection_id  # the child left it open
    broker.publish([env("after", queue="elsewhere")])  # on the connection kept
    assert [d.id for d in broker.reserve(["elsewhere"], 5, LEASE)] == ["before", "after"]
    # The parent's pooled subscriber still works.
    thread, returned = wait_in_thread(lambda: broker.wait(["q"], 10))
    time.sleep(0.1)
    other.publish([env("parent")])
    thread.join(5)
    assert returned


def test_two_hundred_watchers_share_one_connection(redis_url: str, redis_client) -> None:
    broker = RedisBroker(redis_url, key_prefix="watchers")
    woken: list[bytes | None] = []
    ready = threading.Barrier(201, timeout=10)

    def watch(index: int) -> None:
        ready.wait()
        woken.append(broker.watch_result(f"task-{index % 10}", None, 10))

    threads = [threading.Thread(target=watch, args=(n,)) for n in range(200)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        # The pool is far from exhausted: plain commands still work while all wait.
        assert broker.get_result("unrelated") is None
        clients = redis_client.client_list()
        assert len(clients) < 20, len(clients)
        for index in range(10):
            broker.set_result(f"task-{index}", b"done-%d" % index, 60)
        for thread in threads:
            thread.join(10)
        assert sorted(set(woken)) == [b"done-%d" % index for index in range(10)]
        assert len(woken) == 200
    finally:
        broker.close()


def test_a_killed_result_connection_wakes_its_waiters_and_is_replaced(
    broker: RedisBroker, other: RedisBroker, redis_client: redis.Redis
) -> None:
    """The server drops the listener's connection: a waiting watcher returns at once
    (its caller watches again, on a new connection), and the next watch works."""
    thread, returned = wait_in_thread(lambda: broker.watch_result("t", None, 10))
    deadline = time.monotonic() + 5
    while not redis_client.pubsub_channels(b"*result*"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed_at = time.monotonic()
    assert redis_client.client_kill_filter(_type="pubsub") == 1
    thread.join(5)
    assert returned and returned[0] - killed_at < 1
    thread, returned = wait_in_thread(lambda: broker.watch_result("u", None, 10))
    while not redis_client.pubsub_channels(b"*result*"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    written_at = time.monotonic()
    other.set_result("u", b"after", 60)
    thread.join(5)
    assert returned and returned[0] - written_at < 1

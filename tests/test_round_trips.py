"""Redis round trips and commands per operation, counted by the server (``INFO stats``).

No timing: the counts are deterministic, so a change that adds a round trip to
``delay()``, to a worker's handling of one task, or to ``delay().get()`` fails here. Each
configuration runs on a redis-server of this module's own, so nothing else is counted:
results in the broker's own database, and results in another database of the same
server (``TASKS_RESULT_BACKEND``), both with ``SECRET_KEY`` set (signed messages).

*Round trips* is the server's ``total_reads_processed`` (one per request or pipeline the
clients sent); *commands* is ``total_commands_processed``, which counts the commands Lua
scripts call too. The worker's part is the real consumer's reserve, run and settle, with
its idle wait left out (an idle worker's wake-up is counted on its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import redis
from flask import Flask
from redis_server import redis_server

from flask_tasks import Tasks
from flask_tasks.runtime import Runtime
from flask_tasks.worker.consumer import Consumer


@dataclass(frozen=True)
class Counts:
    round_trips: int
    commands: int


class Meter:
    """Counts what the server did between ``start`` and ``stop`` (its own INFO excluded)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def _stats(self) -> tuple[int, int, int]:
        info = self.client.info("stats")
        return (
            int(info["total_reads_processed"]),
            int(info["total_commands_processed"]),
            int(info["total_connections_received"]),
        )

    def count(self, action: Callable[[], Any]) -> Counts:
        self.client.config_resetstat()
        reads, commands, connections = self._stats()
        action()
        after_reads, after_commands, after_connections = self._stats()
        # Opening a connection costs reads of its own: steady work opens none.
        assert after_connections == connections, "a connection was opened while counting"
        # The second INFO is counted by the server before it answers.
        return Counts(after_reads - reads - 1, after_commands - commands - 1)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def _app(url: str, elsewhere: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="round-trip-test")
    if elsewhere:
        app.config["TASKS_RESULT_BACKEND"] = f"{url.rsplit('/', 1)[0]}/1"
    tasks = Tasks(app)

    @tasks.task(name="noop")
    def noop() -> None:
        """Does nothing; its result is stored."""

    return app


class Setup:
    """One app, a solo consumer driven step by step, and the meter."""

    def __init__(self, url: str, elsewhere: bool) -> None:
        self.app = _app(url, elsewhere)
        self.runtime: Runtime = self.app.extensions["tasks"]
        self.task = self.runtime.registry["noop"]
        self.meter = Meter(url)
        self.listener = self.runtime.store._watchers
        # A channel without waiters stays subscribed until the next get() (whose SUBSCRIBE
        # carries its UNSUBSCRIBE) or for ``linger`` seconds: none may end while counting.
        self.listener.linger = 3600
        self.consumer = Consumer(self.runtime, ["default"], announce_ready=False)
        redis.Redis.from_url(url).flushall()

    def work_one(self, woken: bool = False) -> None:
        """What a worker does for one waiting task: reserve, run, settle; ``woken``: from
        idle (its last reserve came back short, so it waits first: BLPOP, then reserve)."""
        self.consumer._drained = woken
        assert self.consumer._fetch()
        delivery, revoked, _reserved_at = self.consumer._pending.popleft()
        # Started at once (a slow machine must not add the check made for late starts).
        self.consumer._execute(delivery, revoked, time.monotonic())
        self.consumer._flush_acks(force=True)
        assert not self.consumer._held

    def delay_get(self, woken: bool = False) -> None:
        """``delay().get()`` with the worker handling the task while ``get`` waits
        (``woken``: a worker idle in BLPOP, as a real one is between tasks)."""
        result = self.task.delay()
        outcome: list[Any] = []
        waiter = threading.Thread(target=lambda: outcome.append(result.get(timeout=10)))
        waiter.start()
        channel = self.runtime.store.keys.result_channel(result.id).encode()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while not ((entry := self.listener._channels.get(channel)) and entry.confirmed.is_set()):
            assert time.monotonic() < deadline, "get() never subscribed"
            time.sleep(0.001)
        self.work_one(woken)
        waiter.join(10)
        assert outcome == [None]

    def warm_up(self) -> None:
        """Open every connection and load the scripts, so that only steady work counts."""
        self.runtime.transport.wait(["default"], 0.01)  # asks the server's version once
        # delay_get's threads may hold pooled connections at once (the waiter's GET, the
        # worker's BLPOP, a caller's command not yet handed back): however the warm-up's
        # steps happen to interleave, the pool holds enough idle connections afterwards.
        pool = self.runtime.store._client.connection_pool  # type: ignore[attr-defined]
        held = [pool.get_connection() for _ in range(3)]
        for connection in held:
            pool.release(connection)
        with self.app.app_context():
            for _ in range(2):
                self.task.delay()
                self.work_one()
                self.delay_get()
                self.delay_get(woken=True)

    def close(self) -> None:
        self.runtime.close()
        self.meter.client.close()


@pytest.fixture(params=["own-db", "other-db"])
def setup(request: pytest.FixtureRequest, server_url: str) -> Iterator[Setup]:
    made = Setup(server_url, elsewhere=request.param == "other-db")
    made.warm_up()
    yield made
    made.close()


#: Round trips (exactly), and most commands, per operation and configuration. Before
#: issue 13 (round two): delay 1 and 2, worker 2 and 4, delay().get() 7 and 10. Commands
#: before the wake lists and empty-list marks: delay 11 and 12, worker 35 and 40,
#: delay().get() 48 and 55 (a publish to an empty list now clears its mark: one more; a
#: reserve that comes back short reads the next due time: two more, for no reserve that
#: finds nothing afterwards, see "woken").
#: delay().get() = publish; SUBSCRIBE (carrying the previous get's UNSUBSCRIBE), GET;
#: reserve, ack: 5. Against a worker idle in BLPOP ("delay_get_woken", what a real
#: worker does between tasks): one more, the BLPOP. Before the lingering channels, get()
#: sent its UNSUBSCRIBE on its own: 6 and 7. A delay() of a fresh id (made by the
#: producer) skips the stored-id check, the sequence and the PENDING record's PUBLISH: 3
#: commands fewer than 11 and 13 (EVALSHA; HSET meta, HSET body, RPUSH, HINCRBY, RPUSH
#: wake, and the empty mark's HDEL when the list was empty; SELECT, SET, SELECT when the
#: records live in another database).
EXPECTED = {
    ("own-db", "delay"): Counts(1, 8),
    ("own-db", "worker"): Counts(2, 31),
    ("own-db", "delay_get"): Counts(5, 42),
    ("own-db", "delay_get_woken"): Counts(6, 43),
    ("own-db", "woken"): Counts(3, 32),
    ("other-db", "delay"): Counts(1, 10),
    ("other-db", "worker"): Counts(2, 36),
    ("other-db", "delay_get"): Counts(5, 49),
    ("other-db", "delay_get_woken"): Counts(6, 50),
    ("other-db", "woken"): Counts(3, 37),
}


def _check(setup: Setup, request: pytest.FixtureRequest, what: str, counts: Counts) -> None:
    config = request.node.callspec.params["setup"]
    expected = EXPECTED[config, what]
    assert counts.round_trips == expected.round_trips, (config, what, counts)
    assert counts.commands <= expected.commands, (config, what, counts)


def test_delay(setup: Setup, request: pytest.FixtureRequest) -> None:
    with setup.app.app_context():
        counts = setup.meter.count(setup.task.delay)
        setup.work_one()
    _check(setup, request, "delay", counts)


def test_one_task_in_a_worker(setup: Setup, request: pytest.FixtureRequest) -> None:
    with setup.app.app_context():
        result = setup.task.delay()
        counts = setup.meter.count(setup.work_one)
        assert result.get(timeout=10) is None
    _check(setup, request, "worker", counts)


def test_delay_get(setup: Setup, request: pytest.FixtureRequest) -> None:
    with setup.app.app_context():
        counts = setup.meter.count(setup.delay_get)
    _check(setup, request, "delay_get", counts)


def test_delay_get_with_a_worker_idle_in_blpop(
    setup: Setup, request: pytest.FixtureRequest
) -> None:
    """The issue's figure: ``delay().get()`` as it goes against a real, idle worker."""
    with setup.app.app_context():
        counts = setup.meter.count(lambda: setup.delay_get(woken=True))
    _check(setup, request, "delay_get_woken", counts)


def test_a_lingering_channel_is_unsubscribed_on_its_own(setup: Setup) -> None:
    """With no get() after it, a finished get()'s channel is unsubscribed after
    ``linger`` seconds, in one request for every lingering channel."""
    setup.listener.linger = 0.2
    with setup.app.app_context():
        setup.delay_get()
        setup.delay_get()
    # The second get()'s SUBSCRIBE carried the first one's UNSUBSCRIBE.
    assert len(setup.listener.subscribed) == 1
    assert len(setup.meter.client.pubsub_channels(b"*result*")) == 1

    def unsubscribed() -> None:
        _wait_until(lambda: not setup.listener.subscribed)
        time.sleep(0.05)  # for the server to read it

    counts = setup.meter.count(unsubscribed)
    assert counts.round_trips == 1, counts
    assert setup.meter.client.pubsub_channels(b"*result*") == []


def test_watching_a_lingering_channel_again_costs_only_its_read(setup: Setup) -> None:
    """A status stream reconnecting, or a second wait on the same task: the channel is
    still subscribed, so only the read of the record goes to the server."""
    store = setup.runtime.store
    with setup.app.app_context():
        result = setup.task.delay()
    current = store.get_result(result.id)
    assert store.watch_result(result.id, current, 0.01) == current  # subscribes
    counts = setup.meter.count(lambda: store.watch_result(result.id, current, 0.01))
    assert counts == Counts(1, 1), counts
    with setup.app.app_context():
        setup.work_one()


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_worker_woken_from_idle(setup: Setup, request: pytest.FixtureRequest) -> None:
    """An idle worker whose last reserve came back short: one BLPOP (the token of the
    task published meanwhile), then reserve, run, settle; no reserve that finds nothing."""
    with setup.app.app_context():
        result = setup.task.delay()
        counts = setup.meter.count(lambda: setup.work_one(woken=True))
        assert result.get(timeout=10) is None
    _check(setup, request, "woken", counts)

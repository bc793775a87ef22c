"""What the PostgreSQL broker promises beyond the shared contract: URLs, names, costs,
connections lost and forked, the result backend role and ``flask tasks init-db``."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from contract_helpers import Background, eventually
from flask import Flask
from redis_server import free_port

from flask_tasks import Tasks
from flask_tasks.brokers import Connections, Envelope, check_url, open_broker
from flask_tasks.brokers.memory import MemoryBroker
from flask_tasks.brokers.postgres import PostgresBroker
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError
from flask_tasks.testing import drain


@pytest.fixture
def prefix() -> str:
    return f"pg-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker(postgres_url: str, prefix: str) -> Iterator[PostgresBroker]:
    opened = PostgresBroker(postgres_url, key_prefix=prefix)
    yield opened
    opened.close()


def raw(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def table_exists(url: str, name: str) -> bool:
    with raw(url) as connection:
        row = connection.execute("SELECT to_regclass(%s)", [f'"{name}"']).fetchone()
    return row is not None and row[0] is not None


# -- URLs, options and names -------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg", "POSTGRES"])
def test_url_forms(postgres_url: str, prefix: str, scheme: str) -> None:
    url = scheme + postgres_url[len("postgresql") :]
    assert check_url(url, "TASKS_BROKER_URL") == "postgresql"
    opened = open_broker(url, key_prefix=prefix)
    try:
        assert isinstance(opened, PostgresBroker) and opened.kind == "postgresql"
        opened.publish([Envelope("m", "q", b"x")])
        assert opened.queue_length("q") == 1
    finally:
        opened.close()


def test_options_from_the_url_and_keywords_and_libpq_parameters(
    postgres_url: str, prefix: str
) -> None:
    opened = open_broker(f"{postgres_url}?pool_size=2&application_name=ft-test", key_prefix=prefix)
    try:
        assert opened.options.pool_size == 2  # type: ignore[attr-defined]
        with opened._pool.connection() as connection:  # type: ignore[attr-defined]
            row = connection.execute("SHOW application_name").fetchone()
        assert row == ("ft-test",)
    finally:
        opened.close()
    opened = open_broker(postgres_url, key_prefix=prefix, pool_size=0)
    try:
        opened.ping()
        assert opened._pool._idle == []  # type: ignore[attr-defined]
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("query", "options", "message"),
    [
        ("?pool_sise=2", {}, r"Cannot use .*: invalid URI query parameter: \"pool_sise\""),
        ("", {"poll_interval": 1}, "Unknown PostgreSQL broker option"),
        ("?pool_size=many", {}, "pool_size must be a whole number"),
        ("", {"pool_size": -1}, "pool_size must be a whole number"),
    ],
)
def test_bad_options_are_refused(query: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        open_broker(f"postgresql://u:secret@127.0.0.1/db{query}", **options)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("x" * 47, "at most 46 bytes"),
        ('my"app', "without quotes"),
        ("my'app", "without quotes"),
        ("", "non-empty"),
    ],
)
def test_prefixes_postgres_cannot_name_are_refused(prefix: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        open_broker("postgresql://127.0.0.1/db", key_prefix=prefix)


def test_the_longest_prefix_allowed_works(postgres_url: str) -> None:
    opened = open_broker(postgres_url, key_prefix="p" * 46)
    try:
        opened.publish([Envelope("m", "q", b"x")])
        assert [d.id for d in opened.reserve(["q"], 1, 30)] == ["m"]
    finally:
        opened.close()


def test_a_missing_psycopg_is_named_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(ImproperlyConfigured) as caught:
        check_url("postgresql://u:secret@db/app", "TASKS_RESULT_BACKEND")
    message = str(caught.value)
    assert message.startswith("TASKS_RESULT_BACKEND 'postgresql://u:***@db/app' needs psycopg 3")
    assert "pip install Flask-Tasks[postgresql]" in message
    app = Flask("no_driver")
    app.config["TASKS_BROKER_URL"] = "postgres://db/app"
    with pytest.raises(ImproperlyConfigured, match=r"TASKS_BROKER_URL .*Flask-Tasks\[postgresql\]"):
        Tasks(app)


def test_an_unreachable_server_names_the_url_without_its_password() -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/db?connect_timeout=3"
    opened = open_broker(url)
    try:
        with pytest.raises(OperationalError) as caught:
            opened.ping()
        message = str(caught.value)
        assert "PostgreSQL broker postgresql://postgres:***@127.0.0.1:" in message
        assert "secret" not in message
        with pytest.raises(OperationalError, match="cannot listen for notifications"):
            opened._listener._ready_timeout = 0.5  # type: ignore[attr-defined]
            opened.wait(["q"], 5)
    finally:
        opened.close()


def test_a_closed_broker_says_so(postgres_url: str, prefix: str) -> None:
    opened = PostgresBroker(postgres_url, key_prefix=prefix)
    opened.wait(["q"], 0.01)
    opened.close()
    with pytest.raises(OperationalError, match="is closed"):
        opened.publish([Envelope("m", "q", b"x")])
    with pytest.raises(OperationalError, match="is closed"):
        opened.watch_result("t", None, 1)
    assert not any(t.name == "flask-tasks-postgres-listen" for t in _threads())


def _threads() -> list[Any]:
    import threading

    return threading.enumerate()


def test_key_prefixes_keep_apps_apart_in_one_database(postgres_url: str) -> None:
    first = PostgresBroker(postgres_url, key_prefix="app-one")
    second = PostgresBroker(postgres_url, key_prefix="app-two")
    try:
        first.publish_with_records([Envelope("m", "q", b"1")], {"m": b"P1"}, 60)
        assert second.queue_length("q") == 0 and second.get_result("m") is None
        second.publish_with_records([Envelope("m", "q", b"2")], {"m": b"P2"}, 60)
        assert [d.body for d in first.reserve(["q"], 5, 30)] == [b"1"]
        assert first.get_result("m") == b"P1" and second.get_result("m") == b"P2"
        assert table_exists(postgres_url, "app-one_messages")
    finally:
        first.close()
        second.close()


# -- cost of each operation --------------------------------------------------------------


def _exercise(broker: PostgresBroker) -> None:
    broker.publish_with_records(
        [Envelope(f"m{i}", "q", b"x", i % 10) for i in range(20)], {"m0": b"P"}, 9
    )
    broker.publish([Envelope("later", "q", b"x", eta=time.time() + 0.05)])
    broker.reserve(["q", "other"], 5, 0.05)
    time.sleep(0.1)
    for delivery in broker.reserve(["q"], 5, 30):
        broker.extend([delivery.id], 30)
        broker.release(delivery.id, body=b"y")
    broker.wait(["q", "r"], 0)
    broker.ack(["m1", "m2"])
    broker.ack_with_records([("m3", b"S"), ("m4", None)], 60)
    broker.release_with_record("m5", b"z", time.time() + 60, b"RETRY", 60)
    fenced = broker.reserve(["q"], 3, 30)
    broker.extend(fenced, 30)
    broker.ack_with_records([(fenced[0], b"S"), (fenced[1], None)], 60)
    broker.release_with_record(fenced[2], None, None, b"RETRY", 60)
    [doomed] = broker.reserve(["q"], 1, 30)
    broker.dead_letter(doomed, "bad")
    broker.dead_letters(10)
    broker.retry_dead_letter(doomed.id)
    broker.get_result("m0")
    broker.get_results(["m0", "m1"])
    broker.set_results({"a": b"A", "b": b"B"}, 60)
    broker.forget_result("a")
    broker.revoke(["m0"], 60, terminate=True)
    broker.revoked(["m0"])
    broker.terminating(["m0"])
    broker.incr("k", 60)
    broker.claim("beat", 60)
    broker.heartbeat("w", b"info", 60)
    broker.workers()
    broker._next_sweep = 0.0
    broker.set_result("sweep", b"x", 60)  # deletes expired rows of every table
    broker.queue_length("q")


def test_no_statement_scans_a_table(broker: PostgresBroker, prefix: str) -> None:
    """Every plan, the reserve function's statements included (auto_explain), uses an
    index wherever one could serve; seq scans are priced out so that only a statement
    no index can serve would still pick one."""
    plans: list[str] = []
    broker._pool._size = 1
    with broker._pool.connection() as connection:
        connection.add_notice_handler(lambda notice: plans.append(notice.message_primary))
        connection.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
            "enable_seqscan = off",
        ):
            connection.execute(f"SET {setting}")
    _exercise(broker)
    ours = [plan for plan in plans if prefix in plan]
    assert len(ours) > 30
    scans = [plan for plan in ours if "Seq Scan" in plan]
    assert not scans, scans[0]


def test_expired_rows_are_deleted_in_passing(broker: PostgresBroker, postgres_url: str) -> None:
    broker.set_result("old", b"x", 0.05)
    broker.revoke(["old"], 0.05, terminate=True)
    broker.incr("old", 0.05)
    broker.claim("old", 0.05)
    broker.heartbeat("old", b"info", 0.05)
    broker.set_result("kept", b"x", 0)
    time.sleep(0.1)
    broker._next_sweep = 0.0  # the next write may sweep at once
    broker.reserve(["q"], 1, 30)
    with raw(postgres_url) as connection:
        counts = [
            connection.execute(f"SELECT count(*) FROM {broker._t[name]}").fetchone()[0]  # type: ignore[index]
            for name in ("results", "revoked", "counters", "claims", "workers")
        ]
    assert counts == [1, 0, 0, 0, 0]


def test_leases_are_judged_by_the_database_clock(broker: PostgresBroker, postgres_url: str) -> None:
    broker.publish([Envelope("m", "q", b"x")])
    broker.reserve(["q"], 1, 100)
    with raw(postgres_url) as connection:
        row = connection.execute(
            f"SELECT due - extract(epoch FROM now())::float8 FROM {broker._t['messages']}"
        ).fetchone()
    assert row is not None and 98 < row[0] <= 100


# -- connections lost, processes, threads --------------------------------------------------


def _terminate_backends(url: str) -> int:
    """End every session on the test database but this one (as a server restart would)."""
    with raw(url) as connection:
        row = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def test_connections_lost_are_replaced(broker: PostgresBroker, postgres_url: str) -> None:
    broker.set_result("t", b"PENDING", 60)
    assert broker.watch_result("t", None, 5) == b"PENDING"  # the listener is connected
    watcher = Background(lambda: broker.watch_result("t", b"PENDING", 20))
    time.sleep(0.2)
    assert _terminate_backends(postgres_url) >= 2  # the pooled and the listening one
    with pytest.raises(OperationalError, match="PostgreSQL broker"):
        broker.get_result("t")  # the pooled connection was lost: said once...
    broker.set_result("t", b"SUCCESS", 60)  # ...then a new one serves
    assert watcher.result() == b"SUCCESS"
    watcher = Background(lambda: broker.watch_result("t", b"SUCCESS", 20))
    time.sleep(0.2)
    broker.set_result("t", b"AGAIN", 60)
    assert watcher.result() == b"AGAIN"  # the listener is back


def _open_and_publish(url: str, prefix: str, name: str) -> str:
    opened = open_broker(url, key_prefix=prefix)
    try:
        opened.publish([Envelope(name, "q", b"x")])
        return name
    finally:
        opened.close()


def test_processes_may_create_the_tables_at_the_same_time(postgres_url: str, prefix: str) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        names = pool.starmap(_open_and_publish, [(postgres_url, prefix, f"p{i}") for i in range(4)])
    opened = open_broker(postgres_url, key_prefix=prefix)
    try:
        assert sorted(d.id for d in opened.reserve(["q"], 10, 30)) == sorted(names)
    finally:
        opened.close()


def _publish_in_child(broker: PostgresBroker, name: str) -> None:
    from flask_tasks.brokers.postgres_db import _INHERITED

    broker.publish([Envelope(name, "q", b"x")])
    assert _INHERITED, "the parent's connections were not set aside"
    assert broker.watch_result("t", None, 5) == b"R"  # a listener of the child's own
    broker.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connections(broker: PostgresBroker) -> None:
    broker.set_result("t", b"R", 60)
    broker.wait(["q"], 0.01)  # the parent listens and pools a connection
    broker.publish([Envelope("before", "q", b"x")])
    child = multiprocessing.get_context("fork").Process(
        target=_publish_in_child, args=(broker, "from-child")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        child.start()
    child.join(30)
    assert child.exitcode == 0
    assert [d.id for d in broker.reserve(["q"], 5, 30)] == ["before", "from-child"]
    watcher = Background(lambda: broker.watch_result("t", b"R", 20))
    time.sleep(0.1)
    broker.set_result("t", b"S", 60)
    assert watcher.result() == b"S"  # the parent's listener survived the child


def test_threads_share_a_small_pool(postgres_url: str, prefix: str) -> None:
    opened = PostgresBroker(postgres_url, key_prefix=prefix, pool_size=2)
    try:
        workers = [Background(lambda: [opened.incr("k", 60) for _ in range(20)]) for _ in range(6)]
        assert sorted(v for w in workers for v in w.result()) == list(range(1, 121))
        assert len(opened._pool._idle) <= 2
    finally:
        opened.close()


# -- a result backend behind another transport; init-db ------------------------------------


def test_a_result_backend_behind_another_transport(postgres_url: str, prefix: str) -> None:
    connections = Connections("memory://", postgres_url, key_prefix=prefix)
    try:
        assert isinstance(connections.transport, MemoryBroker)
        assert isinstance(connections.store, PostgresBroker)
        assert connections.broker is None
    finally:
        connections.close()
    tasks = Tasks()

    @tasks.task(name="pg.add")
    def add(x: int, y: int) -> int:
        return x + y

    app = Flask("pg_backend")
    app.config.update(
        TASKS_BROKER_URL="memory://", TASKS_RESULT_BACKEND=postgres_url, TASKS_KEY_PREFIX=prefix
    )
    tasks.init_app(app)
    try:
        with app.app_context():
            result = add.delay(2, 3)
            assert result.state == "PENDING"
            drain(app)
            assert result.get(timeout=10) == 5
        other = PostgresBroker(postgres_url, key_prefix=prefix)
        try:
            assert other.get_result(result.id) is not None  # stored in PostgreSQL
        finally:
            other.close()
    finally:
        app.extensions["tasks"].close()


def test_init_db_creates_the_tables(postgres_url: str, prefix: str) -> None:
    app = Flask("pg_init")
    app.config.update(TASKS_BROKER_URL=postgres_url, TASKS_KEY_PREFIX=prefix)
    Tasks(app)
    runner = app.test_cli_runner()
    try:
        assert not table_exists(postgres_url, f"{prefix}_messages")
        outcome = runner.invoke(args=["tasks", "init-db"])
        assert outcome.exit_code == 0, outcome.output
        assert outcome.output == f"postgresql {postgres_url}: tables created.\n"
        assert table_exists(postgres_url, f"{prefix}_messages")
        outcome = runner.invoke(args=["tasks", "init-db"])
        assert outcome.output == f"postgresql {postgres_url}: tables already there.\n"
    finally:
        app.extensions["tasks"].close()


def test_init_db_with_another_transport_and_when_the_server_is_down(postgres_url: str) -> None:
    app = Flask("pg_init_backend")
    app.config.update(TASKS_BROKER_URL="memory://", TASKS_RESULT_BACKEND=postgres_url)
    Tasks(app)
    outcome = app.test_cli_runner().invoke(args=["tasks", "init-db"])
    app.extensions["tasks"].close()
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.splitlines()[0] == "memory memory://: ready, nothing to create."
    down = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/x?connect_timeout=3"
    app = Flask("pg_init_down")
    app.config.update(TASKS_BROKER_URL=down)
    Tasks(app)
    outcome = app.test_cli_runner().invoke(args=["tasks", "init-db"])
    app.extensions["tasks"].close()
    assert outcome.exit_code == 1
    assert "Error: PostgreSQL broker postgresql://postgres:***@127.0.0.1" in outcome.output


def test_a_delayed_message_wakes_a_waiting_consumer_once_due(broker: PostgresBroker) -> None:
    broker.publish([Envelope("later", "q", b"x", eta=time.time() + 0.3)])
    started = time.monotonic()
    broker.wait(["q"], 0.05)  # the first wait may return at once (listener connected)
    taken = eventually(lambda: broker.wait(["q"], 10) or broker.reserve(["q"], 1, 30))
    assert [d.id for d in taken] == ["later"]
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_throwaway_server_is_started_when_none_answers() -> None:
    from postgres_server import answers, postgres_server, scratch_database

    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with postgres_server(unreachable) as admin_url:
        assert admin_url != unreachable and answers(admin_url)
        with scratch_database(admin_url) as url:
            opened = open_broker(url, key_prefix="throwaway")
            try:
                opened.publish([Envelope("m", "q", b"x")])
                assert [d.id for d in opened.reserve(["q"], 1, 30)] == ["m"]
            finally:
                opened.close()
    assert not answers(admin_url)

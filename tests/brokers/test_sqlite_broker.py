"""What the SQLite broker promises beyond the shared contract: URLs, files, processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from contract_helpers import Background, eventually

from flask_tasks.brokers import Envelope, open_broker
from flask_tasks.brokers.sqlite import SQLiteBroker
from flask_tasks.exceptions import ImproperlyConfigured, OperationalError


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.sqlite3"


@pytest.fixture
def broker(db_path: Path) -> Iterator[SQLiteBroker]:
    broker = SQLiteBroker(f"sqlite:///{db_path}")
    yield broker
    broker.close()


# -- URLs and files ----------------------------------------------------------------------


def test_absolute_url_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "deeper" / "tasks.sqlite3"
    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")
    broker = open_broker(url)
    try:
        assert isinstance(broker, SQLiteBroker) and broker.kind == "sqlite"
        assert broker.url == url and broker.path == str(path)
        assert path.exists()
    finally:
        broker.close()


def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = open_broker("sqlite:///data/tasks.db")
    try:
        assert broker.path == str(tmp_path / "data" / "tasks.db")  # type: ignore[attr-defined]
        assert (tmp_path / "data" / "tasks.db").exists()
    finally:
        broker.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/tasks.db",
        "sqlite:///file:tasks.db?mode=memory",
    ],
)
def test_urls_without_a_shareable_file_are_refused(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="sqlite"):
        open_broker(url)


def test_options_from_the_url_and_keywords(db_path: Path) -> None:
    broker = SQLiteBroker(
        f"sqlite:///{db_path}?busy_timeout=2.5&synchronous=full", poll_interval=0.02
    )
    try:
        options = broker._db.options
        assert (options.busy_timeout, options.synchronous, options.poll_interval) == (
            2.5,
            "FULL",
            0.02,
        )
        assert broker._db.connection().execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("query", "options"),
    [
        ("?colour=blue", {}),
        ("", {"colour": "blue"}),
        ("?busy_timeout=soon", {}),
        ("", {"synchronous": "SOMETIMES"}),
        ("", {"poll_interval": 0}),
    ],
)
def test_bad_options_are_refused(db_path: Path, query: str, options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        SQLiteBroker(f"sqlite:///{db_path}{query}", **options)


def test_the_file_uses_write_ahead_logging(broker: SQLiteBroker, db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as raw, raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_a_directory_that_cannot_be_made_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(OperationalError, match="a-file"):
        open_broker(f"sqlite:///{tmp_path / 'a-file' / 'tasks.db'}")


def test_a_file_that_is_not_a_database_names_the_path(db_path: Path) -> None:
    db_path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(OperationalError, match=str(db_path)):
        open_broker(f"sqlite:///{db_path}")


def test_a_closed_broker_says_so(db_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{db_path}")
    broker.close()
    with pytest.raises(OperationalError, match="closed"):
        broker.queue_length("q")


def test_key_prefixes_keep_apps_apart_in_one_file(db_path: Path) -> None:
    first = SQLiteBroker(f"sqlite:///{db_path}", key_prefix="app1")
    second = SQLiteBroker(f"sqlite:///{db_path}", key_prefix='odd "name":v2')
    try:
        first.publish_with_records([Envelope("m", "q", b"one")], {"m": b"first"}, 0)
        second.publish_with_records([Envelope("m", "q", b"two")], {"m": b"second"}, 0)
        assert [d.body for d in first.reserve(["q"], 5, 30)] == [b"one"]
        assert [d.body for d in second.reserve(["q"], 5, 30)] == [b"two"]
        assert (first.get_result("m"), second.get_result("m")) == (b"first", b"second")
        with closing(sqlite3.connect(db_path)) as raw, raw:
            tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        raw.close()
        assert {"app1_messages", 'odd "name":v2_messages'} <= tables
    finally:
        first.close()
        second.close()


# -- cost of each operation --------------------------------------------------------------


def test_no_statement_scans_a_table(broker: SQLiteBroker) -> None:
    connection = broker._db.connection()
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
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
        broker.release_with_record("m5", None, None, b"RETRY", 60)
        broker.get_results(["m0", "m1"])
        broker.set_results({"a": b"A", "b": b"B"}, 60)
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
    finally:
        connection.set_trace_callback(None)
    scans = []
    for statement in statements:
        if statement.split()[0] in {"SELECT", "UPDATE", "DELETE", "INSERT"}:
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}")]
            scans += [(statement, step) for step in plan if "SCAN" in step or "TEMP" in step]
    assert statements and not scans


def test_expired_rows_are_deleted_in_passing(broker: SQLiteBroker) -> None:
    broker.set_result("old", b"x", 0.05)
    broker.revoke(["old"], 0.05, terminate=True)
    broker.incr("old", 0.05)
    broker.claim("old", 0.05)
    broker.heartbeat("old", b"info", 0.05)
    broker.set_result("kept", b"x", 0)
    time.sleep(0.1)
    broker._next_sweep = 0.0  # the next write may sweep at once
    broker.reserve(["q"], 1, 30)
    tables = broker._db.tables
    with closing(sqlite3.connect(broker.path)) as raw, raw:
        counts = [
            raw.execute(f"SELECT COUNT(*) FROM {tables[name]}").fetchone()[0]
            for name in ("results", "revoked", "counters", "terminate", "claims", "workers")
        ]
    raw.close()
    assert counts == [1, 0, 0, 0, 0, 0]


def test_a_file_from_before_claims_and_heartbeats_gains_their_tables(db_path: Path) -> None:
    SQLiteBroker(f"sqlite:///{db_path}").close()
    with closing(sqlite3.connect(db_path)) as raw, raw:
        for table in ("terminate", "claims", "workers"):
            raw.execute(f"DROP TABLE flask_tasks_{table}")
    raw.close()
    broker = SQLiteBroker(f"sqlite:///{db_path}")
    try:
        broker.revoke(["t"], 60, terminate=True)
        assert broker.terminating(["t"]) == {"t"}
        assert broker.claim("beat", 60) is True
        broker.heartbeat("w", b"info", 60)
        assert broker.workers() == {"w": b"info"}
    finally:
        broker.close()


def test_finished_threads_do_not_keep_connections(broker: SQLiteBroker) -> None:
    for _ in range(5):
        Background(lambda: broker.get_result("t")).result()
    broker.get_result("t")
    assert len(broker._db._connections) <= 2


def test_close_stops_the_watcher_thread(db_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{db_path}")
    broker.wait(["q"], 0.05)
    assert any(t.name == "flask-tasks-sqlite-watch" for t in threading.enumerate())
    broker.close()
    assert not any(t.name == "flask-tasks-sqlite-watch" for t in threading.enumerate())


# -- several processes -------------------------------------------------------------------


def _open_and_publish(url: str, name: str) -> str:
    broker = open_broker(url)
    try:
        broker.publish([Envelope(name, "q", b"x")])
        return name
    finally:
        broker.close()


def test_processes_may_create_the_file_at_the_same_time(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        names = pool.starmap(_open_and_publish, [(url, f"p{i}") for i in range(3)])
    broker = open_broker(url)
    try:
        assert sorted(d.id for d in broker.reserve(["q"], 10, 30)) == sorted(names)
    finally:
        broker.close()


def _reserve_and_die(url: str, lease: float) -> None:
    broker = open_broker(url)
    assert broker.reserve(["q"], 1, lease)
    os._exit(0)  # like kill -9: no ack, no close


def test_a_lease_held_by_a_dead_process_runs_out(broker: SQLiteBroker) -> None:
    broker.publish([Envelope("m", "q", b"x")])
    process = multiprocessing.get_context("spawn").Process(
        target=_reserve_and_die, args=(broker.url, 0.3)
    )
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert broker.reserve(["q"], 1, 30) == []
    assert [d.id for d in eventually(lambda: broker.reserve(["q"], 1, 30))] == ["m"]


def _wait_and_report(url: str, ready: Event, done: Event) -> None:
    broker = open_broker(url)
    ready.set()
    deadline = time.monotonic() + 20
    while not broker.reserve(["q"], 1, 30) and time.monotonic() < deadline:
        broker.wait(["q"], 20)
    done.set()
    broker.close()


def test_a_waiting_process_wakes_on_another_process_publish(broker: SQLiteBroker) -> None:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    process = context.Process(target=_wait_and_report, args=(broker.url, ready, done))
    process.start()
    try:
        assert ready.wait(30)
        time.sleep(0.1)
        broker.publish([Envelope("m", "q", b"x")])
        published_at = time.monotonic()
        assert done.wait(10)
        assert time.monotonic() - published_at < 2
    finally:
        process.join(30)


def _publish_with(broker: SQLiteBroker, name: str) -> None:
    from flask_tasks.brokers.sqlite_db import _INHERITED

    broker.publish([Envelope(name, "q", b"x")])
    assert _INHERITED, "the parent's connection was not set aside"
    assert all(broker._db.connection() is not old for old in _INHERITED)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connections(broker: SQLiteBroker) -> None:
    inherited = broker._db.connection()
    broker.publish([Envelope("before", "q", b"x")])
    child = multiprocessing.get_context("fork").Process(
        target=_publish_with, args=(broker, "from-child")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        child.start()
    child.join(30)
    assert child.exitcode == 0
    assert broker._db.connection() is inherited  # the parent's own is untouched
    assert [d.id for d in broker.reserve(["q"], 5, 30)] == ["before", "from-child"]


def test_checkpoint_truncates_the_write_ahead_log(tmp_path) -> None:
    path = tmp_path / "wal.sqlite3"
    broker = SQLiteBroker(f"sqlite:///{path}")
    holder = None
    try:
        broker.publish([Envelope(f"m{i}", "q", b"x" * 2000) for i in range(300)])
        holder = sqlite3.connect(path)  # another process keeps the database open
        holder.execute("SELECT count(*) FROM sqlite_master").fetchone()
        wal = tmp_path / "wal.sqlite3-wal"
        assert wal.stat().st_size > 100_000
        assert broker.checkpoint() is True
        assert wal.stat().st_size == 0
        assert broker.queue_length("q") == 300
    finally:
        broker.close()
        if holder is not None:
            holder.close()


# -- the write lock ------------------------------------------------------------------------


def test_a_write_waits_for_another_connections_lock_then_goes_through(
    broker: SQLiteBroker, db_path: Path
) -> None:
    """The broker's own wait (SQLite's busy handler off while it takes the lock): a lock
    held 50 ms delays the write, which then commits; reads get the busy handler back."""
    with closing(sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)) as other:
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.05, lambda: other.execute("ROLLBACK"))
        release.start()
        started = time.monotonic()
        broker.publish([Envelope("m", "q", b"body")])
        release.join()
        assert time.monotonic() - started >= 0.04
    connection = broker._db.connection()
    assert not connection.patient  # left off after the write
    assert broker.queue_length("q") == 1
    assert connection.patient  # a read turned it on again
    busy_ms = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    assert busy_ms == int(broker._db.options.busy_timeout * 1000)


def test_a_write_still_fails_once_its_busy_timeout_runs_out(db_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{db_path}", busy_timeout=0.1)
    try:
        with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(OperationalError, match="locked"):
                broker.publish([Envelope("m", "q", b"body")])
            assert 0.1 <= time.monotonic() - started < 5
            other.execute("ROLLBACK")
        broker.publish([Envelope("m", "q", b"body")])
        assert broker.queue_length("q") == 1
    finally:
        broker.close()

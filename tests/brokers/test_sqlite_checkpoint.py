"""Checkpoints of the SQLite broker's write-ahead log while a worker consumes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

from flask_tasks.brokers import Delivery, Envelope
from flask_tasks.brokers.sqlite import SQLiteBroker
from flask_tasks.brokers.sqlite_checkpoint import RESTART_PAGES, Checkpointer


def _autocheckpoint(broker: SQLiteBroker) -> int:
    with broker._db.read() as conn:
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "flask-tasks-sqlite-checkpoint"]


def test_a_consumer_moves_checkpoints_to_a_thread_and_back(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path / 'tasks.sqlite3'}")
    try:
        broker.publish([Envelope("a", "q", b"x")])
        assert _autocheckpoint(broker) == 1000
        broker.consuming(True)
        broker.consuming(True)  # a second consumer of the process: still one thread
        assert _threads() == ["flask-tasks-sqlite-checkpoint"]
        broker.publish([Envelope("b", "q", b"x")])  # a write turns SQLite's off
        assert _autocheckpoint(broker) == 0
        broker.consuming(False)
        assert _threads() == ["flask-tasks-sqlite-checkpoint"]
        broker.consuming(False)
        assert _threads() == []
        broker.publish([Envelope("c", "q", b"x")])
        assert _autocheckpoint(broker) == 1000
        broker.consuming(True)  # closed while consuming: the thread stops too
    finally:
        broker.close()
    assert _threads() == []


def test_transports_without_checkpoints_ignore_consuming() -> None:
    from flask_tasks.brokers.memory import MemoryBroker

    broker = MemoryBroker()
    broker.consuming(True)
    broker.consuming(False)


def test_a_long_log_starts_over_after_a_checkpoint(tmp_path: Path) -> None:
    """Counts, no timing: the log holds more than RESTART_PAGES pages, which another
    connection has read; after one checkpoint the next commits write it from its start."""
    path = tmp_path / "tasks.sqlite3"
    broker = SQLiteBroker(f"sqlite:///{path}")
    reader = sqlite3.connect(path)
    checkpointer = Checkpointer(broker._db._open)
    connection = broker._db._open()
    try:
        broker.consuming(True)
        body = b"x" * 3000
        broker.publish([Envelope(f"a{i}", "q", body) for i in range(RESTART_PAGES + 200)])
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        wal = Path(f"{path}-wal")
        long = wal.stat().st_size
        assert long > RESTART_PAGES * 4096
        checkpointer.checkpoint(connection)
        assert (checkpointer.checkpoints, checkpointer.restarts) == (1, 1)
        broker.publish([Envelope(f"b{i}", "q", body) for i in range(RESTART_PAGES // 2)])
        assert wal.stat().st_size == long  # written over from the start, not appended
        assert broker.queue_length("q") == RESTART_PAGES + 200 + RESTART_PAGES // 2
    finally:
        connection.close()
        reader.close()
        broker.close()


def test_a_checkpoint_that_finds_the_database_locked_waits_for_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.sqlite3"
    broker = SQLiteBroker(f"sqlite:///{path}")
    checkpointer = Checkpointer(broker._db._open)
    connection = broker._db._open()
    try:
        connection.execute("BEGIN IMMEDIATE")  # a checkpoint inside a transaction fails
        checkpointer.checkpoint(connection)
        assert checkpointer.checkpoints == 0
        connection.execute("ROLLBACK")
    finally:
        connection.close()
        broker.close()


def _drain(url: str, counts: multiprocessing.Queue[tuple[int, int]]) -> None:
    broker = SQLiteBroker(url)
    broker.consuming(True)
    checkpointer = broker._db.checkpointer
    assert checkpointer is not None
    held: list[Delivery] = []
    try:
        while True:
            settle = [(delivery, b"r" * 150) for delivery in held]
            _refused, held = broker.ack_and_reserve(settle, 3600, ["q"], 4, 60)
            if not held:
                break
        counts.put((checkpointer.checkpoints, checkpointer.restarts))
    finally:
        broker.consuming(False)
        broker.close()


def test_two_processes_draining_leave_checkpoints_to_their_threads(tmp_path: Path) -> None:
    """Two worker processes settle and reserve 6,000 messages four at a time, neither
    checkpointing in its commits: their threads do, and make the log start over (counts,
    no timing; how long the log grows between restarts depends on the machine)."""
    url = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    broker = SQLiteBroker(url)
    try:
        for start in range(0, 6000, 1000):
            broker.publish_with_records(
                [Envelope(f"m{i}", "q", b"x" * 300) for i in range(start, start + 1000)],
                {f"m{i}": b"p" * 60 for i in range(start, start + 1000)},
                3600,
            )
        assert broker.checkpoint() is True
        context = multiprocessing.get_context("spawn")
        counts: multiprocessing.Queue[tuple[int, int]] = context.Queue()
        drains = [context.Process(target=_drain, args=(url, counts)) for _ in range(2)]
        for drain in drains:
            drain.start()
        done = [counts.get(timeout=120) for _ in drains]
        for drain in drains:
            drain.join(30)
            assert drain.exitcode == 0
        assert all(checkpoints > 0 for checkpoints, _restarts in done)
        assert sum(restarts for _checkpoints, restarts in done) > 0
        assert broker.queue_length("q") == 0
    finally:
        broker.close()

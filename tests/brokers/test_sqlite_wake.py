"""Wake-ups across processes for the SQLite broker: a datagram per commit, not polling.

Every waiter here polls once in 30 s (``poll_interval``), so one that returns within
seconds was woken by a socket.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_tasks.brokers import Envelope, open_broker
from flask_tasks.brokers.sqlite import SQLiteBroker
from flask_tasks.brokers.sqlite_wake import wake_directory

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or sys.platform == "win32", reason="Unix sockets"
)

SLOW_POLL = 30.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.sqlite3"


@pytest.fixture
def waiter(db_path: Path) -> Iterator[SQLiteBroker]:
    broker = SQLiteBroker(f"sqlite:///{db_path}", poll_interval=SLOW_POLL)
    yield broker
    broker.close()


def _publish_later(url: str, delay: float, name: str = "m") -> None:
    time.sleep(delay)
    broker = open_broker(url)
    try:
        broker.publish([Envelope(name, "q", b"x")])
    finally:
        broker.close()


def _set_result_later(url: str, delay: float) -> None:
    time.sleep(delay)
    broker = open_broker(url)
    try:
        broker.set_result("t", b"done", 60)
    finally:
        broker.close()


def _sockets(db_path: Path) -> list[str]:
    directory = wake_directory(str(db_path))
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_another_process_publish_wakes_a_waiter_at_once(waiter: SQLiteBroker) -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=_publish_later, args=(waiter.url, 0.2)
    )
    started = time.monotonic()
    process.start()
    try:
        while not waiter.reserve(["q"], 1, 30):
            assert time.monotonic() - started < 20, "no wake-up: the waiter polled"
            waiter.wait(["q"], 20)
        assert time.monotonic() - started < 20
    finally:
        process.join(30)
    assert process.exitcode == 0


def test_another_process_result_wakes_a_watcher_at_once(waiter: SQLiteBroker) -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=_set_result_later, args=(waiter.url, 0.2)
    )
    started = time.monotonic()
    process.start()
    try:
        assert waiter.watch_result("t", None, 20) == b"done"
        assert time.monotonic() - started < 20
    finally:
        process.join(30)


def test_another_broker_object_in_the_same_process_wakes_a_waiter(
    waiter: SQLiteBroker,
) -> None:
    writer = threading.Thread(target=_publish_later, args=(waiter.url, 0.3))
    writer.start()
    started = time.monotonic()
    waiter.wait(["q"], 10)
    writer.join()
    assert time.monotonic() - started < 5
    assert [d.id for d in waiter.reserve(["q"], 1, 30)] == ["m"]


def test_a_waiter_listens_until_its_broker_closes(db_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{db_path}")
    assert _sockets(db_path) == []
    broker.wait(["q"], 0.01)
    [name] = _sockets(db_path)
    assert name.startswith(f"{os.getpid()}-")
    broker.close()
    assert _sockets(db_path) == []


def test_sockets_of_dead_processes_are_removed_and_other_files_left(
    waiter: SQLiteBroker, db_path: Path
) -> None:
    directory = wake_directory(str(db_path))
    os.makedirs(directory)
    dead = os.path.join(directory, "999999-0123456789ab")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(dead)  # closed without unlinking, as after kill -9
    not_a_socket = os.path.join(directory, "999998-0123456789ab")
    Path(not_a_socket).write_text("x")
    notes = os.path.join(directory, "notes.txt")
    Path(notes).write_text("x")
    waiter.wait(["q"], 0.01)  # a live listener too
    _publish_later(waiter.url, 0)
    assert not os.path.exists(dead)
    assert os.path.exists(not_a_socket) and os.path.exists(notes)
    assert len([n for n in _sockets(db_path) if n.startswith(f"{os.getpid()}-")]) == 1


def test_a_forked_child_leaves_the_parent_listening(waiter: SQLiteBroker, db_path: Path) -> None:
    waiter.wait(["q"], 0.01)
    [mine] = _sockets(db_path)
    child = multiprocessing.get_context("fork").Process(
        target=_publish_later, args=(waiter.url, 0, "from-child")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        child.start()
    child.join(30)
    assert child.exitcode == 0
    assert _sockets(db_path) == [mine]
    assert [d.id for d in waiter.reserve(["q"], 5, 30)] == ["from-child"]
    thread = threading.Thread(target=_publish_later, args=(waiter.url, 0.3))
    thread.start()
    started = time.monotonic()
    waiter.wait(["q"], 10)
    thread.join()
    assert time.monotonic() - started < 5
    assert [d.id for d in waiter.reserve(["q"], 5, 30)] == ["m"]


def test_without_a_wake_directory_waiters_poll(db_path: Path) -> None:
    Path(wake_directory(str(db_path))).write_text("in the way")
    broker = SQLiteBroker(f"sqlite:///{db_path}", poll_interval=0.05)
    try:
        writer = threading.Thread(target=_publish_later, args=(broker.url, 0.2))
        writer.start()
        started = time.monotonic()
        broker.wait(["q"], 10)
        writer.join()
        assert time.monotonic() - started < 5
        assert [d.id for d in broker.reserve(["q"], 1, 30)] == ["m"]
    finally:
        broker.close()


def test_a_path_too_long_for_a_socket_uses_the_temporary_directory(tmp_path: Path) -> None:
    short = os.path.realpath(tmp_path / "t.db")
    assert wake_directory(short) == short + "-wake"
    (tmp_path / "link").symlink_to(tmp_path)
    assert wake_directory(str(tmp_path / "link" / "t.db")) == short + "-wake"
    long = str(tmp_path / ("d" * 120) / "tasks.sqlite3")
    directory = wake_directory(long)
    assert os.path.dirname(directory) == tempfile.gettempdir()
    assert directory == wake_directory(long)  # every process finds the same one
    assert directory != wake_directory(long + "2")


def test_a_broker_dropped_without_close_leaves_no_socket_open(waiter: SQLiteBroker) -> None:
    waiter.wait(["q"], 0.01)  # someone listens, so the writer opens a socket to send
    writer = SQLiteBroker(waiter.url)
    writer.publish([Envelope("m", "q", b"x")])
    assert writer._db.notifier._sender is not None
    assert writer._db.notifier._sender._socket is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del writer
        gc.collect()

"""The SQLite broker's file: URL, options, per-thread connections, transactions, upkeep.

Every thread gets its own connection (SQLite connections must not be used by two threads
at once). A forked child never touches, nor closes, a connection it inherited: closing
one would drop the POSIX locks that the child's own connections hold on the same file.
It opens fresh ones instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import parse_qsl

from ..exceptions import ImproperlyConfigured, OperationalError, ReadOnlyBroker
from .sqlite_checkpoint import Checkpointer
from .sqlite_notify import ChangeNotifier
from .sqlite_schema import SCHEMA, add_missing_columns, table_names
from .sqlite_wake import wake_directory

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Seconds between tries to take the write lock while another connection holds it: the
#: first pause, doubled at each try up to the longest.
_FIRST_PAUSE = 0.0001
_LONGEST_PAUSE = 0.002
#: Ids per ``IN (...)`` list, well under SQLite's oldest limit of 999 parameters.
_CHUNK = 500


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    """``items`` in slices short enough for one ``IN (...)`` list."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(count: int) -> str:
    """``?,?,...`` for ``count`` parameters."""
    return ",".join("?" * count)


@dataclass(frozen=True)
class SQLiteOptions:
    """Tuning knobs, from keyword arguments or the URL's query string."""

    #: Seconds a statement waits for another connection's write lock before failing.
    busy_timeout: float = 30.0
    #: ``PRAGMA synchronous``: NORMAL survives a crash of any process; FULL also a power cut.
    synchronous: str = "NORMAL"
    #: Seconds between checks for other processes' commits while a thread waits and the
    #: database is quiet; a tenth of it while the database is changing.
    poll_interval: float = 0.05

    @classmethod
    def parse(cls, url: str, query: str, options: Mapping[str, Any]) -> SQLiteOptions:
        given: dict[str, Any] = dict(parse_qsl(query))
        given.update(options)
        unknown = sorted(set(given) - {"busy_timeout", "synchronous", "poll_interval"})
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown SQLite broker option(s) {', '.join(unknown)} for {url!r}; "
                "the options are busy_timeout, synchronous and poll_interval"
            )
        try:
            busy_timeout = float(given.get("busy_timeout", cls.busy_timeout))
            poll_interval = float(given.get("poll_interval", cls.poll_interval))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"SQLite broker options busy_timeout and poll_interval take seconds: {exc}"
            ) from None
        synchronous = str(given.get("synchronous", cls.synchronous)).upper()
        if synchronous not in _SYNCHRONOUS or poll_interval <= 0 or busy_timeout < 0:
            raise ImproperlyConfigured(
                f"Bad SQLite broker options for {url!r}: synchronous must be one of "
                f"{', '.join(_SYNCHRONOUS)}, poll_interval > 0 and busy_timeout >= 0"
            )
        return cls(busy_timeout, synchronous, poll_interval)


def parse_url(url: str) -> tuple[str, str]:
    """Split ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` into path and query."""
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix):
        raise ImproperlyConfigured(
            f"SQLite broker URL {url!r} must look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db (three slashes, then the path)"
        )
    path, _, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ImproperlyConfigured(
            f"SQLite broker URL {url!r} names no file. An in-memory SQLite database is "
            "not shared between threads or processes; give a file path, or use "
            "memory:// for a broker inside one process"
        )
    return path, query


class _Connection(sqlite3.Connection):
    """A connection that remembers whether SQLite's busy handler is on (see
    :meth:`Database._begin`, which turns it off, and :meth:`Database.patient`)."""

    patient = True
    #: SQLite checkpoints in this connection's commits (off while a Checkpointer runs).
    autocheckpoint = True


#: Connections inherited over fork(): kept referenced so that they are never closed.
_INHERITED: list[object] = []
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


def _disown_after_fork() -> None:
    for database in list(_DATABASES):
        database.disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)


class Database:
    """One SQLite file as the broker sees it: connections, transactions, wake-ups."""

    def __init__(self, path: str, key_prefix: str, options: SQLiteOptions) -> None:
        self.path = os.path.abspath(path)
        self.options = options
        self.tables = table_names(key_prefix)
        self._lock = threading.Lock()
        self._connections: dict[int, tuple[weakref.ref[threading.Thread], _Connection]]
        self._connections = {}
        self._pid = os.getpid()
        self._closed = False
        self.notifier = self._notifier()
        #: Checkpoints off the task loop while this process consumes (:meth:`consuming`).
        self.checkpointer: Optional[Checkpointer] = None
        self._consumers = 0
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise OperationalError(
                f"Cannot create the directory {directory!r} for the SQLite broker "
                f"{self.path!r}: {exc}"
            ) from exc
        try:
            with self.errors():
                self._create_schema()
        except BaseException:
            self.close()
            raise
        _DATABASES.add(self)

    def _notifier(self) -> ChangeNotifier:
        return ChangeNotifier(self._open, self.options.poll_interval, wake_directory(self.path))

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> _Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=self.options.busy_timeout,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # used by one thread; closed by whoever closes us
            factory=_Connection,
        )
        try:
            connection.execute(f"PRAGMA synchronous = {self.options.synchronous}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_schema(self) -> None:
        connection = self.connection()
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OperationalError(
                f"SQLite broker {self.path!r} cannot use write-ahead logging (journal mode "
                f"is {mode!r}); put the file on a local disk, not a network share"
            )
        try:
            # executescript() commits any open transaction first, so BEGIN goes inside.
            connection.executescript("BEGIN IMMEDIATE;" + SCHEMA.format(**self.tables))
            add_missing_columns(connection, self.tables)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def connection(self) -> _Connection:
        """This thread's connection, opened on first use."""
        if self._pid != os.getpid():
            self.disown()
        if self._closed:
            raise OperationalError(f"The SQLite broker {self.path!r} is closed")
        thread = threading.current_thread()
        entry = self._connections.get(threading.get_ident())
        if entry is not None and entry[0]() is thread:
            return entry[1]
        with self._lock:
            self._close_orphans()
            connection = self._open()
            self._connections[threading.get_ident()] = (weakref.ref(thread), connection)
        return connection

    def _close_orphans(self) -> None:
        # Threads come and go (a web server may start one per request): close the
        # connections of finished threads so that their files do not pile up.
        for ident, (thread_ref, connection) in list(self._connections.items()):
            thread = thread_ref()
            if thread is None or not thread.is_alive():
                del self._connections[ident]
                connection.close()

    def disown(self) -> None:
        """In a forked child: forget the parent's connections without closing them."""
        with self._lock:
            _INHERITED.extend(connection for _ref, connection in self._connections.values())
            if self.notifier.connection is not None:
                _INHERITED.append(self.notifier.connection)
            self.notifier.disown()
            self._connections = {}
            self._pid = os.getpid()
            self.notifier = self._notifier()
            self.checkpointer, self._consumers = None, 0  # its thread stayed in the parent

    def __del__(self) -> None:
        # A broker dropped without close() (a test's app, a short script): close its files
        # here rather than leave them to sqlite3, which warns about each one it finalizes.
        # Never in a forked child: the connections are the parent's (see disown).
        try:
            if not self._closed and self._pid == os.getpid():
                for _ref, connection in self._connections.values():
                    connection.close()
                self.notifier.close_sender()
        except Exception:  # interpreter shutdown: nothing left to do
            pass

    def close(self) -> None:
        """Close every connection this process opened; later calls fail."""
        self._closed = True
        checkpointer, self.checkpointer = self.checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        self.notifier.close()
        with self._lock:
            connections, self._connections = self._connections, {}
        for _ref, connection in connections.values():
            connection.close()

    def checkpoint(self) -> bool:
        """Fold the write-ahead log into the database file and truncate it to zero bytes.
        False when other connections kept it from finishing (it is done later anyway)."""
        with self.errors():
            busy, _pages, _moved = (
                self.patient(self.connection())
                .execute("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetchone()
            )
        return not busy

    def consuming(self, active: bool) -> None:
        """A consumer of this process starts (True) or stops: while any runs, checkpoints
        run in a thread of their own (:mod:`.sqlite_checkpoint`), not in its commits."""
        with self._lock:
            self._consumers += 1 if active else -1
            checkpointer = self.checkpointer
            if active and checkpointer is None and not self._closed:
                self.checkpointer = Checkpointer(self._open)
                self.checkpointer.start()
            elif not active and self._consumers <= 0 and checkpointer is not None:
                self.checkpointer, self._consumers = None, 0
            else:
                return
        if not active and checkpointer is not None:
            checkpointer.stop()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn SQLite errors into OperationalError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            if "readonly" in str(exc).lower():  # SQLITE_READONLY and its variants
                raise ReadOnlyBroker(
                    f"SQLite broker {self.path!r} is read-only for this process ({exc}): "
                    "make the file, its -wal and -shm files and their directory writable"
                ) from exc
            raise OperationalError(f"SQLite broker {self.path!r}: {exc}") from exc

    def check_writable(self) -> None:
        """Raise OperationalError saying so when the file cannot be written (a read-only
        file, directory or mount): retrying cannot help. A write lock held by another
        process for longer than a moment passes: the file is writable, just busy."""
        try:
            with self.write(busy_timeout=0.5) as conn:  # deletes nothing, but must write
                conn.execute(f"DELETE FROM {self.tables['claims']} WHERE key = ''")
        except ReadOnlyBroker:
            raise
        except OperationalError as error:
            text = str(error).lower()
            if "locked" in text or "busy" in text:
                return
            raise

    @contextmanager
    def write(self, busy_timeout: Optional[float] = None) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: all or nothing, one writer at a time.

        ``busy_timeout`` (seconds) bounds the wait for another writer's lock in this
        transaction only (publishing: a web request must not wait the workers' 30 s).
        Waiters are woken after a commit that changed anything.
        """
        with self.errors():
            connection = self.connection()
            checkpointer = self.checkpointer
            automatic = checkpointer is None or checkpointer.failed
            if connection.autocheckpoint is not automatic:
                connection.execute(f"PRAGMA wal_autocheckpoint = {1000 if automatic else 0}")
                connection.autocheckpoint = automatic
            self._begin(
                connection, self.options.busy_timeout if busy_timeout is None else busy_timeout
            )
            changes = connection.total_changes
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        if connection.total_changes != changes:
            self.notifier.committed()
            if checkpointer is not None:
                checkpointer.committed()

    def _begin(self, connection: _Connection, timeout: float) -> None:
        """``BEGIN IMMEDIATE``, trying again every fraction of a millisecond while another
        connection holds the write lock, for up to ``timeout`` seconds. SQLite's own busy
        handler sleeps 1 ms, then 2, 5, 10...: for a lock held a fifth of a millisecond (a
        worker's reserve), that leaves a CPU idle most of the time it waits."""
        if connection.patient:  # (left off for the next write; a read turns it on again)
            connection.execute("PRAGMA busy_timeout = 0")
            connection.patient = False
        deadline = time.monotonic() + max(0.0, timeout)
        pause = _FIRST_PAUSE
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _LONGEST_PAUSE)

    def patient(self, connection: _Connection) -> _Connection:
        """``connection`` with SQLite's busy handler on: outside a write transaction, a
        statement may wait for a lock too (a reader while the log is being reset)."""
        if not connection.patient:
            connection.execute(f"PRAGMA busy_timeout = {int(self.options.busy_timeout * 1000)}")
            connection.patient = True
        return connection

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads; each statement sees one consistent snapshot."""
        with self.errors():
            yield self.patient(self.connection())

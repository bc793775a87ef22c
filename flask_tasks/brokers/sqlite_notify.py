"""Wake-ups for the SQLite broker: who is waiting, and when the database changed.

Commits made through this broker wake its waiters at once (a condition variable). Commits
made by other processes (or other broker objects) are noticed by one watcher thread per
broker that reads ``PRAGMA data_version`` while, and only while, some thread waits. That
pragma reads the WAL index in shared memory: no disk access, about 5 microseconds.

The watcher reads it when another process's commit sends it a wake-up over a Unix
datagram socket (:mod:`.sqlite_wake`), and every ``poll_interval`` seconds anyway, in case
a wake-up was lost. Where Unix sockets are missing (Windows), it reads it every
``poll_interval / 10`` seconds while the database is changing and every ``poll_interval``
after a second of quiet. A process in which nobody waits (a web process between requests)
runs no watcher at all.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, Optional

from .sqlite_wake import SUPPORTED, WakeListener, WakeSender

#: Pause after the watcher could not read the database, before it tries again.
_ERROR_BACKOFF = 1.0
#: Seconds after the last change seen during which the watcher polls at the fast rate.
_BUSY_PERIOD = 1.0


class ChangeNotifier:
    """A change counter that waiting threads can block on."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        poll_interval: float,
        wake_directory: Optional[str] = None,
    ) -> None:
        self._connect = connect
        self._wake_directory = wake_directory if SUPPORTED else None
        self._sender = WakeSender(self._wake_directory) if self._wake_directory else None
        self._listener: Optional[WakeListener] = None
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._has_waiters = threading.Condition(self._lock)
        self._generation = 0
        self._waiters = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        #: The watcher's own connection, kept here so a forked child can disown it.
        self.connection: Optional[sqlite3.Connection] = None

    def changed(self) -> None:
        """Note a change (a local commit) and wake every waiter."""
        with self._lock:
            self._generation += 1
            self._changed.notify_all()

    def committed(self) -> None:
        """Note a commit made through this broker: wake its waiters, and the watchers of
        other processes (and of other broker objects) on the same file."""
        self.changed()
        if self._sender is not None:
            listener = self._listener
            self._sender.send(listener.path if listener is not None else None)

    def token(self) -> int:
        """The current change count; pass it to :meth:`wait`."""
        return self._generation

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Count the calling thread as a waiter, so other processes' commits are noticed.

        The first waiter starts the watcher thread and returns only once it has read its
        first ``data_version``: any commit after that is seen, so no wake-up is lost
        between a waiter's check of the database and its call to :meth:`wait`.
        """
        with self._lock:
            self._waiters += 1
            self._has_waiters.notify()
            if self._thread is None and not self._closed:
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._watch,
                    args=(ready,),
                    name="flask-tasks-sqlite-watch",
                    daemon=True,
                )
                self._thread.start()
                ready.wait(self._poll_interval + 5.0)
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1

    def wait(self, token: int, deadline: float) -> None:
        """Block until a change after ``token`` or until ``deadline`` (``time.monotonic``)."""
        with self._lock:
            while self._generation == token and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def close(self) -> None:
        """Stop the watcher thread and wake every waiter."""
        with self._lock:
            self._closed = True
            self._stop.set()
            self._changed.notify_all()
            self._has_waiters.notify_all()
            thread, listener = self._thread, self._listener
        if listener is not None:
            listener.interrupt()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self.close_sender()

    def close_sender(self) -> None:
        """Close the socket that sends wake-ups (the next commit opens another)."""
        if self._sender is not None:
            self._sender.close()

    def disown(self) -> None:
        """In a forked child: close this process's copies of the sockets, leaving the
        parent's socket file in place (the database connection is the caller's)."""
        if self._listener is not None:
            self._listener.close()
        self.close_sender()

    def _read_version(self) -> Optional[int]:
        try:
            if self.connection is None:
                self.connection = self._connect()
            return int(self.connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self._drop_connection()
            return None

    def _drop_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _listen(self) -> Optional[WakeListener]:
        if self._wake_directory is None:
            return None
        try:
            return WakeListener(self._wake_directory)
        except OSError:  # a directory we may not write to, say: poll instead
            return None

    def _watch(self, ready: threading.Event) -> None:
        # Listen before the first read: a commit after that read sends us a wake-up.
        listener = self._listener = self._listen()
        last = self._read_version()
        ready.set()
        last_change = time.monotonic() - _BUSY_PERIOD  # quiet until a change is seen
        try:
            while not self._stop.is_set():
                with self._lock:
                    while self._waiters == 0 and not self._closed:
                        self._has_waiters.wait()
                version = self._read_version()
                now = time.monotonic()
                if version != last:
                    last_change = now
                    # On an error too: the waiters then meet it themselves.
                    self.changed()
                last = version
                if version is None:
                    self._stop.wait(_ERROR_BACKOFF)
                elif listener is not None:
                    listener.wait(self._poll_interval)
                elif now - last_change < _BUSY_PERIOD:
                    self._stop.wait(self._poll_interval / 10)
                else:
                    self._stop.wait(self._poll_interval)
        finally:
            self._drop_connection()
            if listener is not None:
                listener.close()

"""Checkpoints of the SQLite broker's write-ahead log, off a worker's task loop.

SQLite's own checkpoints run in the connection that commits, once the log holds
``wal_autocheckpoint`` pages (1,000). Two busy workers never leave the log idle long
enough for it to start over from its beginning, so it grows (tens of MB in a drain of
10,000 tasks) and from then on nearly every commit runs a checkpoint, with its fsyncs, in
the task loop. While a process consumes, :class:`Checkpointer` turns SQLite's off on that
process's connections and checkpoints from a thread of its own, on its own connection:
after every ``EVERY_COMMITS`` commits of the process, and every ``EVERY_SECONDS`` for the
commits of other processes. Once the log holds ``RESTART_PAGES`` pages it waits (briefly)
for readers to move on, so that the next commit writes the log from its beginning again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Callable, Optional

logger = logging.getLogger("flask_tasks.worker")

#: Commits of this process between two checkpoints.
EVERY_COMMITS = 32
#: Seconds between checkpoints while this process commits nothing (other processes may).
EVERY_SECONDS = 1.0
#: Pages in the log past which a checkpoint makes it start over (SQLite's auto-checkpoint
#: threshold).
RESTART_PAGES = 1000
#: Tries of a restarting checkpoint to take the write lock while readers move on, the
#: first ``FIRST_PAUSE`` seconds apart, then twice as long each time up to the longest.
RESTART_TRIES = 40
FIRST_PAUSE = 0.0001
LONGEST_PAUSE = 0.002


class Checkpointer:
    """A thread checkpointing one database file while its process consumes."""

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        self._wake = threading.Event()
        self._stopping = False
        self._commits = 0
        self._thread: Optional[threading.Thread] = None
        #: Checkpoints run and those that made the log start over (for tests and benches).
        self.checkpoints = 0
        self.restarts = 0
        #: True once the thread has died of an error: SQLite's own checkpoints resume.
        self.failed = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="flask-tasks-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        """Called after each commit of this process (not thread-safe: a count, a hint)."""
        self._commits += 1
        if self._commits >= EVERY_COMMITS:
            self._commits = 0
            self._wake.set()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint, and close its connection."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        connection: Optional[sqlite3.Connection] = None
        try:
            connection = self._open()
            connection.execute("PRAGMA busy_timeout = 0")  # see checkpoint()
            while True:
                self._wake.wait(EVERY_SECONDS)
                self._wake.clear()
                self.checkpoint(connection)
                if self._stopping:
                    return
        except Exception:  # SQLite's own checkpoints resume (see Database.write)
            self.failed = True
            logger.exception("SQLite checkpoint thread stopped")
        finally:
            if connection is not None:
                connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        """Copy the log into the database without blocking anyone; then, when the log is
        long, make it start over: that takes the write lock, which workers retry for every
        fraction of a millisecond (``Database._begin``), so it is retried as often here
        (with SQLite's busy handler, which sleeps for milliseconds, it would lose to them)."""
        try:
            busy, pages, _done = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if busy or pages < RESTART_PAGES:
                return
            pause = FIRST_PAUSE
            for _try in range(RESTART_TRIES):
                (busy, _pages, _done) = connection.execute(
                    "PRAGMA wal_checkpoint(RESTART)"
                ).fetchone()
                if not busy:
                    self.restarts += 1
                    return
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)
        except sqlite3.OperationalError as error:  # locked or busy: the next one will do
            logger.debug("SQLite checkpoint skipped: %s", error)

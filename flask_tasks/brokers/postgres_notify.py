"""Wake-ups for the PostgreSQL broker: one ``LISTEN`` connection per broker and process.

Writes send ``NOTIFY`` in their own transaction (``pg_notify``), so a notification arrives
only once the change it announces is committed, on every host. One thread per broker
object holds a connection that listens on the broker's channels and wakes the threads
that wait for a key on a channel: a queue name (``work``) or a task id (``results``).

A waiter subscribes *before* it reads the state it waits on, so no notification falls
between the read and the wait. When the listening connection is lost (a server restart),
every waiter is woken to read again, and the thread reconnects with backoff.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import psycopg

from ..exceptions import OperationalError
from .postgres_db import disown_after_fork, keep_inherited

#: Longest pause between attempts to reconnect the listening connection.
_MAX_BACKOFF = 5.0


@dataclass(eq=False)
class _Waiter:
    keys: frozenset[str]
    event: threading.Event = field(default_factory=threading.Event)


class Listener:
    """Routes notifications on ``channels`` to the threads waiting for them."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channels: Collection[str],
        url: str,
        ready_timeout: float = 15.0,
    ) -> None:
        self._connect = connect
        self._channels = tuple(channels)
        self._url = url
        self._ready_timeout = ready_timeout
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {channel: [] for channel in channels}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error = "not connected yet"
        self._thread: Optional[threading.Thread] = None
        self._wake_reader: Optional[socket.socket] = None
        self._wake_writer: Optional[socket.socket] = None
        self._connection: Optional[psycopg.Connection[Any]] = None
        self._pid = os.getpid()
        disown_after_fork(self)

    @contextmanager
    def subscribe(self, channel: str, keys: Collection[str]) -> Iterator[threading.Event]:
        """An event set when a notification for one of ``keys`` arrives on ``channel``
        (or when the connection was lost), from the moment this returns."""
        waiter = _Waiter(frozenset(keys))
        with self._lock:
            if self._stop.is_set():
                raise OperationalError(f"The PostgreSQL broker {self._url} is closed")
            self._waiters[channel].append(waiter)
            if self._thread is None:
                self._wake_reader, self._wake_writer = socket.socketpair()
                self._thread = threading.Thread(
                    target=self._run, name="flask-tasks-postgres-listen", daemon=True
                )
                self._thread.start()
        try:
            if not self._ready.wait(self._ready_timeout):
                raise OperationalError(
                    f"PostgreSQL broker {self._url}: cannot listen for notifications "
                    f"({self._error})"
                )
            yield waiter.event
        finally:
            with self._lock:
                self._waiters[channel].remove(waiter)

    def _wake(self, channel: Optional[str] = None, key: Optional[str] = None) -> None:
        with self._lock:
            for name, waiters in self._waiters.items():
                if channel is None or name == channel:
                    for waiter in waiters:
                        if key is None or key in waiter.keys:
                            waiter.event.set()

    # -- the listening thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                connection = self._connect()
                for channel in self._channels:
                    connection.execute(f'LISTEN "{channel}"')
            except (psycopg.Error, OperationalError) as exc:
                self._error = str(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self._connection = connection
            backoff = 0.1
            self._ready.set()
            self._wake()  # anything may have changed while nobody listened
            try:
                self._pump(connection)
            except psycopg.Error as exc:
                self._error = str(exc)
            finally:
                self._ready.clear()
                self._connection = None
                if self._pid == os.getpid():
                    connection.close()
                self._wake()

    def _pump(self, connection: psycopg.Connection[Any]) -> None:
        pgconn = connection.pgconn
        reader = self._wake_reader
        assert reader is not None
        while not self._stop.is_set():
            readable, _, _ = select.select([connection.fileno(), reader.fileno()], [], [])
            if reader.fileno() in readable:
                reader.recv(64)
                continue
            pgconn.consume_input()  # raises once the server closed the connection
            notify = pgconn.notifies()
            while notify is not None:
                self._wake(notify.relname.decode(), notify.extra.decode())
                notify = pgconn.notifies()

    # -- closing ----------------------------------------------------------------------------

    def disown(self) -> None:
        """In a forked child: the thread did not survive the fork; forget its connection
        without closing it."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._waiters = {channel: [] for channel in self._channels}
        self._ready = threading.Event()
        if self._connection is not None:
            keep_inherited(self._connection)
        self._connection = None
        self._thread = None
        self._pid = os.getpid()
        self._close_wake_sockets()  # this process's own copies: closing them is safe

    def close(self) -> None:
        """Stop the thread (closing its connection) and wake every waiter."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if self._pid != os.getpid():
            self.disown()
            thread = None
        if self._wake_writer is not None:
            with suppress(OSError):
                self._wake_writer.send(b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self._wake()
        self._close_wake_sockets()

    def _close_wake_sockets(self) -> None:
        for sock in (self._wake_reader, self._wake_writer):
            if sock is not None:
                sock.close()
        self._wake_reader = self._wake_writer = None

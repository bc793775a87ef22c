"""Result notifications for the Redis broker: one pub/sub connection per process.

``watch_result`` (behind ``AsyncResult.get()`` and the status endpoints) waits on the
channel its task's record is published to. Every waiter of a process shares one
connection, owned by a background thread that reads it and hands each published record
to the waiters of its channel. A channel is subscribed (and the server has confirmed it)
before the waiter reads the record, so a write after that read still wakes it.

Subscribing costs a request to the server; unsubscribing would cost another. So a channel
whose last waiter left stays subscribed a while ("lingers"): its ``UNSUBSCRIBE`` goes out
in the same write as the next ``SUBSCRIBE`` (one request for both), or, when no other
subscription comes, after :attr:`ResultListener.linger` seconds. A waiter coming back to
a lingering channel (a second ``get()``, a reconnecting status stream) needs no request.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import redis
from redis.connection import AbstractConnection

#: How long to wait for the server to confirm a subscription.
CONFIRM_TIMEOUT = 5.0
#: Seconds a channel without waiters stays subscribed when no other subscription comes.
LINGER = 1.0
#: Most channels lingering at once; beyond it they are unsubscribed at once.
MAX_LINGERING = 256


class Inbox:
    """What one ``watch_result`` waiter is told: the latest record published (an empty
    payload means "deleted, or the connection was lost: read it again")."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.payload: bytes = b""

    def deliver(self, payload: bytes) -> None:
        self.payload = payload
        self.arrived.set()

    def take(self, timeout: float) -> bytes | None:
        """The latest payload once one arrives, or None after ``timeout`` seconds."""
        if not self.arrived.wait(timeout):
            return None
        self.arrived.clear()
        return self.payload


class Watchers(Protocol):
    """What ``watch_result`` waits with: :class:`ResultListener`, or on a Redis 7+
    Cluster its shard-channel counterpart (``redis_cluster_shards.py``)."""

    def listening(self, channel: str) -> AbstractContextManager[Inbox]: ...

    def close(self) -> None: ...


class _Channel:
    """Waiters of one result channel, and whether the server confirmed the subscription."""

    def __init__(self) -> None:
        self.waiters: set[Inbox] = set()
        self.confirmed = threading.Event()


class ResultListener:
    """One pub/sub connection and one thread that wake every ``watch_result`` waiter of a
    process, however many there are (a web process may hold thousands of SSE streams).

    Only the listener thread reads the connection; waiters only write to it (under the
    lock). A forked child forgets its parent's connection and opens its own on first use.
    """

    def __init__(
        self, client: redis.Redis, linger: float = LINGER, max_lingering: int = MAX_LINGERING
    ) -> None:
        self._pool = client.connection_pool
        #: Seconds a channel without waiters stays subscribed (see the module docstring).
        self.linger = linger
        self.max_lingering = max_lingering
        self._lock = threading.Lock()
        self._channels: dict[bytes, _Channel] = {}
        #: Subscribed channels without waiters, oldest first: when the last one left.
        self._lingering: dict[bytes, float] = {}
        self._connection: AbstractConnection | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    @property
    def subscribed(self) -> frozenset[bytes]:
        """The channels subscribed (or being subscribed) now, lingering ones included."""
        with self._lock:
            return frozenset(self._channels)

    @contextmanager
    def listening(self, channel: str) -> Iterator[Inbox]:
        """An inbox receiving what is published on ``channel``; subscribed (and confirmed
        by the server) before this yields, so no write after it can be missed."""
        name = channel.encode()
        inbox = Inbox()
        with self._lock:
            connection = self._ensure_running()
            entry = self._channels.get(name)
            if entry is None:
                entry = self._channels[name] = _Channel()
                try:
                    self._send(connection, [("SUBSCRIBE", name)])
                except BaseException:
                    del self._channels[name]
                    raise
            else:
                self._lingering.pop(name, None)
            entry.waiters.add(inbox)
        try:
            if not entry.confirmed.wait(CONFIRM_TIMEOUT):
                raise redis.TimeoutError("Redis did not confirm a SUBSCRIBE")
            yield inbox
        finally:
            with self._lock:
                entry.waiters.discard(inbox)
                if not entry.waiters and self._channels.get(name) is entry:
                    self._lingering[name] = time.monotonic()
                    if len(self._lingering) > self.max_lingering:
                        self._unsubscribe_lingering()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            with contextlib.suppress(redis.RedisError, OSError):
                connection.disconnect()  # type: ignore[no-untyped-call]

    # -- with the lock held ---------------------------------------------------------------

    def _ensure_running(self) -> AbstractConnection:
        """The shared connection, with its listener thread started."""
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            self._pid, self._connection, self._thread = os.getpid(), None, None
            self._channels.clear()
            self._lingering.clear()
        if self._closed:
            raise redis.ConnectionError("the broker is closed")
        if self._connection is None:
            self._connection = self._open()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._listen,
                args=(self._connection,),
                name="flask-tasks-results",
                daemon=True,
            )
            self._thread.start()
        return self._connection

    def _open(self) -> AbstractConnection:
        """A connection of the client's settings, outside its pool (this listener owns
        it), speaking RESP2: published messages arrive as plain replies."""
        kwargs = dict(self._pool.connection_kwargs)
        if "protocol" in kwargs:
            kwargs["protocol"] = 2
        connection: AbstractConnection = self._pool.connection_class(**kwargs)
        connection.connect()  # type: ignore[no-untyped-call]
        return connection

    def _send(self, connection: AbstractConnection, commands: list[tuple[Any, ...]]) -> None:
        """Send ``commands`` in one write, preceded by the lingering channels' UNSUBSCRIBE."""
        if self._lingering:
            commands = [("UNSUBSCRIBE", *self._take_lingering()), *commands]
        packed = connection.pack_commands(commands)  # type: ignore[no-untyped-call]
        connection.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]

    def _take_lingering(self) -> list[bytes]:
        names = list(self._lingering)
        self._lingering.clear()
        for name in names:
            del self._channels[name]
        return names

    def _unsubscribe_lingering(self) -> None:
        connection = self._connection
        if connection is None or not self._lingering:
            return
        with contextlib.suppress(redis.RedisError, OSError):  # the reader sees it broken
            self._send(connection, [])

    # -- the listener thread --------------------------------------------------------------

    def _listen(self, connection: AbstractConnection) -> None:
        tick = 0.25
        while not self._closed and self._connection is connection:
            try:
                reply = connection.read_response() if connection.can_read(tick) else None
            except Exception:  # closed under us, or the connection broke
                if not self._closed:
                    self._reconnect(connection)
                return
            with self._lock:
                if isinstance(reply, list) and len(reply) == 3:
                    self._dispatch(reply)
                if self._lingering and self._connection is connection:
                    oldest = next(iter(self._lingering.values()))
                    if time.monotonic() - oldest >= self.linger:
                        self._unsubscribe_lingering()

    def _dispatch(self, reply: Sequence[Any]) -> None:
        kind, name, data = reply
        entry = self._channels.get(name)
        if entry is None:
            return
        if kind == b"subscribe":
            entry.confirmed.set()
        elif kind == b"message":
            for inbox in entry.waiters:
                inbox.deliver(data)

    def _reconnect(self, broken: AbstractConnection) -> None:
        """Lost the connection: wake every waiter (they read again) and start afresh."""
        with self._lock:
            if self._connection is not broken:
                return
            self._connection, self._thread = None, None
            waiting = list(self._channels.values())
            self._channels.clear()
            self._lingering.clear()
        with contextlib.suppress(Exception):
            broken.disconnect()  # type: ignore[no-untyped-call]
        for entry in waiting:
            entry.confirmed.set()
            for inbox in entry.waiters:
                inbox.deliver(b"")  # read again
